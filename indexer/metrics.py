"""Prometheus metrics of the indexer (served on settings.indexer_metrics_port)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

EVENTS = Counter(
    "patient_search_indexer_events_total",
    "Change events consumed, by source and table",
    ["source", "table"],
)
BATCHES = Counter("patient_search_indexer_batches_total", "Batches written", ["source"])
PATIENTS_SYNCED = Counter(
    "patient_search_indexer_patients_synced_total", "Documents upserted or deleted", ["action"]
)
BATCH_SECONDS = Histogram(
    "patient_search_indexer_batch_seconds",
    "Time to write one batch (map ids, rebuild documents, commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SEARCHABLE_LAG = Histogram(
    "patient_search_indexer_commit_to_searchable_seconds",
    "Source commit to projection commit, per source transaction",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
LAG_SECONDS = Gauge("patient_search_indexer_lag_seconds", "Age of the last written source commit")
RETAINED_WAL = Gauge(
    "patient_search_indexer_retained_wal_bytes", "WAL the replication slot keeps on disk"
)
CONSUMER_LAG = Gauge(
    "patient_search_indexer_consumer_lag_messages", "Kafka messages not yet consumed"
)
DEAD_LETTERS = Counter(
    "patient_search_indexer_dead_letters_total", "Events or documents set aside", ["source"]
)
RETRIES = Counter(
    "patient_search_indexer_retries_total", "Database or broker failures retried", ["error"]
)


def serve(port: int) -> bool:
    """Start the /metrics endpoint; a busy port is logged, not fatal (indexing matters more)."""
    if port <= 0:
        return False
    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("metrics port unavailable", extra={"port": port, "error": type(exc).__name__})
        return False
    log.info("metrics served", extra={"port": port})
    return True
