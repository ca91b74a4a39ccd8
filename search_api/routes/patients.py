"""/v1/patients: search, booking lookup and read by id, each scoped to the key's clinics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response

from search_api import models
from search_api.annotate import annotate_results, formatted_phones
from search_api.dependencies import Key, State
from search_api.errors import ApiError
from search_api.metrics import RESULTS
from search_api.plan import SearchInput
from search_api.service import InvalidSearch, lookup_terms, search

router = APIRouter(prefix="/v1/patients", tags=["patients"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": models.ErrorResponse},
    422: {"model": models.ErrorResponse},
}


@router.post("/search", response_model=models.SearchResponse, responses=_ERRORS)
def search_patients(
    body: models.SearchRequest, key: Key, state: State, response: Response
) -> models.SearchResponse:
    try:
        outcome = search(
            state.router,
            SearchInput(**body.model_dump()),
            key.clinics,
            state.settings,
            counts=state.postgres.term_counts,
        )
    except InvalidSearch as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    RESULTS.labels(endpoint="search").observe(len(outcome.results))
    response.headers["X-Search-Engine"] = outcome.engine
    # Standard Server-Timing: where the time went (engine includes waiting for a connection).
    response.headers["Server-Timing"] = (
        f"engine;dur={outcome.engine_ms}, total;dur={outcome.took_ms}"
    )
    extras = annotate_results(outcome.results, outcome.terms, state.settings.default_region)
    return models.SearchResponse(
        results=[
            models.SearchResult(
                id=r.candidate.id,
                score=r.score,
                match=r.match,
                matched=list(r.matched),
                grade=r.grade,
                patient=r.candidate.patient,
                **extra,
            )
            for r, extra in zip(outcome.results, extras, strict=True)
        ],
        engine=outcome.engine,
        degraded=outcome.degraded,
        took_ms=outcome.took_ms,
        query=outcome.query,
    )


@router.post("/lookup", response_model=models.LookupResponse, responses=_ERRORS)
def lookup(body: models.LookupRequest, key: Key, state: State) -> models.LookupResponse:
    """Exact identifiers only; a hit and a miss have the same shape."""
    started = time.perf_counter()
    if not body.phone and not body.mrn:
        raise ApiError(422, "invalid_request", "give phone or mrn together with birthdate")
    term_sets = lookup_terms(
        birthdate=body.birthdate, phone=body.phone, mrn=body.mrn, settings=state.settings
    )
    found = state.postgres.lookup(term_sets, key.clinics) if term_sets else []
    RESULTS.labels(endpoint="lookup").observe(len(found))
    return models.LookupResponse(
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
    )


@router.get(
    "/{patient_id}",
    responses={404: {"model": models.ErrorResponse}, 401: {"model": models.ErrorResponse}},
)
def get_patient(patient_id: str, key: Key, state: State) -> dict[str, Any]:
    if len(patient_id) > 200:
        raise ApiError(422, "invalid_request", "patient id too long")
    found = state.postgres.get(patient_id, key.clinics)
    if found is None:
        raise ApiError(404, "not_found", "no such patient in your clinics")
    phones = formatted_phones(found.patient, state.settings.default_region)
    return {"id": found.id, "patient": found.patient, "phones_formatted": phones}
