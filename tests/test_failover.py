"""Routing against real failure modes of the primary, with no Meilisearch server anywhere.

The primary is the real MeiliEngine and the official client, pointed at: a port
where nothing listens, a TCP server that accepts and never answers, and an
HTTP server answering 500. Each search must come back from the fallback within
the budget plus a small margin, and the breaker must open. Recovery is shown
at the breaker level with a stub engine (it tests our breaker, not Meilisearch).
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from core.settings import Settings
from engines.base import Candidate, CandidateQuery
from engines.meili import MeiliEngine, make_client
from engines.pg_search import PostgresEngine
from indexer.meili_sink import MeiliSink, MeiliUnavailable, StateStore
from indexer.sync import load_documents, sync_patients
from search_api.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from search_api.failover import LagProbe, Router, pool_state_reader, primary_lag_s
from search_api.metrics import FALLBACKS
from search_api.plan import SearchInput
from search_api.service import search
from tests.factories import insert_patient
from tests.fixtures import ErrorServer

BUDGET_MS = 200
MARGIN_S = 0.25  # thread hand-off and the fallback's own time, on a loaded 2-core CI machine
QUERY = CandidateQuery(clinic_ids=("clinic-a",), strong_terms=("mrn:00412",), limit=10)


class FakeFallback:
    """A fallback engine implementing the Engine protocol; answers at once."""

    name = "postgres"

    def __init__(self) -> None:
        self.calls = 0

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        self.calls += 1
        return [Candidate(id="p1", patient={"id": "p1"}, match={})]

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None:
        return None


def _engine(url: str) -> MeiliEngine:
    # Settings verification needs a live server; these tests exercise the request path.
    return MeiliEngine(
        make_client(url, "key", BUDGET_MS / 1000), "patients", require_verified=False
    )


def _fallbacks(reason: str) -> float:
    return FALLBACKS.labels(reason=reason)._value.get()


class SilentServer:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.held.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def error_500() -> Iterator[ErrorServer]:
    server = ErrorServer(500, b"internal error")
    yield server
    server.close()


def _timed(router: Router) -> tuple[Any, float]:
    started = time.perf_counter()
    answer = router.candidates(QUERY)
    return answer, time.perf_counter() - started


def _assert_fallback_then_open(router: Router, fallback: FakeFallback, reason: str) -> None:
    before = _fallbacks(reason)
    for _ in range(3):
        answer, took = _timed(router)
        assert answer.engine == "postgres" and answer.degraded is True
        assert [c.id for c in answer.candidates] == ["p1"]
        assert took < BUDGET_MS / 1000 + MARGIN_S, took
    assert _fallbacks(reason) - before == 3
    assert router.breaker.state == OPEN
    open_before = _fallbacks("breaker_open")
    answer, took = _timed(router)
    assert answer.degraded and answer.engine == "postgres"
    assert took < 0.05  # an open breaker spends no budget on the primary
    assert _fallbacks("breaker_open") - open_before == 1
    assert fallback.calls == 4


@contextmanager
def _router_to(
    url: str, fallback: FakeFallback, failures: int = 3, reset_s: float = 30
) -> Iterator[Router]:
    """A Router to a Meilisearch at `url` (the test's fault) before `fallback`, closed after."""
    breaker = CircuitBreaker(failures, reset_s)
    router = Router(fallback, _engine(url), budget_ms=BUDGET_MS, breaker=breaker)
    try:
        yield router
    finally:
        router.close()


def test_nothing_listening(dead_url: str) -> None:
    fallback = FakeFallback()
    with _router_to(dead_url, fallback) as router:
        _assert_fallback_then_open(router, fallback, "connection")


def test_accepts_and_never_answers(silent: SilentServer) -> None:
    fallback = FakeFallback()
    with _router_to(silent.url, fallback) as router:
        _assert_fallback_then_open(router, fallback, "timeout")
        accepted = silent.accepted
        router.candidates(QUERY)  # breaker open: no new connection to the silent server
        time.sleep(0.05)
        assert silent.accepted == accepted


def test_http_500(error_500: ErrorServer) -> None:
    fallback = FakeFallback()
    with _router_to(error_500.url, fallback) as router:
        _assert_fallback_then_open(router, fallback, "server_error")
        assert len(error_500.seen) == 3


def test_breaker_half_opens_after_reset_and_retries_the_real_fault(error_500: ErrorServer) -> None:
    with _router_to(error_500.url, FakeFallback(), failures=1, reset_s=0.2) as router:
        assert router.candidates(QUERY).degraded
        assert router.breaker.state == OPEN
        router.candidates(QUERY)
        assert len(error_500.seen) == 1
        time.sleep(0.25)
        assert router.breaker.state == HALF_OPEN
        assert router.candidates(QUERY).degraded  # the trial goes to the server and fails
        assert len(error_500.seen) == 2
        assert router.breaker.state == OPEN


def test_no_primary_is_not_degraded() -> None:
    answer = Router(FakeFallback()).candidates(QUERY)
    assert answer.engine == "postgres" and answer.degraded is False


# -- breaker --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_recovers() -> None:
    clock = Clock()
    b = CircuitBreaker(3, 10, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == CLOSED
    b.record_success()  # consecutive failures only
    for _ in range(3):
        b.record_failure()
    assert b.state == OPEN and not b.allow()
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10.0
    assert b.state == HALF_OPEN
    assert b.allow()  # one trial
    assert not b.allow()  # and only one
    b.record_failure()
    assert b.state == OPEN
    clock.now = 20.0
    assert b.allow()
    b.record_success()
    assert b.state == CLOSED and b.allow() and b.allow()


def test_breaker_is_thread_safe() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 1, clock=clock)
    b.record_failure()
    clock.now = 1.0
    allowed = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        allowed.append(b.allow())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


class FlakyPrimary:
    """Our own stub engine: fails while `fault` is set, then answers."""

    name = "meilisearch"

    def __init__(self) -> None:
        self.fault = True

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        if self.fault:
            raise ConnectionError("down")
        return [Candidate(id="p9", patient={"id": "p9"}, match={})]

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None:
        return None


def test_router_recovers_when_the_fault_ends() -> None:
    primary = FlakyPrimary()
    router = Router(FakeFallback(), primary, budget_ms=BUDGET_MS, breaker=CircuitBreaker(2, 0.1))
    try:
        assert router.candidates(QUERY).degraded
        assert router.candidates(QUERY).degraded
        assert router.breaker.state == OPEN
        primary.fault = False
        assert router.candidates(QUERY).degraded  # still open: not even tried
        time.sleep(0.15)
        answer = router.candidates(QUERY)  # half-open trial succeeds
        assert answer.engine == "meilisearch" and not answer.degraded
        assert [c.id for c in answer.candidates] == ["p9"]
        assert router.breaker.state == CLOSED
    finally:
        router.close()


# -- lag ------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def test_primary_lag() -> None:
    now = 1_000_000.0
    written = {"last_write_at": _iso(now - 500)}
    assert primary_lag_s(None, None, now) == 0.0
    assert primary_lag_s({"last_batch_at": _iso(now)}, None, now) == float("inf")
    indexer = {"last_batch_at": _iso(now - 5)}
    # Nothing queued: current, however long ago the last write was.
    assert primary_lag_s(indexer, written, now, {"oldest_at": None}) == 0.0
    # The oldest change still queued in the outbox says how far behind the index is.
    queued = {"oldest_at": _iso(now - 60)}
    assert primary_lag_s(indexer, written, now, queued) == pytest.approx(60)
    failing = {**written, "failing_since": _iso(now - 40)}
    assert primary_lag_s(indexer, failing, now) == pytest.approx(40)
    assert primary_lag_s(indexer, failing, now, queued) == pytest.approx(60)
    # Never written successfully: the index cannot be trusted.
    assert primary_lag_s(indexer, {"index": "patients"}, now) == float("inf")
    assert primary_lag_s(indexer, {"failing_since": _iso(now - 1)}, now) == float("inf")


def test_lag_probe_reads_once_per_ttl() -> None:
    reads = []
    clock = Clock()
    clock.now = 1_000_000.0

    def read() -> dict[str, dict[str, Any]]:
        reads.append(clock.now)
        return {
            "indexer": {"last_batch_at": _iso(clock.now)},
            "meili": {"last_write_at": _iso(0)},
            "meili_outbox": {"oldest_at": _iso(clock.now - 31)},
        }

    probe = LagProbe(read, 30, ttl_s=1.0, clock=clock)
    assert probe.lagging() and probe.lagging()
    assert len(reads) == 1
    clock.now += 1.0
    probe.lagging()
    assert len(reads) == 2


def test_lagging_primary_is_skipped() -> None:
    primary = FlakyPrimary()
    primary.fault = False
    lag = LagProbe(lambda: {"indexer": {"last_batch_at": _iso(time.time())}}, 30)
    router = Router(FakeFallback(), primary, budget_ms=BUDGET_MS, lag=lag)
    try:
        before = _fallbacks("lag")
        answer = router.candidates(QUERY)
        assert answer.degraded and answer.engine == "postgres"
        assert _fallbacks("lag") - before == 1
        assert router.breaker.state == CLOSED  # lag is not a failure of the primary
    finally:
        router.close()


def test_unreadable_state_does_not_block_the_primary() -> None:
    def broken() -> dict[str, dict[str, Any]]:
        raise psycopg.OperationalError("down")

    assert LagProbe(broken, 30).lagging() is False


# -- with PostgreSQL: the real fallback, the sink's state and the lag check ------------


@pytest.fixture
def pool(db_url: str) -> Iterator[ConnectionPool]:
    p = ConnectionPool(db_url, min_size=1, max_size=4, open=True)
    yield p
    p.close()


def test_search_falls_back_to_postgres_end_to_end(
    db_url: str, pool: ConnectionPool, silent: SilentServer
) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="John", family="Smith", mrn="00412")
        insert_patient(conn, "p2", given="Jane", family="Doe", clinic_id="clinic-b")
        sync_patients(conn, ["p1", "p2"])
        conn.commit()
    settings = Settings(search_budget_ms=BUDGET_MS, breaker_failures=2, breaker_reset_s=30)
    primary = MeiliEngine.from_settings(settings.model_copy(update={"meili_url": silent.url}))
    primary._require_verified = False
    router = Router.from_settings(settings, PostgresEngine(pool), primary)
    try:
        started = time.perf_counter()
        outcome = search(router, SearchInput(q="john smith"), ["clinic-a"], settings)
        took = time.perf_counter() - started
        assert outcome.engine == "postgres" and outcome.degraded
        assert [r.candidate.id for r in outcome.results] == ["p1"]
        assert took < BUDGET_MS / 1000 + 1.0  # the fallback's first query plans cold
    finally:
        router.close()


