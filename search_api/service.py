"""Search and lookup, independent of HTTP: plan -> candidates -> re-rank -> page."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from core import term_counts, terms
from core.settings import Settings
from engines.base import Candidate
from engines.pg_search import find_candidates
from engines.word_dictionary import WordDictionary
from normalizers.dates import parse_dates
from normalizers.identifiers import normalize_mrn
from normalizers.phones import normalize_phone
from search_api.failover import Router
from search_api.metrics import ENGINE_QUERY_SECONDS
from search_api.plan import SearchInput, SearchPlan, build_plan
from search_api.ranking import Ranked, RankQuery, count_keys, rank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    results: list[Ranked]
    engine: str
    degraded: bool
    took_ms: float
    engine_ms: float
    query: dict[str, Any]
    terms: RankQuery  # the query as the ranker read it (the page's highlights use it)


class InvalidSearch(ValueError):
    """A search the service does not run; the message names the field, never its value."""

    code = "invalid_request"


class EmptyQuery(InvalidSearch):
    """Nothing searchable in the request."""

    code = "empty_query"


def observe_engine_query(engine: str, slow_ms: float) -> Callable[[str, float], None]:
    """Histogram every engine query; log slow ones by kind and duration only."""

    def observe(kind: str, seconds: float) -> None:
        ENGINE_QUERY_SECONDS.labels(engine=engine, kind=kind).observe(seconds)
        if seconds * 1000 >= slow_ms:
            log.warning(
                "slow engine query",
                extra={"engine": engine, "kind": kind, "ms": round(seconds * 1000, 1)},
            )

    return observe


def plan_for(request: SearchInput, clinic_ids: Sequence[str], settings: Settings) -> SearchPlan:
    """The one place a search's configured bounds are checked (MAX_QUERY_LENGTH, MAX_LIMIT)."""
    if request.q and len(request.q) > settings.max_query_length:
        raise InvalidSearch(f"q: at most {settings.max_query_length} characters")
    if request.limit > settings.max_limit:
        raise InvalidSearch(f"limit: at most {settings.max_limit}")
    plan = build_plan(
        request,
        clinic_ids,
        region=settings.default_region,
        date_order=settings.date_order,
        max_query_length=settings.max_query_length,
    )
    if plan.empty:
        raise EmptyQuery("the query holds nothing to search for")
    return plan


CountReader = Callable[[Sequence[str]], Mapping[str, int]]


def read_counts(reader: CountReader | None, candidates: Sequence[Candidate]) -> Mapping[str, int]:
    """The clinics' term counts the evidence needs; without them evidence is uniform."""
    if reader is None or not candidates:
        return {}
    try:
        return reader(count_keys(candidates))
    except Exception as exc:  # ranking still works, only less finely: never fail the search
        log.warning("term counts not readable", extra={"error": type(exc).__name__})
        return {}


def search(
    router: Router,
    request: SearchInput,
    clinic_ids: Sequence[str],
    settings: Settings,
    counts: CountReader | None = None,
) -> SearchOutcome:
    started = time.perf_counter()
    plan = plan_for(request, clinic_ids, settings)
    asked = time.perf_counter()
    answer = router.candidates(plan.candidates)
    engine_ms = (time.perf_counter() - asked) * 1000
    ranked = rank(plan.rank, answer.candidates, read_counts(counts, answer.candidates))
    page = ranked[request.offset : request.offset + request.limit]
    return SearchOutcome(
        results=page,
        engine=answer.engine,
        degraded=answer.degraded,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        engine_ms=round(engine_ms, 2),
        query=plan.parsed,
        terms=plan.rank,
    )


def search_ranked(
    conn: psycopg.Connection[Any],
    q: str,
    clinic_ids: Sequence[str],
    *,
    limit: int = 10,
    settings: Settings,
    words: WordDictionary,
) -> list[Ranked]:
    """Ranked, graded results for a search-box string on one connection (benchmarks, tests).

    `words` is a loaded in-process dictionary, as the API holds one.
    """
    plan = plan_for(SearchInput(q=q, limit=limit), clinic_ids, settings)
    with conn.transaction():
        candidates = find_candidates(
            conn, plan.candidates, observe=lambda kind, s: None, expand=words.expand
        )
        counts = term_counts.lookup(conn, count_keys(candidates))
    return rank(plan.rank, candidates, counts)[:limit]


def search_ids(
    conn: psycopg.Connection[Any],
    q: str,
    clinic_ids: Sequence[str],
    *,
    limit: int = 10,
    settings: Settings,
    words: WordDictionary,
) -> list[str]:
    """Ranked patient ids for a search-box string on one connection (benchmarks)."""
    ranked = search_ranked(conn, q, clinic_ids, limit=limit, settings=settings, words=words)
    return [r.candidate.id for r in ranked]


def lookup_terms(
    *, birthdate: str, phone: str | None, mrn: str | None, settings: Settings
) -> list[tuple[str, ...]]:
    """Every exact term combination a booking lookup accepts; empty when invalid."""
    dates = parse_dates(birthdate, order=settings.date_order)
    if not dates:
        return []
    ids: list[str] = []
    if phone:
        parsed = normalize_phone(phone, settings.default_region)
        if parsed.e164:
            ids.append(terms.phone(parsed.e164))
    if mrn and (norm := normalize_mrn(mrn)):
        ids.append(terms.mrn(norm))
    # A booking system sends unambiguous dates: only the first reading counts.
    return [(i, terms.dob(dates[0])) for i in ids]
