"""Candidate retrieval from Meilisearch, through the official client, kept thin.

One multi-search request per query (see engines.meili_settings.build_passes):
exact passes as filters over term keys, typo/prefix passes as full-text search
on the name attributes; the clinic filter is in every one. The client's
timeout is the search budget, so a slow or silent server costs at most that;
search_api.failover decides what happens then.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

import meilisearch
from meilisearch.errors import MeilisearchApiError

from core.documents import MatchFields, PatientRecord
from core.settings import Settings
from engines.base import Candidate, CandidateQuery
from engines.meili_settings import (
    DISPLAYED_ATTRIBUTES,
    build_passes,
    decode_id,
    encode_id,
    index_settings,
    settings_mismatches,
)

log = logging.getLogger(__name__)

_REVERIFY_S = 30.0


class MeiliNotReady(RuntimeError):
    """The index's settings have not been verified (yet): answer from elsewhere."""


def make_client(url: str, api_key: str | None, timeout_s: float) -> meilisearch.Client:
    """Official client; requests takes float seconds although the stub says int."""
    return meilisearch.Client(url, api_key, timeout=cast(Any, timeout_s))


class MeiliEngine:
    name = "meilisearch"

    def __init__(
        self,
        client: meilisearch.Client,
        index_uid: str,
        *,
        search_cutoff_ms: int | None = None,
        require_verified: bool = True,
    ) -> None:
        self.client = client
        self.index_uid = index_uid
        self.search_cutoff_ms = search_cutoff_ms
        self._require_verified = require_verified
        self._verified = False
        self._last_attempt = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MeiliEngine:
        """No network here: the API must start even when Meilisearch is down."""
        if not settings.meili_url:
            raise ValueError("PATIENT_SEARCH_MEILI_URL is not set")
        budget_s = settings.search_budget_ms / 1000
        return cls(
            make_client(settings.meili_url, settings.meili_api_key, budget_s),
            settings.meili_index,
            search_cutoff_ms=settings.search_budget_ms,
        )

    # -- start-up ------------------------------------------------------------

    def verify_settings(self) -> list[str]:
        """Compare the live index settings with ours; the engine serves only when they agree.

        Returns the mismatching setting names (empty when ready). Raises on
        transport errors, leaving the engine not ready.
        """
        with self._lock:
            self._last_attempt = time.monotonic()
        actual = self.client.index(self.index_uid).get_settings()
        wanted = index_settings(search_cutoff_ms=self.search_cutoff_ms)
        wanted.pop("searchCutoffMs", None)  # a tuning knob, not a correctness one
        mismatches = settings_mismatches(wanted, dict(actual))
        with self._lock:
            self._verified = not mismatches
        if mismatches:
            log.error("meilisearch index settings differ", extra={"settings": mismatches})
        return mismatches

    def _reverify_in_background(self) -> None:
        with self._lock:
            if time.monotonic() - self._last_attempt < _REVERIFY_S:
                return
            self._last_attempt = time.monotonic()

        def run() -> None:
            try:
                self.verify_settings()
            except Exception as exc:
                log.warning("meilisearch not verifiable", extra={"error": type(exc).__name__})

        threading.Thread(target=run, name="meili-verify", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self._verified or not self._require_verified

    # -- reads ---------------------------------------------------------------

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        if not self.ready:
            self._reverify_in_background()
            raise MeiliNotReady("meilisearch index settings not verified")
        passes = build_passes(query, self.index_uid)
        if not passes:
            return []
        response = self.client.multi_search([p.body for p in passes])
        results = response.get("results") or []
        if len(results) != len(passes):
            raise RuntimeError("meilisearch multi-search answered a different number of queries")
        found: dict[str, Candidate] = {}
        for result in results:
            if len(found) >= query.limit:
                break
            for hit in result.get("hits") or ():
                candidate = _candidate(hit)
                found.setdefault(candidate.id, candidate)
        return list(found.values())

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None:
        if not self.ready:
            raise MeiliNotReady("meilisearch index settings not verified")
        try:
            doc = self.client.index(self.index_uid).get_document(
                encode_id(patient_id), {"fields": list(DISPLAYED_ATTRIBUTES)}
            )
        except MeilisearchApiError as exc:
            if exc.code == "document_not_found":
                return None
            raise
        candidate = _candidate(dict(doc))
        if candidate.patient.get("clinic_id") not in clinic_ids:
            return None
        return candidate


def _candidate(hit: dict[str, Any]) -> Candidate:
    patient = cast(PatientRecord, hit.get("patient") or {})
    match = cast(MatchFields, hit.get("match") or {})
    pid = str(patient.get("id") or decode_id(str(hit["pk"])))
    return Candidate(id=pid, patient=patient, match=match)
