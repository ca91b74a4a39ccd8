"""Meilisearch through the official client, kept thin: candidates, settings check, errors.

One multi-search request per query (see engines.meili_settings.build_passes):
exact passes as filters over term keys, typo/prefix passes as full-text search
on the name attributes; the case-proof clinic key filter is in every one, and
every hit is checked again against the key's clinics here. The client's
timeout is the search budget, so a slow or silent server costs at most that;
search_api.failover decides what happens then.

`classify_error` is the one place where a client error becomes "unavailable"
(an outage or a configuration error: retry, keep the position, never blame a
document) or "rejected" (Meilisearch processed a task and refused its
documents); the sink, the failover and the indexer all ask it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import meilisearch
from meilisearch.errors import (
    MeilisearchApiError,
    MeilisearchCommunicationError,
    MeilisearchTimeoutError,
)

from core.documents import MatchFields, PatientRecord
from core.settings import Settings
from engines.base import Candidate, CandidateQuery, NameToken
from engines.meili_settings import (
    DISPLAYED_ATTRIBUTES,
    build_passes,
    decode_id,
    encode_id,
    index_settings,
    settings_mismatches,
)
from engines.word_dictionary import TermExpansions

log = logging.getLogger(__name__)

_REVERIFY_S = 30.0
# typoTolerance.disableOnNumbers exists from v1.15; the settings route refuses unknown fields.
MIN_VERSION = (1, 15, 0)


# -- errors ---------------------------------------------------------------------


class MeiliNotReady(RuntimeError):
    """The index's settings or the server version are not verified (yet): answer from elsewhere."""


class MeiliTooOld(MeiliNotReady):
    """The server is older than MIN_VERSION: our settings would be refused."""


class MeiliTaskFailed(RuntimeError):
    """Meilisearch finished a task without success (failed or canceled)."""

    def __init__(self, uid: int, status: str, error: dict[str, Any] | None) -> None:
        self.uid = uid
        self.status = status
        self.code = str((error or {}).get("code") or status)
        self.error_type = str((error or {}).get("type") or "")
        super().__init__(f"meilisearch task {uid} {status}: {self.code}")


Kind = Literal["unavailable", "rejected"]


@dataclass(frozen=True)
class EngineFailure:
    """What a Meilisearch error means for the caller.

    kind: "rejected" only when Meilisearch processed a task and refused its
    documents (task error type `invalid_request`): set those documents aside.
    Everything else is "unavailable": retry later from the same position.
    misconfigured: a key, index or request error that no retry will cure by
    itself (401/403, a plain 4xx): say so loudly in the logs.
    reason: a fixed low-cardinality label for logs and metrics.
    """

    kind: Kind
    reason: str
    misconfigured: bool = False


def classify_error(exc: BaseException) -> EngineFailure:
    """The one mapping of client (and task) errors; see EngineFailure."""
    if isinstance(exc, MeiliTaskFailed):
        if exc.status == "failed" and exc.error_type == "invalid_request":
            return EngineFailure("rejected", "document_rejected")
        if exc.status == "canceled":
            return EngineFailure("unavailable", "task_canceled")
        if exc.error_type == "auth":
            return EngineFailure("unavailable", "auth", misconfigured=True)
        return EngineFailure("unavailable", "task_failed")  # system / internal: disk, db size
    if isinstance(exc, MeilisearchTimeoutError | TimeoutError):
        return EngineFailure("unavailable", "timeout")
    if isinstance(exc, MeilisearchCommunicationError | ConnectionError):
        return EngineFailure("unavailable", "connection")
    if isinstance(exc, MeilisearchApiError):
        status = exc.status_code
        if status >= 500 or status in (408, 429):
            return EngineFailure("unavailable", "server_error")
        if status in (401, 403):
            return EngineFailure("unavailable", "auth", misconfigured=True)
        return EngineFailure("unavailable", "bad_request", misconfigured=True)
    if isinstance(exc, MeiliTooOld):
        return EngineFailure("unavailable", "version", misconfigured=True)
    if isinstance(exc, MeiliNotReady):
        return EngineFailure("unavailable", "not_ready")
    return EngineFailure("unavailable", "error")


