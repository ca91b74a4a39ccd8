"""The /fhir routes: read, search (GET and POST _search), $match and metadata.

Every search goes through search_api.service.search, the same engine, ranking
and clinic scoping as /v1; this module only translates parameters and answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from normalizers.identifiers import normalize_mrn
from search_api.access import AccessRoute
from search_api.dependencies import AppState, State
from search_api.fhir import cursors, resources
from search_api.fhir.access import Caller, fhir_access
from search_api.fhir.capability import capability_statement
from search_api.fhir.errors import FhirError
from search_api.fhir.match import match_grade, parse_match
from search_api.fhir.params import FORMATS, FhirSearch, parse_search
from search_api.metrics import RESULTS
from search_api.service import EmptyQuery, SearchOutcome, search


async def json_accepted(request: Request, accept: Annotated[str | None, Header()] = None) -> None:
    """The facade speaks JSON only: a client that accepts no JSON (by Accept or by
    _format) gets 406, not XML. Async on purpose: FastAPI runs a plain `def` dependency
    on a thread of anyio's, a hop per FHIR request for a look at two headers."""
    formats = request.query_params.getlist("_format")
    if any(f.strip() not in FORMATS for f in formats):
        raise FhirError(406, "not-supported", "_format: only JSON is served")
    if not accept or formats:
        return
    ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if not ranges & {"*/*", "application/*", "application/json", resources.FHIR_JSON}:
        raise FhirError(406, "not-supported", "only application/fhir+json is served")


router = APIRouter(
    prefix="/fhir",
    tags=["FHIR R4"],
    dependencies=[Depends(json_accepted)],
    route_class=AccessRoute,
)
MAX_BODY_BYTES = 64 * 1024
FORM = "application/x-www-form-urlencoded"
JSON_TYPES = frozenset({"application/json", resources.FHIR_JSON})


Reader = Annotated[Caller, Depends(fhir_access("read"))]
Searcher = Annotated[Caller, Depends(fhir_access("search"))]
Matcher = Annotated[Caller, Depends(fhir_access("match"))]


def _answer(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=resources.FHIR_JSON)


def _base(request: Request, state: AppState) -> str:
    configured = state.settings.fhir_base_url
    return (configured or f"{str(request.base_url).rstrip('/')}/fhir").rstrip("/")


def _strict(prefer: str | None) -> bool:
    parts = (p.strip().replace(" ", "") for p in (prefer or "").replace(";", ",").split(","))
    return "handling=strict" in parts


# -- metadata and read --------------------------------------------------------------


@router.get("/metadata")
def metadata(request: Request, state: State) -> JSONResponse:
    """The CapabilityStatement; it holds no patient data, so it needs no key."""
    settings = state.settings
    return _answer(
        capability_statement(_base(request, state), settings.fhir_mrn_system, settings.max_limit)
    )


@router.get("/Patient/{resource_id}")
async def read_patient(resource_id: str, key: Reader, state: State) -> JSONResponse:
    """Another clinic's patient and no patient get the same answer."""
    return await state.handlers.run(_read_patient, resource_id, key, state)


def _read_patient(resource_id: str, key: Caller, state: AppState) -> JSONResponse:
    patient_id = resources.source_id(resource_id)
    found = state.postgres.get(patient_id, key.clinics) if patient_id else None
    if found is None:
        raise FhirError(404, "not-found", "no such Patient in your clinics")
    key.returned([found.id])
    return _answer(resources.patient_resource(found.patient, state.settings.fhir_mrn_system))


# -- search ----------------------------------------------------------------------------


def _cursor(items: Sequence[tuple[str, str]]) -> str | None:
    tokens = [v for k, v in items if k == "_cursor"]
    return tokens[-1] if tokens else None


def _run(state: AppState, key: Caller, parsed: FhirSearch) -> SearchOutcome | None:
    if parsed.impossible:
        return None
    try:
        return search(
            state.router,
            parsed.request,
            key.clinics,
            state.settings,
            counts=state.postgres.term_counts,
        )
    except EmptyQuery as exc:
        raise FhirError(400, "invalid", "nothing to search for in the parameters") from exc


def _scores(parsed: FhirSearch, outcome: SearchOutcome) -> list[float]:
    """search.score: 1 for an exact MRN hit; non-increasing down a page ranked by score."""
    mrn = parsed.request.mrn and normalize_mrn(parsed.request.mrn)
    scores = [
        1.0 if mrn and normalize_mrn(r.candidate.patient.get("mrn") or "") == mrn else r.score
        for r in outcome.results
    ]
    by_score = parsed.request.sort in ((), ("-_score",))
    return resources.monotone_scores(scores) if by_score else scores


