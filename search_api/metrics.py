"""Prometheus metrics of the API. Labels carry endpoints, engines and kinds, never patient data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
AUDIT_FAILURES = Counter(
    "patient_search_audit_failures_total",
    "Audit records the trail could not take (queue full or database away); alarm on any",
)
AUDIT_PENDING = Gauge("patient_search_audit_pending", "Audit records queued, not yet written")
WORDS_COMPLETE = Gauge(
    "patient_search_word_dictionary_complete",
    "1 while this process's word dictionary follows the indexer's announcements of new "
    "words and is current (searches then skip exact passes no patient can match)",
)
CONNECTIONS_SPREAD = Counter(
    "patient_search_connections_spread_total",
    "Keep-alive connections closed after an answer to even out serve's workers",
)
