"""Operator endpoints: liveness, readiness and Prometheus metrics (no API key; no patient data)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import state as state_rows
from core.schema import MIGRATIONS
from search_api.dependencies import State

router = APIRouter(tags=["operations"])


@router.get("/healthz", include_in_schema=True)
def healthz() -> dict[str, str]:
    """The process is alive (no dependency checked)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: State) -> JSONResponse:
    """Ready when the database answers, the projection exists, and the indexer is not stale."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        with state.pool.connection(timeout=2) as conn:
            version = conn.execute(
                "select max(version) from patient_search.schema_migrations"
            ).fetchone()
            checks["schema_version"] = version[0] if version else None
            ready &= bool(version and version[0] == MIGRATIONS[-1][0])
            indexer = state_rows.INDEXER.get_with_age(conn)
        checks["database"] = "ok"
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "checks": {"database": type(exc).__name__}},
            status_code=503,
        )
    if state.router.lag is not None:
        # Reported, never decisive: while the primary lags, PostgreSQL answers (degraded).
        primary_lag = state.router.lag.lag_s()
        checks["primary_lag_seconds"] = round(primary_lag, 3) if primary_lag < 1e12 else None
        checks["primary"] = "lagging" if state.router.lag.lagging() else "current"
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


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/cache")
def cache_stats(state: State) -> dict[str, Any]:
    """Answer cache statistics of this process (hits and misses per kind; no patient data)."""
    if state.cache is None:
        return {"enabled": False}
    return state.cache.stats()