def search_bundle(
    state: AppState,
    key: Caller,
    items: Sequence[tuple[str, str]],
    *,
    strict: bool,
    base: str,
    post: bool,
) -> dict[str, Any]:
    settings = state.settings
    ttl = settings.fhir_cursor_ttl_s
    token = _cursor(items)
    offset = 0
    if token is not None:
        page = cursors.load_page(state.pool, key.clinics, token, ttl_s=ttl)
        if page is None:
            raise FhirError(404, "not-found", "this paging link is unknown or has expired")
        items, offset, strict = page.applied, page.offset, False
    parsed = parse_search(
        items,
        strict=strict,
        mrn_system=settings.fhir_mrn_system,
        max_count=settings.max_limit,
        offset=offset,
    )
    outcome = _run(state, key, parsed)
    results = outcome.results if outcome else []
    RESULTS.labels(endpoint="fhir_search").observe(len(results))
    key.returned(r.candidate.id for r in results)
    entries = [
        resources.bundle_entry(base, r.candidate.patient, settings.fhir_mrn_system, score)
        for r, score in zip(results, _scores(parsed, outcome) if outcome else [], strict=True)
    ]

    def link(page_offset: int) -> str:
        page = cursors.Page(applied=parsed.applied, offset=page_offset)
        return (
            f"{base}/Patient?_cursor={cursors.save_page(state.pool, key.clinics, page, ttl_s=ttl)}"
        )

    if token is not None:
        self_url = f"{base}/Patient?_cursor={token}"
    elif post:  # the parameters came in the body: keep them out of the URL
        self_url = link(offset)
    else:
        self_url = f"{base}/Patient?{urlencode(parsed.applied)}"
    links = [("self", self_url)]
    total_matches = outcome.total if outcome else 0
    if parsed.count and offset + parsed.count < total_matches:
        links.append(("next", link(offset + parsed.count)))
    total = None
    if parsed.total:
        if outcome is None or outcome.complete:
            total = total_matches
        else:
            entries.append(
                resources.outcome_entry(
                    "too-costly", f"more than {total_matches} matches: the total was not counted"
                )
            )
    return resources.searchset(entries, links, total)


@router.get("/Patient")
async def search_get(
    key: Searcher, request: Request, state: State, prefer: Annotated[str | None, Header()] = None
) -> JSONResponse:
    items = list(request.query_params.multi_items())
    return await _searched(state, key, request, items, prefer, post=False)


async def _searched(
    state: AppState,
    key: Caller,
    request: Request,
    items: list[tuple[str, str]],
    prefer: str | None,
    *,
    post: bool,
) -> JSONResponse:
    """The searchset for these parameters, read on a handler thread (GET and POST alike)."""
    strict, base = _strict(prefer), _base(request, state)
    body = await state.handlers.run(
        search_bundle, state, key, items, strict=strict, base=base, post=post
    )
    return _answer(body)


async def _body(request: Request, allowed: frozenset[str]) -> bytes:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise FhirError(413, "too-costly", f"body larger than {MAX_BODY_BYTES} bytes")
    if body and media not in allowed:
        raise FhirError(
            415, "not-supported", "content type must be " + " or ".join(sorted(allowed))
        )
    return body


@router.post("/Patient/_search")
async def search_post(
    key: Searcher, request: Request, state: State, prefer: Annotated[str | None, Header()] = None
) -> JSONResponse:
    """Parameters in a form body, so no search value appears in a URL or an access log."""
    raw = await _body(request, frozenset({FORM}))
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise FhirError(400, "invalid", "the form body is not UTF-8") from exc
    items = [*request.query_params.multi_items(), *form]
    return await _searched(state, key, request, items, prefer, post=True)


# -- $match ---------------------------------------------------------------------------


def match_bundle(state: AppState, key: Caller, payload: Any, base: str) -> dict[str, Any]:
    settings = state.settings
    wanted = parse_match(payload, mrn_system=settings.fhir_mrn_system, max_count=settings.max_limit)
    try:
        outcome = search(
            state.router, wanted.request, key.clinics, settings, counts=state.postgres.term_counts
        )
    except EmptyQuery as exc:
        raise FhirError(400, "invalid", "too little to match on") from exc
    graded = [(r, match_grade(r, wanted.gender)) for r in outcome.results]
    if wanted.only_certain:
        graded = [(r, g) for r, g in graded if g == "certain"]
    scores = resources.monotone_scores([r.score for r, _ in graded])
    RESULTS.labels(endpoint="fhir_match").observe(len(graded))
    key.returned(r.candidate.id for r, _ in graded)
    entries = [
        resources.bundle_entry(base, r.candidate.patient, settings.fhir_mrn_system, s, grade=g)
        for (r, g), s in zip(graded, scores, strict=True)
    ]
    return resources.searchset(entries, [], total=len(entries))


@router.post("/Patient/$match")
async def patient_match(key: Matcher, request: Request, state: State) -> JSONResponse:
    raw = await _body(request, JSON_TYPES)
    try:
        payload = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:
        raise FhirError(400, "invalid", "the body is not JSON") from exc
    body = await state.handlers.run(match_bundle, state, key, payload, _base(request, state))
    return _answer(body)