# -- version --------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int]:
    """`1.16.0`, `v1.16.0-rc.1` -> (1, 16, 0); unreadable -> (0, 0, 0)."""
    found = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not found:
        return (0, 0, 0)
    return (int(found[1]), int(found[2]), int(found[3] or 0))


def check_version(client: meilisearch.Client) -> str:
    """`GET /version`; raises MeiliTooOld below MIN_VERSION (our settings need it)."""
    version = str(client.get_version().get("pkgVersion") or "")
    if parse_version(version) < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise MeiliTooOld(f"meilisearch {version or '?'} is too old: {wanted} or later needed")
    return version


def make_client(url: str, api_key: str | None, timeout_s: float) -> meilisearch.Client:
    """Official client; requests takes float seconds although the stub says int."""
    return meilisearch.Client(url, api_key, timeout=cast(Any, timeout_s))


# -- least-privilege keys ---------------------------------------------------------


def key_uid(role: str, index_uid: str) -> str:
    """A fixed uid per role and index (uuid v4 layout). Meilisearch derives a key's value
    from its uid and the master key: creating the keys again gives the same values."""
    digest = hashlib.blake2b(f"patient-search:{role}:{index_uid}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def key_specs(index_uid: str) -> dict[str, dict[str, Any]]:
    """The two keys the service needs, each with the fewest actions that work.

    api: multi-search on the index, its settings check, `GET /version`.
    indexer: the same checks, plus writing documents, applying settings, awaiting
    tasks, and creating, swapping and deleting the rebuild index `<index>__rebuild`
    (hence the `<index>*` pattern). Neither may manage keys: only the master key does.
    """
    return {
        "api": {
            "uid": key_uid("api", index_uid),
            "name": "patient-search-api",
            "description": "patient-search API: search and settings check",
            "actions": ["search", "settings.get", "version"],
            "indexes": [index_uid],
            "expiresAt": None,
        },
        "indexer": {
            "uid": key_uid("indexer", index_uid),
            "name": "patient-search-indexer",
            "description": "patient-search indexer: documents, settings, rebuilds",
            "actions": [
                "documents.add",
                "documents.delete",
                "indexes.create",
                "indexes.get",
                "indexes.delete",
                "indexes.swap",
                "settings.get",
                "settings.update",
                "tasks.get",
                "version",
            ],
            "indexes": [f"{index_uid}*"],
            "expiresAt": None,
        },
    }


def ensure_keys(client: meilisearch.Client, index_uid: str) -> dict[str, str]:
    """Create (or find) both keys with the master key's client; returns role -> key value."""
    out: dict[str, str] = {}
    for role, spec in key_specs(index_uid).items():
        try:
            key = client.get_key(spec["uid"])
        except MeilisearchApiError as exc:
            if exc.code != "api_key_not_found":
                raise
            key = client.create_key(spec)
        out[role] = str(key.key)
    return out


# -- engine ---------------------------------------------------------------------


class MeiliEngine:
    name = "meilisearch"

    def __init__(
        self,
        client: meilisearch.Client,
        index_uid: str,
        *,
        budget_ms: int | None = None,
        require_verified: bool = True,
    ) -> None:
        self.client = client
        self.index_uid = index_uid
        self.budget_ms = budget_ms
        self._require_verified = require_verified
        self._verified = False
        self._last_attempt = float("-inf")
        self._lock = threading.Lock()
        # The API's word dictionary (PostgresEngine.words.expand_terms): the same completions
        # and typo corrections as PostgreSQL, so both engines find the same patients.
        self.expand: Callable[[Sequence[NameToken], Sequence[str]], TermExpansions] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> MeiliEngine:
        """No network here: the API must start even when Meilisearch is down."""
        if not settings.meili_url:
            raise ValueError("PATIENT_SEARCH_MEILI_URL is not set")
        budget_s = settings.search_budget_ms / 1000
        return cls(
            make_client(settings.meili_url, settings.meili_api_key, budget_s),
            settings.meili_index,
            budget_ms=settings.search_budget_ms,
        )

    # -- settings verification ----------------------------------------------

    def verify_settings(self) -> list[str]:
        """Check the server version and compare the live index settings with ours.

        The engine serves only when they agree. Returns the mismatching setting
        names (empty when ready). Raises on transport errors or a server older
        than MIN_VERSION, leaving the engine not ready.
        """
        with self._lock:
            self._last_attempt = time.monotonic()
        try:
            check_version(self.client)
        except MeiliTooOld:
            with self._lock:
                self._verified = False
            raise
        # A transport error leaves the last verdict: outages are the breaker's business.
        actual = self.client.index(self.index_uid).get_settings()
        wanted = index_settings(budget_ms=self.budget_ms)
        wanted.pop("searchCutoffMs", None)  # a tuning knob, not a correctness one
        mismatches = settings_mismatches(wanted, dict(actual))
        with self._lock:
            self._verified = not mismatches
        if mismatches:
            log.error("meilisearch index settings differ", extra={"settings": mismatches})
        return mismatches

    def verify_in_background(self, *, force: bool = False) -> None:
        """The one settings verifier: at start (force) and every _REVERIFY_S after.

        Never blocks a search or the start-up; a failure leaves the engine not
        ready (the failover answers from PostgreSQL) until a later check passes.
        """
        with self._lock:
            if not force and time.monotonic() - self._last_attempt < _REVERIFY_S:
                return
            self._last_attempt = time.monotonic()

        def run() -> None:
            try:
                self.verify_settings()
            except Exception as exc:
                failure = classify_error(exc)
                level = logging.ERROR if failure.misconfigured else logging.WARNING
                log.log(level, "meilisearch not verified", extra={"reason": failure.reason})

        threading.Thread(target=run, name="meili-verify", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self._verified or not self._require_verified

    # -- reads ---------------------------------------------------------------

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        if self._require_verified:
            self.verify_in_background()  # re-checked periodically, not only once
        if not self.ready:
            raise MeiliNotReady("meilisearch index settings not verified")
        expansions = (
            self.expand(query.names, query.clinic_ids) if self.expand and query.names else None
        )
        passes = build_passes(query, self.index_uid, expansions)
        if not passes:
            return []
        response = self.client.multi_search([p.body for p in passes])
        results = response.get("results") or []
        if len(results) != len(passes):
            raise RuntimeError("meilisearch multi-search answered a different number of queries")
        return collect_hits(results, query.clinic_ids, query.limit)

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


def collect_hits(
    results: list[dict[str, Any]], clinic_ids: tuple[str, ...], limit: int
) -> list[Candidate]:
    """Hits of the passes in order, first seen wins, up to `limit`.

    Defence in depth: a hit whose clinic is not exactly one of the key's
    clinics is dropped, whatever the filter said (Meilisearch compares filter
    strings case-insensitively; PostgreSQL compares exactly).
    """
    allowed = set(clinic_ids)
    found: dict[str, Candidate] = {}
    dropped = 0
    for result in results:
        for hit in result.get("hits") or ():
            if len(found) >= limit:
                break
            candidate = _candidate(hit)
            if candidate.patient.get("clinic_id") not in allowed:
                dropped += 1
                continue
            found.setdefault(candidate.id, candidate)
    if dropped:
        log.error("meilisearch returned hits outside the key's clinics", extra={"hits": dropped})
    return list(found.values())


def _candidate(hit: dict[str, Any]) -> Candidate:
    patient = cast(PatientRecord, hit.get("patient") or {})
    match = cast(MatchFields, hit.get("match") or {})
    pid = str(patient.get("id") or decode_id(str(hit["pk"])))
    return Candidate(id=pid, patient=patient, match=match)
