"""Engine failover: the primary (Meilisearch) answers when configured and healthy, else PostgreSQL.

Each search has a latency budget. The primary runs in a worker thread and is
waited for at most that long; an error, a timeout, an open circuit breaker or
a primary index lagging behind the indexer sends the same query to the
PostgreSQL engine, answered with `degraded=True`. Both engines' candidates go
through the same re-ranker, so the order of results does not depend on who
answered; `degraded` tells the caller that the fallback did.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from core.settings import Settings
from core.state import INDEXER, MEILI, read_many
from engines.base import Candidate, CandidateQuery, Engine
from engines.meili import classify_error
from search_api.breaker import CircuitBreaker
from search_api.metrics import FALLBACKS

log = logging.getLogger(__name__)

# State rows (core.state): written by the indexer and by indexer.meili_sink.
INDEXER_STATE = INDEXER.name
MEILI_STATE = MEILI.name
# Not a state row: the oldest change still queued for Meilisearch (patient_search.meili_outbox).
OUTBOX = "meili_outbox"


@dataclass(frozen=True)
class Answer:
    candidates: list[Candidate]
    engine: str
    degraded: bool


# -- lag ------------------------------------------------------------------------


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def primary_lag_s(
    indexer: Mapping[str, Any] | None,
    meili: Mapping[str, Any] | None,
    now: float,
    outbox: Mapping[str, Any] | None = None,
) -> float:
    """How far the Meilisearch index is behind the projection, in seconds.

    - no indexer row: nothing to be behind (0);
    - no meili row, or no successful write yet: the index may be empty or
      foreign (inf);
    - the oldest change still queued in the outbox: the index lacks it since then;
    - failing_since: writes have failed since then.
    """
    if not indexer:
        return 0.0
    if not meili or not meili.get("last_write_at"):
        return float("inf")
    lag = 0.0
    for since in (meili.get("failing_since"), (outbox or {}).get("oldest_at")):
        started = _ts(since)
        if started is not None:
            lag = max(lag, now - started)
    return lag


StateReader = Callable[[], Mapping[str, Mapping[str, Any]]]


class LagProbe:
    """Is the primary index too far behind? Reads the state rows at most once per `ttl_s`.

    One request refreshes while others use the cached answer, so the check
    costs one small query per second per process, never one per search. A
    failed read counts as "not lagging": the breaker and the budget still guard
    the primary, and a database that cannot be read fails the fallback too.
    """

    def __init__(
        self,
        read_state: StateReader,
        max_lag_s: float,
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read = read_state
        self.max_lag_s = max_lag_s
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._lag = 0.0

    def lag_s(self) -> float:
        now = self._clock()
        if now - self._checked_at >= self.ttl_s and self._lock.acquire(blocking=False):
            try:
                rows = self._read()
                self._lag = primary_lag_s(
                    rows.get(INDEXER_STATE), rows.get(MEILI_STATE), now, rows.get(OUTBOX)
                )
            except Exception as exc:
                log.warning(
                    "state not readable for the lag check", extra={"error": type(exc).__name__}
                )
                self._lag = 0.0
            finally:
                self._checked_at = now
                self._lock.release()
        return self._lag

    def lagging(self) -> bool:
        return self.lag_s() > self.max_lag_s


def pool_state_reader(pool: Any, *, timeout_s: float = 0.2) -> StateReader:
    """State rows and the outbox's oldest entry through the API's psycopg pool."""

    def read() -> dict[str, Mapping[str, Any]]:
        with pool.connection(timeout=timeout_s) as conn:
            found: dict[str, Mapping[str, Any]] = dict(read_many(conn, INDEXER, MEILI))
            oldest = conn.execute(
                "select enqueued_at from patient_search.meili_outbox order by seq limit 1"
            ).fetchone()
        found[OUTBOX] = {"oldest_at": oldest[0].isoformat() if oldest else None}
        return found

    return read


# -- router ---------------------------------------------------------------------


class Router:
    """`Router(fallback, primary=None, ...)`; `.candidates(query) -> Answer`."""

    def __init__(
        self,
        fallback: Engine,
        primary: Engine | None = None,
        *,
        budget_ms: float = 200.0,
        breaker: CircuitBreaker | None = None,
        lag: LagProbe | None = None,
        max_workers: int = 32,
    ) -> None:
        self.fallback = fallback
        self.primary = primary
        self.budget_s = budget_ms / 1000
        self.breaker = breaker or CircuitBreaker()
        self.lag = lag
        self._pool: ThreadPoolExecutor | None = None
        if primary is not None:
            self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="primary")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        fallback: Engine,
        primary: Engine | None = None,
        *,
        read_state: StateReader | None = None,
    ) -> Router:
        lag = LagProbe(read_state, settings.meili_max_lag_s) if read_state else None
        return cls(
            fallback,
            primary,
            budget_ms=settings.search_budget_ms,
            breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s),
            lag=lag,
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def candidates(self, query: CandidateQuery) -> Answer:
        primary = self.primary
        # Filters are pushed into PostgreSQL's index query; the primary has no such query.
        if primary is None or self._pool is None or query.filters:
            return Answer(self.fallback.candidates(query), self.fallback.name, False)
        if self.lag is not None and self.lag.lagging():
            return self._fallback(query, "lag")
        if not self.breaker.allow():
            return self._fallback(query, "breaker_open")
        future: Future[list[Candidate]] = self._pool.submit(primary.candidates, query)
        try:
            found = future.result(timeout=self.budget_s)
        except FutureTimeout:
            future.cancel()  # if it never started; a running one ends at the client timeout
            self.breaker.record_failure()
            return self._fallback(query, "timeout")
        except Exception as exc:  # any failure of the primary means: ask the fallback
            self.breaker.record_failure()
            return self._fallback(query, classify_error(exc).reason)
        self.breaker.record_success()
        return Answer(found, primary.name, False)

    def _fallback(self, query: CandidateQuery, reason: str) -> Answer:
        FALLBACKS.labels(reason=reason).inc()
        # A failure is news; skipping a primary known to be down or behind is not.
        level = logging.DEBUG if reason in ("breaker_open", "lag") else logging.WARNING
        log.log(level, "primary engine not used; answering from fallback", extra={"reason": reason})
        return Answer(self.fallback.candidates(query), self.fallback.name, True)
