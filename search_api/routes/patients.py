"""/v1/patients: search, booking lookup and read by id, each scoped to the key's clinics.

Every route declares its access with `search_api.access.require`: key, scope, staff
user, rate limit, and one audit record listing the patients it returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from search_api import models
from search_api.access import Access, AccessRoute, require
from search_api.annotate import annotate_results, formatted_phones
from search_api.cache import CacheSlot, lookup_generations, patient_generations
from search_api.dependencies import AppState, State
from search_api.errors import ApiError
from search_api.metrics import RESULTS
from search_api.plan import SearchInput
from search_api.ratelimit import locked, record_miss
from search_api.service import InvalidSearch, SearchOutcome, lookup_terms, plan_for, search
from search_api.specificity import thin_search_reason

router = APIRouter(prefix="/v1/patients", tags=["patients"], route_class=AccessRoute)
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.ErrorResponse} for status in (400, 401, 403, 422, 429, 503)
}
SearchAccess = Annotated[Access, Depends(require("search"))]
LookupAccess = Annotated[Access, Depends(require("lookup", strict=True))]
ReadAccess = Annotated[Access, Depends(require("read"))]


def _json(content: str | bytes, sent: Response, **headers: str) -> Response:
    """An answer serialized once (pydantic's JSON in Rust), sent as is: no second pass
    through FastAPI's response validation, and the same bytes go to the cache. Headers the
    dependencies set on `sent` (rate limits, staff user) go along."""
    answer = Response(content, media_type="application/json", headers=headers)
    for name, value in sent.headers.items():
        if name not in ("content-length", "content-type"):
            answer.headers[name] = value
    return answer


def _search_answer(outcome: SearchOutcome, extras: list[dict[str, Any]]) -> bytes:
    """models.SearchResponse's JSON, field for field, written by orjson from the data as
    it is: building and dumping the models cost 65 us a page of ten against 10 (issue
    11, sixteenth pass). tests/test_search_api.py holds the bytes to the models'."""
    results = [
        {
            "id": r.candidate.id,
            "score": r.score,
            "match": r.match,
            "matched": list(r.matched),
            "grade": r.grade,
            "patient": r.candidate.patient,
            **extra,  # highlights, phones_formatted, duplicates
        }
        for r, extra in zip(outcome.results, extras, strict=True)
    ]
    return orjson.dumps(
        {
            "results": results,
            "engine": outcome.engine,
            "degraded": outcome.degraded,
            "took_ms": outcome.took_ms,
            "query": outcome.query,
        }
    )


async def _cached(
    state: AppState,
    kind: str,
    clinics: tuple[str, ...],
    request: Any,
    depends_on: tuple[str, ...] | None = None,
) -> CacheSlot:
    """The cache key and, when the answer is there, its bytes (None without a cache).
    Looked up on the event loop when the cache is this process's (a dict read): a hit
    then never waits for a handler thread, which took a third of its time (issue 11,
    nineteenth pass). A shared store's round trip goes to a handler thread."""
    cache = state.cache
    if cache is None:
        return CacheSlot(None, "", None)
    if cache.store.blocking:
        return await state.handlers.run(cache.slot, kind, clinics, request, depends_on)
    return cache.slot(kind, clinics, request, depends_on)


async def _kept_or(
    compute: Callable[[CacheSlot], Response],
    state: AppState,
    access: Access,
    response: Response,
    kind: str,
    request: Any,
    depends_on: tuple[str, ...] | None = None,
    shown: list[str] | None = None,
) -> Response:
    """The kept answer, served on the event loop; else `compute(slot)` in a handler thread,
    which may keep what it answers in `slot`. A kept answer is an access like any other:
    the trail lists its patients (`shown`, by default those of its results)."""
    slot = await _cached(state, kind, access.clinics, request, depends_on)
    if slot.hit is None:
        return await state.handlers.run(compute, slot)
    if shown is None:
        shown = [r["id"] for r in orjson.loads(slot.hit)["results"]]
    access.returned(shown)
    return _json(slot.hit, response, **{"X-Cache": "hit"})


@router.post("/search", response_model=models.SearchResponse, responses=_ERRORS)
async def search_patients(
    body: models.SearchRequest, access: SearchAccess, state: State, response: Response
) -> Response:
    # A thin search is refused before it is kept, so no hit is ever a thin one.
    fields = body.model_dump()  # the cache key's material and the search's input
    compute = partial(_search, fields, access, state, response)
    return await _kept_or(compute, state, access, response, "search", fields)


def _search(
    fields: dict[str, Any],
    access: Access,
    state: AppState,
    response: Response,
    slot: CacheSlot,
) -> Response:
    request = SearchInput(**fields)
    try:
        plan = plan_for(request, access.clinics, state.settings)
        thin = thin_search_reason(request, plan, access.clinics, state.settings, state.access.sizes)
        if thin is not None:
            raise ApiError(400, "query_too_thin", thin)
        outcome = search(
            state.router,
            request,
            access.clinics,
            state.settings,
            counts=state.postgres.term_counts,
            plan=plan,
        )
    except InvalidSearch as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    access.returned(r.candidate.id for r in outcome.results)
    RESULTS.labels(endpoint="search").observe(len(outcome.results))
    extras = annotate_results(outcome.results, outcome.terms, state.settings.default_region)
    answer = _search_answer(outcome, extras)
    if not outcome.degraded:  # a fallback's answer is not kept past the outage
        slot.put("search", answer)
    return _json(
        answer,
        response,
        **{
            "X-Search-Engine": outcome.engine,
            # Where the time went (engine includes waiting for a connection).
            "Server-Timing": f"engine;dur={outcome.engine_ms}, total;dur={outcome.took_ms}",
        },
    )


@router.post("/lookup", response_model=models.LookupResponse, responses=_ERRORS)
async def lookup(
    body: models.LookupRequest, access: LookupAccess, state: State, response: Response
) -> Response:
    """Exact identifiers only; a hit, a miss and a locked identifier have the same shape.

    Five misses for one key and the same phone or MRN within the lockout window
    lock that identifier for that key (anti-enumeration); the trail notes it. Only
    answers that found someone are kept in the cache, so every miss reaches the
    lockout, and a lock drops the key's kept answers (search_api.cache).
    """
    if not body.phone and not body.mrn:
        raise ApiError(422, "invalid_request", "give phone or mrn together with birthdate")
    assert access.key is not None  # require() authenticated it
    # Kept per key, as its lockouts are: another key's lock must not be passed by a hit.
    request = {"key": access.key.id, **body.model_dump()}
    depends_on = lookup_generations(access.clinics, access.key.id)
    compute = partial(_lookup, body, access, state, response)
    return await _kept_or(compute, state, access, response, "lookup", request, depends_on)


def _lookup(
    body: models.LookupRequest,
    access: Access,
    state: AppState,
    response: Response,
    slot: CacheSlot,
) -> Response:
    started = time.perf_counter()
    term_sets = lookup_terms(
        birthdate=body.birthdate, phone=body.phone, mrn=body.mrn, settings=state.settings
    )
    found = _guarded_lookup(term_sets, access, state)
    access.returned(c.id for c in found)
    RESULTS.labels(endpoint="lookup").observe(len(found))
    answer = models.LookupResponse(
        results=[
            models.LookupMatch(
                id=c.id,
                clinic_id=c.patient["clinic_id"],
                given_name=c.patient.get("given_name"),
                family_name=c.patient.get("family_name"),
                birth_date=c.patient.get("birth_date"),
            )
            for c in found
        ],
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    ).model_dump_json()
    if found:
        slot.put("lookup", answer)
    return _json(answer, response)


@router.get(
    "/{patient_id}",
    responses={404: {"model": models.ErrorResponse}, 401: {"model": models.ErrorResponse}},
)
async def get_patient(
    patient_id: str, access: ReadAccess, state: State, response: Response
) -> Response:
    if len(patient_id) > 200 or not patient_id.isprintable():
        raise ApiError(422, "invalid_request", "patient id too long or not printable")
    # A read shows one patient: only that patient's changes drop it.
    depends_on = patient_generations(patient_id)
    compute = partial(_read, patient_id, access, state, response)
    return await _kept_or(
        compute, state, access, response, "patient", patient_id, depends_on, [patient_id]
    )


def _read(
    patient_id: str, access: Access, state: AppState, response: Response, slot: CacheSlot
) -> Response:
    found = state.postgres.get(patient_id, access.clinics)
    if found is None:
        raise ApiError(404, "not_found", "no such patient in your clinics")
    access.returned([found.id])
    phones = formatted_phones(found.patient, state.settings.default_region)
    answer = orjson.dumps({"id": found.id, "patient": found.patient, "phones_formatted": phones})
    slot.put("patient", answer)
    return _json(answer, response)


def _guarded_lookup(term_sets: list[tuple[str, ...]], access: Access, state: State) -> list[Any]:
    """The lookup unless its phone/MRN is locked for this key (checked in the lookup's own
    statement: one round trip for a hit); misses count toward a lock."""
    if not term_sets or access.key is None:
        return []
    identifiers = sorted({terms[0] for terms in term_sets})
    found = state.postgres.lookup(
        term_sets, access.clinics, unless=locked(access.key.id, identifiers)
    )
    if found is None:
        access.noted("identifier locked after repeated misses")
        return []
    if not found:
        with state.access.state_pool.connection() as conn:
            if record_miss(conn, access.key.id, identifiers, state.settings):
                access.noted("identifier locked after repeated misses")
    return found