def test_unverified_engine_falls_back_without_waiting(dead_url: str) -> None:
    settings = Settings(meili_url=dead_url, search_budget_ms=BUDGET_MS)
    router = Router.from_settings(settings, FakeFallback(), MeiliEngine.from_settings(settings))
    try:
        before = _fallbacks("not_ready")
        answer, took = _timed(router)
        assert answer.degraded and took < 0.1
        assert _fallbacks("not_ready") - before == 1
    finally:
        router.close()


def test_sink_outage_is_retryable_and_marks_the_index_lagging(
    db_url: str, pool: ConnectionPool, dead_url: str
) -> None:
    """A down Meilisearch: the sink raises MeiliUnavailable (a ConnectionError: retried,
    nothing dead-lettered), records since when it fails, and the lag check skips the primary."""
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="John", family="Smith")
        conn.commit()
        docs, _ = load_documents(conn, ["p1"], schema="public", region="US")
        conn.execute(
            "insert into patient_search.state (key, value) values ('indexer', %s)",
            (Jsonb({"last_batch_at": _iso(time.time())}),),
        )
        conn.commit()
    state = StateStore(db_url)
    sink = MeiliSink(make_client(dead_url, None, 0.2), "patients", state=state, task_timeout_s=1)
    try:
        with pytest.raises(MeiliUnavailable) as err:
            sink.write(docs, [])
        assert isinstance(err.value, ConnectionError)
        assert err.value.failure.reason == "connection"
        rows = pool_state_reader(pool)()
        assert rows["meili"]["failing_since"] is not None
        assert "last_write_at" not in rows["meili"]
        assert rows["meili_outbox"] == {"oldest_at": None}
        probe = LagProbe(pool_state_reader(pool), max_lag_s=30)
        assert probe.lagging()  # never written: the index cannot be trusted
    finally:
        sink.close()


def test_sink_targets_indexes_being_rebuilt(db_url: str) -> None:
    state = StateStore(db_url)
    try:
        assert state.rebuild_targets() == []
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "insert into patient_search.state (key, value) values ('meili_rebuild', %s)",
                (Jsonb({"live": "patients", "indexes": ["patients__rebuild"]}),),
            )
        assert state.rebuild_targets() == ["patients__rebuild"]
        state.record("patients", ok=True, force=True)
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "select value from patient_search.state where key = 'meili'"
            ).fetchone()
        assert row and row[0]["last_write_at"] and row[0]["failing_since"] is None
    finally:
        state.close()
