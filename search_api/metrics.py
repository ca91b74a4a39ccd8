"""Prometheus metrics of the API. Labels carry endpoints, engines and kinds, never patient data."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

REQUEST_SECONDS = Histogram(
    "patient_search_request_seconds",
    "API request latency",
    ["endpoint", "engine"],
    buckets=_LATENCY_BUCKETS,
)
REQUESTS = Counter(
    "patient_search_requests_total", "API requests by outcome", ["endpoint", "status"]
)
RESULTS = Histogram(
    "patient_search_results",
    "Number of results returned",
    ["endpoint"],
    buckets=(0, 1, 2, 5, 10, 20, 50, 100),
)
ENGINE_QUERY_SECONDS = Histogram(
    "patient_search_engine_query_seconds",
    "Duration of each engine query, by engine and query kind",
    ["engine", "kind"],
    buckets=_LATENCY_BUCKETS,
)
FALLBACKS = Counter(
    "patient_search_fallbacks_total", "Searches answered by the fallback engine", ["reason"]
)
ERRORS = Counter("patient_search_errors_total", "Errors by code", ["code"])


async def measure_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """HTTP middleware: latency and outcome per route template (never the raw path)."""
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    endpoint = getattr(route, "path", "unmatched")
    engine = response.headers.get("X-Search-Engine", "none")
    REQUEST_SECONDS.labels(endpoint=endpoint, engine=engine).observe(time.perf_counter() - started)
    REQUESTS.labels(endpoint=endpoint, status=str(response.status_code)).inc()
    return response
