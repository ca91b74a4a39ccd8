"""The HTTP API (FastAPI): a short factory wiring state, errors, metrics and routers.

Routes live in `search_api.routes` (one APIRouter per area) and take what they need
through `search_api.dependencies.State` and, on patient data, `search_api.access.require`;
a new area adds its router to ROUTERS. The HTTP contract is in DESIGN.md.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI

from core import native
from core.settings import Settings
from search_api import fhir
from search_api.access import install_access
from search_api.dependencies import AppState
from search_api.edge import Edge
from search_api.errors import install_error_handlers
from search_api.handlers import handler_threads
from search_api.routes import audit, ops, page, patients
from search_api.spread import Spread, shared_surplus

log = logging.getLogger(__name__)

ROUTERS: tuple[APIRouter, ...] = (
    patients.router,
    audit.router,
    ops.router,
    page.router,
    fhir.router,
)


@asynccontextmanager
async def lifespan(
    app: FastAPI, *, settings: Settings, database_url: str, primary: Any, owns_process: bool
) -> AsyncIterator[None]:
    app.state.search = AppState.open(settings, database_url, primary)
    if owns_process:
        quiet_collector()
        report_native()
    # Routes' blocking work runs on AppState.handlers; what FastAPI itself sends to anyio's
    # thread pool (40 threads by default) gets as many threads.
    to_thread.current_default_thread_limiter().total_tokens = handler_threads(settings)
    try:
        yield
    finally:
        app.state.search.close()


def quiet_collector() -> None:
    """Keep the cycle collector off the request path (issue 11). What a process loads
    at start (the word dictionary, routes, models) lives as long as it does: frozen,
    a full collection no longer walks it (one took 50-70 ms, every thread stopped).
    A search makes tens of thousands of short-lived objects, nearly all freed by
    reference counting: collecting the young generation every 700 allocations cost
    a sixth of a name search's CPU under load (prefix 148 -> 209 req/s at 1M), while
    each search still left itself in a cycle (fixed since, engines.pg_search). Without
    the cycle, 50,000 still costs the collector least: 10,000 took a third more of its
    time, in older-generation pauses of 50-110 ms (docs/benchmarks.md, eighth pass)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


GC_YOUNG_THRESHOLD = 50_000


def report_native() -> None:
    """Whether the search path runs compiled (setup.py); a warning when a compiled module
    is older than its source, whose change then does not run."""
    log.info("compiled modules", extra={"count": len(native.compiled())})
    if old := native.stale():
        log.warning(
            "compiled modules older than their source: build again (make install)",
            extra={"modules": old},
        )


def create_app(
    settings: Settings, database_url: str, *, primary: Any = None, owns_process: bool = False
) -> FastAPI:
    """`primary` is an optional engine (Meilisearch) tried before PostgreSQL;
    `owns_process` (a uvicorn worker) lets the app tune the process's garbage collector."""
    app = FastAPI(
        title="Patient search",
        version="1",
        lifespan=partial(
            lifespan,
            settings=settings,
            database_url=database_url,
            primary=primary,
            owns_process=owns_process,
        ),
        description="Find the right patient first: names with typos and nicknames, phones, "
        "dates of birth, MRNs. Every request needs an X-API-Key scoped to clinics.",
    )
    install_error_handlers(app)
    fhir.answer_errors_as_outcomes(app)
    # Pure ASGI (no BaseHTTPMiddleware task per request): limits, no-store, metrics.
    app.add_middleware(Edge, max_body_bytes=settings.max_body_bytes)
    if (surplus := shared_surplus()) is not None:  # a worker of a multi-worker `serve`
        app.add_middleware(Spread, surplus=surplus)
    install_access(app)  # outermost: X-Request-Id on every answer, one audit record per access
    for router in ROUTERS:
        app.include_router(router)
    return app
