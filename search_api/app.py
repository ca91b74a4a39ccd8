"""The HTTP API (FastAPI): plain functions over a small state object; contract in DESIGN.md."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool

from core.apikeys import ApiKey, find_key
from core.schema import MIGRATIONS
from core.settings import Settings
from engines.pg_search import PostgresEngine
from search_api import models
from search_api.errors import ApiError, install_error_handlers
from search_api.metrics import REQUEST_SECONDS, REQUESTS, RESULTS
from search_api.page import search_page
from search_api.plan import SearchInput
from search_api.routing import Router, pool_state_reader
from search_api.service import (
    EmptyQuery,
    lookup_terms,
    observe_engine_query,
    search,
)

log = logging.getLogger(__name__)
KEY_CACHE_SECONDS = 30.0


@dataclass
class AppState:
    settings: Settings
    pool: ConnectionPool
    postgres: PostgresEngine
    router: Router
    keys: dict[str, tuple[float, ApiKey | None]]


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.search
    return state


def authenticate(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> ApiKey:
    """Cached for KEY_CACHE_SECONDS, so a revoked key stops working within that time."""
    if not x_api_key:
        raise ApiError(401, "unauthorized", "missing X-API-Key header")
    state = _state(request)
    now = time.monotonic()
    cached = state.keys.get(x_api_key)
    if cached is None or now - cached[0] > KEY_CACHE_SECONDS:
        with state.pool.connection() as conn:
            cached = (now, find_key(conn, x_api_key))
        if len(state.keys) > 10_000:
            state.keys.clear()
        state.keys[x_api_key] = cached
    if cached[1] is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return cached[1]


Key = Annotated[ApiKey, Depends(authenticate)]


def _verify_in_background(primary: Any) -> None:
    """The primary serves only once its index settings are verified; never block start-up."""

    def verify() -> None:
        try:
            primary.verify_settings()
        except Exception as exc:
            log.warning("primary engine not verifiable yet", extra={"error": type(exc).__name__})

    threading.Thread(target=verify, name="primary-verify", daemon=True).start()


def create_app(settings: Settings, database_url: str, *, primary: Any = None) -> FastAPI:
    """`primary` is an optional engine (Meilisearch) tried before PostgreSQL."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from core.database import open_pool

        pool = open_pool(database_url, settings)
        postgres = PostgresEngine(
            pool, observe=observe_engine_query("postgres", settings.slow_query_ms)
        )
        router = Router.from_settings(
            settings, postgres, primary, read_state=pool_state_reader(pool) if primary else None
        )
        if primary is not None:
            _verify_in_background(primary)
        app.state.search = AppState(
            settings=settings, pool=pool, postgres=postgres, router=router, keys={}
        )
        try:
            yield
        finally:
            router.close()
            pool.close()

    app = FastAPI(
        title="Patient search",
        version="1",
        lifespan=lifespan,
        description="Find the right patient first: names with typos and nicknames, phones, "
        "dates of birth, MRNs. Every request needs an X-API-Key scoped to clinics.",
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Any]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        engine = response.headers.get("X-Search-Engine", "none")
        REQUEST_SECONDS.labels(endpoint=endpoint, engine=engine).observe(
            time.perf_counter() - started
        )
        REQUESTS.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        return response

    @app.post(
        "/v1/patients/search",
        response_model=models.SearchResponse,
        responses={401: {"model": models.ErrorResponse}, 422: {"model": models.ErrorResponse}},
    )
    def search_patients(
        body: models.SearchRequest, key: Key, request: Request, response: Response
    ) -> models.SearchResponse:
        state = _state(request)
        try:
            outcome = search(
                state.router,
                SearchInput(**body.model_dump()),
                key.clinics,
                state.settings,
                counts=state.postgres.term_counts,
            )
        except EmptyQuery as exc:
            raise ApiError(422, "empty_query", str(exc)) from exc
        RESULTS.labels(endpoint="search").observe(len(outcome.results))
        response.headers["X-Search-Engine"] = outcome.engine
        # Standard Server-Timing: where the time went (engine includes waiting for a connection).
        response.headers["Server-Timing"] = (
            f"engine;dur={outcome.engine_ms}, total;dur={outcome.took_ms}"
        )
        return models.SearchResponse(
            results=[
                models.SearchResult(
                    id=r.candidate.id,
                    score=r.score,
                    match=r.match,
                    matched=list(r.matched),
                    grade=r.grade,
                    patient=r.candidate.patient,
                )
                for r in outcome.results
            ],
            engine=outcome.engine,
            degraded=outcome.degraded,
            took_ms=outcome.took_ms,
            query=outcome.query,
        )

    @app.post(
        "/v1/patients/lookup",
        response_model=models.LookupResponse,
        responses={401: {"model": models.ErrorResponse}, 422: {"model": models.ErrorResponse}},
    )
    def lookup(body: models.LookupRequest, key: Key, request: Request) -> models.LookupResponse:
        """Exact identifiers only; a hit and a miss have the same shape."""
        started = time.perf_counter()
        state = _state(request)
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

    @app.get(
        "/v1/patients/{patient_id}",
        responses={404: {"model": models.ErrorResponse}, 401: {"model": models.ErrorResponse}},
    )
    def get_patient(patient_id: str, key: Key, request: Request) -> dict[str, Any]:
        if len(patient_id) > 200:
            raise ApiError(422, "invalid_request", "patient id too long")
        found = _state(request).postgres.get(patient_id, key.clinics)
        if found is None:
            raise ApiError(404, "not_found", "no such patient in your clinics")
        return {"id": found.id, "patient": found.patient}

    @app.get("/healthz", include_in_schema=True)
    def healthz() -> dict[str, str]:
        """The process is alive (no dependency checked)."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers, the projection exists, and the indexer is not stale."""
        state = _state(request)
        checks: dict[str, Any] = {}
        ready = True
        try:
            with state.pool.connection(timeout=2) as conn:
                version = conn.execute(
                    "select max(version) from patient_search.schema_migrations"
                ).fetchone()
                checks["schema_version"] = version[0] if version else None
                ready &= bool(version and version[0] == MIGRATIONS[-1][0])
                indexer = conn.execute(
                    "select value, extract(epoch from now() - updated_at) "
                    "from patient_search.state where key = 'indexer'"
                ).fetchone()
            checks["database"] = "ok"
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "checks": {"database": type(exc).__name__}},
                status_code=503,
            )
        if indexer:
            # Lag as the indexer reported it, or the silence since, if it stopped reporting.
            reported = float((indexer[0] or {}).get("lag_seconds") or 0.0)
            lag = max(reported, float(indexer[1] or 0.0))
            checks["indexer_lag_seconds"] = round(lag, 3)
            if lag > state.settings.max_lag_s:
                checks["indexer"] = "stale"
                ready = False
        status = "ready" if ready else "not_ready"
        return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(search_page())

    return app
