"""Configuration from PATIENT_SEARCH_* environment variables (documented in README)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from normalizers.query import MAX_QUERY_CHARS

# Results per page at most, whatever is configured: the re-ranking window
# (search_api.plan.candidate_window) holds offset + limit up to 2 * MAX_PAGE.
MAX_PAGE = 100


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PATIENT_SEARCH_", extra="ignore", validate_default=True
    )

    # Where the data lives.
    database_url: str | None = None
    data_dir: Path = Path(".patient-search")
    source_schema: str = "public"

    # Connection pool of the API.
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=0, ge=0)  # 0: sized from the cores and workers
    pool_timeout_s: float = Field(default=2.0, gt=0)
    statement_timeout_ms: int = Field(default=2000, ge=0)
    search_timeout_ms: int = Field(default=1000, ge=1)  # one deadline for all of a search

    # Normalization.
    default_region: str = "US"
    date_order: str = "MDY"
    nicknames_file: Path | None = None

    # Meilisearch (primary engine when set).
    meili_url: str | None = None
    meili_api_key: str | None = None
    meili_index: str = "patients"
    search_budget_ms: int = Field(default=200, gt=0)
    meili_max_lag_s: float = Field(default=30.0, ge=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)

    # Kafka / Debezium (used by the indexer when bootstrap servers are set).
    kafka_bootstrap_servers: str | None = None
    kafka_topics: str = "clinic.public.patients,clinic.public.patient_contacts"
    kafka_group_id: str = "patient-search-indexer"

    # Logical decoding (single machine default).
    slot_name: str = "patient_search"
    publication_name: str = "patient_search"

    # Reindex: processes normalizing documents (0 = one per CPU).
    reindex_workers: int = Field(default=0, ge=0)

    # Indexer batching.
    batch_size: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    max_lag_s: float = Field(default=60.0, gt=0)

    # API: the operator's bounds of a search request, checked by search_api.service;
    # at most the ceilings (MAX_PAGE, normalizers.query.MAX_QUERY_CHARS).
    max_limit: int = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)
    max_query_length: int = Field(default=200, ge=1, le=MAX_QUERY_CHARS)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Answer cache (search_api.cache): invalidated by the indexer's notifications.
    cache_enabled: bool = True
    cache_search_ttl_s: float = Field(default=10.0, gt=0)
    cache_patient_ttl_s: float = Field(default=60.0, gt=0)
    cache_max_entries: int = Field(default=20_000, ge=1)
    slow_query_ms: float = Field(default=100.0, ge=0)
    log_level: str = "INFO"
    workers: int = Field(default=0, ge=0)  # 0: one per core available to the process

    @field_validator("date_order")
    @classmethod
    def _date_order(cls, value: str) -> str:
        value = value.upper()
        if value not in {"MDY", "DMY", "YMD"}:
            raise ValueError("DATE_ORDER must be MDY, DMY or YMD")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return value.upper()

    @field_validator("reindex_workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        return value or (os.cpu_count() or 1)

    @field_validator("workers")
    @classmethod
    def _serve_workers(cls, value: int) -> int:
        return value or available_cores()

    @property
    def pool_size(self) -> int:
        """Connections per API worker (and handler threads, search_api.app): all workers
        together keep about two per core busy. Four per core queued more threads for the
        GIL and more backends for the cores: on 2 cores at 1M, two per core answered
        typo searches 10-30 % faster with a shorter slowest hundredth, and no kind worse
        (issue 11, fifteenth pass). Never below the minimum."""
        auto = -(-2 * available_cores() // self.workers)
        return max(self.pool_max_size or auto, self.pool_min_size)

    @property
    def topics(self) -> list[str]:
        return [t.strip() for t in self.kafka_topics.split(",") if t.strip()]

    # --- indexer (CDC) ---
    indexer_metrics_port: int = Field(default=9464, ge=0)  # 0 disables the /metrics server
    indexer_heartbeat_s: float = Field(default=5.0, gt=0)  # quiet-database slot advance period
    indexer_retry_max_s: float = Field(default=30.0, gt=0)  # backoff ceiling on db/broker errors
    indexer_peek_changes: int = Field(default=5000, ge=1)  # pgoutput messages per peek
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    kafka_auto_offset_reset: str = "earliest"

    # --- meilisearch and routing ---
    meili_timeout_s: float = Field(default=10.0, gt=0)  # indexer/reindex client timeout per request
    meili_task_timeout_s: float = Field(default=60.0, gt=0)  # wait for one indexing task
    meili_batch_size: int = Field(default=1000, ge=1)  # documents per add-documents task

    # --- FHIR facade (/fhir) ---
    fhir_mrn_system: str = Field(
        default="urn:patient-search:mrn", min_length=1, pattern=r"^\S+$"
    )  # MRN Identifier.system
    fhir_base_url: str | None = None  # absolute base of /fhir links; default: from the request
    fhir_cursor_ttl_s: int = Field(default=3600, ge=60)  # how long a paging link stays valid

    # --- accountable access: keys, audit trail, rate limits (issue 13) ---
    key_rotation_grace_hours: float = Field(default=24.0, ge=0)  # old key valid after rotate
    audit_queue_size: int = Field(default=50_000, ge=10)  # records waiting per process (full: 503)
    audit_flush_ms: int = Field(default=200, ge=10, le=1000)  # queue written at least this often
    audit_batch_size: int = Field(default=10_000, ge=1)  # most records per write
    audit_on_failure: str = "reject"  # reject (503, fail closed) | serve (serve and alarm)
    audit_retention_days: int = Field(default=2192, ge=1)  # `audit prune` keeps this much (6 y)
    rate_limit_enabled: bool = True
    # A key is an integrating system (an EHR, a booking service) serving a whole site's
    # staff: its bucket stops a runaway or stolen integration at about what one server
    # answers, and never a busy front desk (50 staff at as-you-type rates passed 100/s).
    # A person is bounded by the (key, staff user) bucket below.
    rate_limit_key_per_s: float = Field(default=1000.0, gt=0)  # per key, every patient path
    rate_limit_key_burst: int = Field(default=2000, ge=1)
    rate_limit_user_per_s: float = Field(default=5.0, gt=0)  # per (key, X-Staff-User)
    rate_limit_user_burst: int = Field(default=30, ge=1)
    rate_limit_strict_key_per_s: float = Field(default=10.0, gt=0)  # lookup and FHIR $match
    rate_limit_strict_key_burst: int = Field(default=50, ge=1)
    rate_limit_strict_user_per_s: float = Field(default=0.5, gt=0)
    rate_limit_strict_user_burst: int = Field(default=10, ge=1)
    lookup_lockout_misses: int = Field(default=5, ge=1)  # misses per key and phone/MRN ...
    lookup_lockout_window_s: int = Field(default=900, ge=1)  # ... within this window ...
    lookup_lockout_s: int = Field(default=900, ge=1)  # ... lock that identifier this long
    thin_search_clinic_size: int = Field(default=2000, ge=0)  # above: a birth date alone is 400
    redis_url: str | None = None  # optional shared state (rate limits) instead of PostgreSQL

    @field_validator("audit_on_failure")
    @classmethod
    def _audit_on_failure(cls, value: str) -> str:
        value = value.lower()
        if value not in {"reject", "serve"}:
            raise ValueError("AUDIT_ON_FAILURE must be reject or serve")
        return value


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def configure_normalizers(settings: Settings) -> None:
    """Apply the configuration the pure normalizers take (the nickname overrides)."""
    from normalizers.names import use_nickname_overrides

    extra = settings.nicknames_file.read_text(encoding="utf-8") if settings.nicknames_file else None
    use_nickname_overrides(extra)
