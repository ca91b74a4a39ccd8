"""/v1/patients: search, booking lookup and read by id, each scoped to the key's clinics."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from search_api import models
from search_api.annotate import annotate_results, formatted_phones
from search_api.cache import CacheSlot
from search_api.dependencies import AppState, Key, State
from search_api.errors import ApiError
from search_api.metrics import RESULTS
from search_api.plan import SearchInput
from search_api.service import InvalidSearch, lookup_terms, search

router = APIRouter(prefix="/v1/patients", tags=["patients"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": models.ErrorResponse},
    422: {"model": models.ErrorResponse},
}


def _json(content: str | bytes, **headers: str) -> Response:
    """An answer serialized once (pydantic's JSON in Rust), sent as is: no second pass
    through FastAPI's response validation, and the same bytes go to the cache."""
    return Response(content, media_type="application/json", headers=headers)


def _cached(state: AppState, kind: str, clinics: tuple[str, ...], request: Any) -> CacheSlot:
    """The cache key and, when the answer is there, its bytes (None without a cache)."""
    if state.cache is None:
        return CacheSlot(None, "", None)
    return state.cache.slot(kind, clinics, request)


@router.post("/search", response_model=models.SearchResponse, responses=_ERRORS)
def search_patients(body: models.SearchRequest, key: Key, state: State) -> Response:
    slot = _cached(state, "search", key.clinics, body.model_dump())
    if slot.hit is not None:
        return _json(slot.hit, **{"X-Cache": "hit"})
    try:
        outcome = search(
            state.router, SearchInput(**body.model_dump()), key.clinics, state.settings
        )
    except InvalidSearch as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    RESULTS.labels(endpoint="search").observe(len(outcome.results))
    extras = annotate_results(outcome.results, outcome.terms, state.settings.default_region)
    answer = models.SearchResponse(
        results=[
            models.SearchResult(
                id=r.candidate.id,
                score=r.score,
                match=r.match,
                matched=list(r.matched),
                patient=r.candidate.patient,
                **extra,
            )
            for r, extra in zip(outcome.results, extras, strict=True)
        ],
        engine=outcome.engine,
        degraded=outcome.degraded,
        took_ms=outcome.took_ms,
        query=outcome.query,
    ).model_dump_json()
    if not outcome.degraded:  # a fallback's answer is not kept past the outage
        slot.put("search", answer)
    return _json(
        answer,
        **{
            "X-Search-Engine": outcome.engine,
            # Where the time went (engine includes waiting for a connection).
            "Server-Timing": f"engine;dur={outcome.engine_ms}, total;dur={outcome.took_ms}",
        },
    )


@router.post("/lookup", response_model=models.LookupResponse, responses=_ERRORS)
def lookup(body: models.LookupRequest, key: Key, state: State) -> Response:
    """Exact identifiers only; a hit and a miss have the same shape."""
    started = time.perf_counter()
    if not body.phone and not body.mrn:
        raise ApiError(422, "invalid_request", "give phone or mrn together with birthdate")
    slot = _cached(state, "lookup", key.clinics, body.model_dump())
    if slot.hit is not None:
        return _json(slot.hit, **{"X-Cache": "hit"})
    term_sets = lookup_terms(
        birthdate=body.birthdate, phone=body.phone, mrn=body.mrn, settings=state.settings
    )
    found = state.postgres.lookup(term_sets, key.clinics) if term_sets else []
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
    slot.put("lookup", answer)
    return _json(answer)


@router.get(
    "/{patient_id}",
    responses={404: {"model": models.ErrorResponse}, 401: {"model": models.ErrorResponse}},
)
def get_patient(patient_id: str, key: Key, state: State) -> Response:
    if len(patient_id) > 200 or not patient_id.isprintable():
        raise ApiError(422, "invalid_request", "patient id too long or not printable")
    slot = _cached(state, "patient", key.clinics, patient_id)
    if slot.hit is not None:
        return _json(slot.hit, **{"X-Cache": "hit"})
    found = state.postgres.get(patient_id, key.clinics)
    if found is None:
        raise ApiError(404, "not_found", "no such patient in your clinics")
    phones = formatted_phones(found.patient, state.settings.default_region)
    answer = json.dumps({"id": found.id, "patient": found.patient, "phones_formatted": phones})
    slot.put("patient", answer)
    return _json(answer)
