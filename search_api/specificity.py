"""Refuse searches too thin to be specific, with a 400 that says what to add.

A single letter, a sex alone, or (in a large clinic) a date of birth alone
would answer with a page of strangers: an enumeration of patients rather than
a search for one. Most requests are decided by a cheap look at the raw words;
only the short ones are weighed on their plan.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from psycopg_pool import ConnectionPool

from core.settings import Settings
from search_api.plan import SearchInput, SearchPlan

SEX_WORDS = frozenset({"m", "f", "male", "female", "man", "woman", "sex", "gender", "other"})
_WORD = re.compile(r"[^\W_]+")


class ClinicSizes:
    """Whether the key's clinics hold more than N patients, cached ten minutes per process."""

    def __init__(self, pool: ConnectionPool, ttl_s: float = 600.0) -> None:
        self.pool, self.ttl_s = pool, ttl_s
        self._cache: dict[tuple[tuple[str, ...], int], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def larger_than(self, clinics: Sequence[str], size: int) -> bool:
        key = (tuple(sorted(clinics)), size)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        with self.pool.connection() as conn:
            row = conn.execute(
                "select count(*) from (select 1 from patient_search.patients"
                " where clinic_id = any(%s) and active limit %s) s",
                (list(key[0]), size + 1),
            ).fetchone()
        large = bool(row and row[0] > size)
        with self._lock:
            self._cache[key] = (now, large)
        return large


def _maybe_thin(request: SearchInput) -> bool:
    """Cheap pre-check: a word of two or more letters that is not a sex settles it."""
    if request.phone or request.email or request.mrn:
        return False
    words = _WORD.findall(" ".join(t for t in (request.q, request.given, request.family) if t))
    return not any(len(w) >= 2 and not w.isdigit() and w.lower() not in SEX_WORDS for w in words)


def thin_search_reason(
    request: SearchInput,
    plan: SearchPlan,
    clinics: Sequence[str],
    settings: Settings,
    sizes: ClinicSizes | None,
) -> str | None:
    """Why this search is too thin to answer, or None when it is specific enough. Weighed
    on the plan the search then runs, so that no search is planned twice."""
    if not _maybe_thin(request):
        return None
    r: Any = plan.rank
    if r.phones or r.phone_nationals or r.phone_fragments or r.emails or r.mrns:
        return None
    names = [n for n in r.names if n]
    if names and all(n.lower() in SEX_WORDS for n in names) and not r.birth_dates:
        return "a sex alone is not a search: add a name, a date of birth, a phone or an MRN"
    if names and all(len(n) < 2 for n in names) and not r.birth_dates:
        return (
            "a single letter matches too many patients: type at least two letters of a name,"
            " or add a date of birth, a phone or an MRN"
        )
    if (
        r.birth_dates
        and not names
        and sizes is not None
        and sizes.larger_than(clinics, settings.thin_search_clinic_size)
    ):
        return (
            "a date of birth alone matches too many patients in a clinic this size:"
            " add a name or initial, a phone or an MRN"
        )
    return None
