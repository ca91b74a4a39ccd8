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
from engines.filters import accepts
from engines.pg_search import DictionaryCounts, find_candidates
from engines.word_dictionary import WordDictionary
from normalizers.dates import parse_dates
from normalizers.identifiers import normalize_mrn
from normalizers.phones import normalize_phone
from search_api.failover import Router
from search_api.metrics import ENGINE_QUERY_SECONDS
from search_api.plan import SearchInput, SearchPlan, build_plan
from search_api.ranking import (
    Counts,
    Ranked,
    RankQuery,
    date_keys,
    match_date,
    match_names,
    rank,
)

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
    total: int = 0  # results in the candidate window, every page included
    complete: bool = True  # the window held every candidate the engine found (total is exact)


class InvalidSearch(ValueError):
    """A search the service does not run; the message names the field, never its value."""

    code = "invalid_request"


class EmptyQuery(InvalidSearch):
    """Nothing searchable in the request."""

    code = "empty_query"


def observe_engine_query(engine: str, slow_ms: float) -> Callable[[str, float], None]:
    """Histogram every engine query; log slow ones by kind and duration only."""

    histograms: dict[str, Any] = {}  # labels() takes a lock and builds a key each call

    def observe(kind: str, seconds: float) -> None:
        histogram = histograms.get(kind)
        if histogram is None:
            histogram = histograms[kind] = ENGINE_QUERY_SECONDS.labels(engine=engine, kind=kind)
        histogram.observe(seconds)
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
    if plan.empty and not request.filters:
        raise EmptyQuery("the query holds nothing to search for")
    return plan


CountReader = Callable[[Sequence[str]], Counts]  # the dates' count keys -> the counts


def read_counts(
    reader: CountReader | None, query: RankQuery, candidates: Sequence[Candidate]
) -> Counts | None:
    """The clinics' term counts the evidence needs; without them evidence is uniform."""
    if reader is None or not candidates:
        return None
    try:
        return reader(date_keys(query, candidates))
    except Exception as exc:  # ranking still works, only less finely: never fail the search
        log.warning("term counts not readable", extra={"error": type(exc).__name__})
        return None


def agrees(query: RankQuery, result: Ranked) -> bool:
    """Every kind of criterion given agrees with the record (FHIR's AND of parameters).

    Agreement is the ranker's: a typo, nickname or completion of a name word counts,
    a word left unmatched or a family name found among given names does not.
    """
    match = result.candidate.match
    if query.names:
        names = match_names(query, match)
        if names.kind in (None, "partial") or names.swapped:
            return False
    if query.birth_dates and match_date(query, match.get("birth_date"))[0] != "exact":
        return False
    wanted = {
        "phone": bool(query.phones or query.phone_nationals or query.phone_fragments),
        "email": bool(query.emails),
        "mrn": bool(query.mrns),
    }
    return all(field in result.matched for field, asked in wanted.items() if asked)


def unscored(candidates: Sequence[Candidate]) -> list[Ranked]:
    """Filter-only queries rank nothing: each result meets every condition (score 1),
    ordered by name and id."""
    results = [
        Ranked(
            candidate=c,
            score=1.0,
            match="exact",
            matched=(),
            sort_key=(
                (c.patient.get("family_name") or "").casefold(),
                (c.patient.get("given_name") or "").casefold(),
                c.id,
            ),
        )
        for c in candidates
    ]
    return sorted(results, key=lambda r: r.sort_key)


_SORT_FIELDS = {"family": "family_name", "given": "given_name", "birthdate": "birth_date"}


def sort_results(results: list[Ranked], keys: Sequence[str]) -> list[Ranked]:
    """Stable multi-key sort (`_sort`); records without the value come last either way."""
    for key in reversed(keys):
        descending = key.startswith("-")
        name = key.lstrip("-")
        if name == "_score":
            results = sorted(results, key=lambda r: r.score, reverse=descending)
            continue
        field = _SORT_FIELDS[name]
        present = [r for r in results if _stored(r, field)]
        missing = [r for r in results if not _stored(r, field)]
        present.sort(key=lambda r: str(_stored(r, field)).casefold(), reverse=descending)
        results = present + missing
    return results


def _stored(result: Ranked, field: str) -> Any:
    record: Mapping[str, Any] = result.candidate.patient
    return record.get(field)


def select(
    request: SearchInput,
    plan: SearchPlan,
    candidates: Sequence[Candidate],
    counts: Counts | None = None,
) -> list[Ranked]:
    """Rank, keep what meets the request's filters (and criteria, with match_all), sort."""
    ranked = unscored(candidates) if plan.empty else rank(plan.rank, candidates, counts)
    if request.filters or request.match_all:
        ranked = [
            r
            for r in ranked
            if accepts(request.filters, r.candidate.patient)
            and (not request.match_all or agrees(plan.rank, r))
        ]
    return sort_results(ranked, request.sort) if request.sort else ranked


def search(
    router: Router,
    request: SearchInput,
    clinic_ids: Sequence[str],
    settings: Settings,
    counts: CountReader | None = None,
    plan: SearchPlan | None = None,
) -> SearchOutcome:
    """`plan`: plan_for's, when the caller has already weighed it (a thin search)."""
    started = time.perf_counter()
    plan = plan or plan_for(request, clinic_ids, settings)
    asked = time.perf_counter()
    answer = router.candidates(plan.candidates)
    engine_ms = (time.perf_counter() - asked) * 1000
    ranked = select(
        request, plan, answer.candidates, read_counts(counts, plan.rank, answer.candidates)
    )
    page = ranked[request.offset : request.offset + request.limit]
    return SearchOutcome(
        results=page,
        engine=answer.engine,
        degraded=answer.degraded,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        engine_ms=round(engine_ms, 2),
        query=plan.parsed,
        total=len(ranked),
        complete=len(answer.candidates) < plan.candidates.limit,
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
            conn, plan.candidates, observe=lambda kind, s: None, words=words
        )
        counts = DictionaryCounts(words, term_counts.lookup(conn, date_keys(plan.rank, candidates)))
    return rank(plan.rank, candidates, counts)[:limit]


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
