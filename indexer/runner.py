"""The indexer loop: source batch -> patient ids -> sync_patients -> commit -> ack.

The order is the whole guarantee: the source position (slot or offsets) moves
only after the projection transaction has committed, so a crash anywhere
replays a batch and never skips one; replays are harmless because every write
re-reads the current source state of the patients involved.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType
from typing import Any, Protocol

import psycopg
from psycopg import sql

from core.database import resolve_database_url
from core.schema import migrate_or_check
from core.settings import Settings
from core.state import INDEXER, IndexerState, iso_time
from engines.pg_projection import owners_of_contacts
from indexer import deadletters, metrics
from indexer.events import Batch, DeadLetter, affected_patients
from indexer.sync import DocumentRejected, Sink, SyncStats, sync_patients

log = logging.getLogger(__name__)

_RESYNC_CHUNK = 1000
_SUMMARY_EVERY_S = 30.0


def _retryable() -> tuple[type[BaseException], ...]:
    from kafka.errors import KafkaError

    return (psycopg.OperationalError, psycopg.InterfaceError, KafkaError, ConnectionError)


# SQLSTATE classes that say "try again later", not "this patient cannot be indexed":
# connection, insufficient resources, operator intervention, system error, rollback.
_OUTAGE_CLASSES = ("08", "53", "57", "58", "40")


def is_outage(exc: BaseException) -> bool:
    """An error of the moment (retry from the durable position), not of one patient.

    psycopg files a too-large index row (SQLSTATE 54000) under OperationalError
    too; that one is the document's fault and must be isolated, not retried.
    """
    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None):
        state = str(exc.sqlstate)
        return state[:2] in _OUTAGE_CLASSES or state == "55P03"
    return isinstance(exc, _retryable())


class Source(Protocol):
    kind: str
    drained: bool

    def open(self, stop: threading.Event, *, wait: bool = True) -> None: ...
    def close(self) -> None: ...
    def needs_initial_sync(self) -> bool: ...
    def mark_synced(self) -> None: ...
    def prepare_for_rebuild(self) -> None: ...
    def keepalive(self) -> None: ...
    def mark_rebuilt(self, conn: psycopg.Connection[Any]) -> None: ...
    def record_checkpoint(self, conn: Any, batch: Batch) -> None: ...
    def batches(self, batch_size: int) -> Iterator[Batch]: ...
    def ack(self, batch: Batch) -> None: ...
    def heartbeat(self) -> bool: ...
    def lag(self) -> dict[str, float]: ...


def make_source(url: str, settings: Settings) -> Source:
    if settings.kafka_bootstrap_servers:
        from indexer.kafka_source import KafkaSource

        return KafkaSource(settings, url)
    from indexer.logical import LogicalSource

    return LogicalSource(url, settings)


def wait_visible(conn: psycopg.Connection[Any], xids: set[int], timeout: float = 30.0) -> None:
    """Wait until the decoded transactions are visible to new snapshots.

    A transaction's commit record is in the WAL (so decodable) slightly before
    the server marks it visible; reading the source in that window would write
    the old state and then move the slot past the change. Each later
    statement takes a newer snapshot, so one check before the write suffices.
    """
    if not xids:
        return
    wanted = sorted(xids)
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "select count(*) from pg_snapshot_xip(pg_current_snapshot()) x "
            "where (x::text::numeric %% 4294967296)::bigint = any(%s)",
            (wanted,),
        ).fetchone()
        conn.rollback()
        if not row or not row[0] or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def sync_with_owners(
    conn: psycopg.Connection[Any],
    patient_ids: Iterable[str],
    settings: Settings,
    sinks: Sequence[Sink] = (),
) -> SyncStats:
    """sync_patients, plus every patient whose document still lists a contact of theirs.

    contact_owner maps a contact to one patient. If a contact has moved from A
    to B and B is synced before the move event is read, B takes the mapping and
    A's document would keep the contact forever; so A joins this batch. Must
    run in a REPEATABLE READ transaction: this lookup and sync_patients' read of
    the source then see the same snapshot.
    """
    ids = set(patient_ids)
    frontier = set(ids)
    contacts_sql = sql.SQL("select id from {} where patient_id = any(%s)").format(
        sql.Identifier(settings.source_schema, "patient_contacts")
    )
    while frontier:
        contacts = [r[0] for r in conn.execute(contacts_sql, (sorted(frontier),))]
        frontier = owners_of_contacts(conn, contacts) - ids
        ids |= frontier
    return sync_patients(
        conn, ids, schema=settings.source_schema, region=settings.default_region, sinks=sinks
    )


def sync_isolating(
    conn: psycopg.Connection[Any],
    ids: Sequence[str],
    settings: Settings,
    sinks: Sequence[Sink] = (),
    *,
    source: str,
    position: str,
) -> tuple[SyncStats, list[DeadLetter]]:
    """All ids at once; if that fails, one by one, so only a bad patient is set aside.

    In the caller's transaction (savepoints here). Outages (connection, Kafka,
    an engine unavailable) are not a patient's fault: they propagate and the
    caller retries from its durable position.
    """
    try:
        with conn.transaction():
            return sync_with_owners(conn, ids, settings, sinks), []
    except Exception as exc:
        if is_outage(exc):
            raise
        log.warning("batch rejected; isolating documents", extra={"patients": len(ids)})
    upserted = deleted = 0
    dead: list[DeadLetter] = []
    for pid in ids:
        try:
            with conn.transaction():
                one = sync_with_owners(conn, [pid], settings, sinks)
            upserted += one.upserted
            deleted += one.deleted
        except Exception as exc:
            if is_outage(exc):
                raise
            reason = str(exc) if isinstance(exc, DocumentRejected) else type(exc).__name__
            dead.append(
                DeadLetter(source, position, f"document rejected: {reason}", pid, "document")
            )
    return SyncStats(upserted, deleted), dead


def make_sinks(settings: Settings, conn: psycopg.Connection[Any]) -> list[Sink]:
    """Beside the projection, in the batch's own transaction: the Meilisearch outbox.

    Never Meilisearch itself: its outages must not hold the projection back
    (indexer.meili_sink drains the outbox on a thread of its own).
    """
    if not settings.meili_url:
        return []
    from indexer.meili_sink import OutboxSink

    return [OutboxSink(conn)]


def start_drainer(settings: Settings, url: str) -> Any:
    """The Meilisearch outbox drainer thread, when Meilisearch is configured."""
    if not settings.meili_url:
        return None
    from indexer.meili_sink import MeiliDrainer

    drainer = MeiliDrainer.from_settings(settings, url)
    drainer.start()
    return drainer


def resync_all(
    conn: psycopg.Connection[Any],
    settings: Settings,
    sinks: Sequence[Sink] = (),
    keepalive: Callable[[], object] = lambda: None,
) -> int:
    """Re-check every patient in the projection and in the source (initial load, truncate).

    Keyset pages over each primary key, one committed transaction per page:
    memory stays flat and the work survives a crash part-way (it is redone).
    `keepalive` runs between pages (a Kafka consumer must poll within its interval).
    """
    total = 0
    tables = [sql.Identifier("patient_search", "patients")]
    tables.append(sql.Identifier(settings.source_schema, "patients"))
    for table in tables:
        last = ""
        while True:
            with conn.transaction():
                rows = conn.execute(
                    sql.SQL("select id from {} where id > %s order by id limit %s").format(table),
                    (last, _RESYNC_CHUNK),
                ).fetchall()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                _, dead = sync_isolating(
                    conn, ids, settings, sinks, source="resync", position=f"after:{last}"
                )
                deadletters.record(conn, dead)
            last = ids[-1]
            total += len(ids)
            keepalive()
    return total


class Writer:
    """Writes batches into the projection and keeps the state row the API reads."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        settings: Settings,
        source: Source,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.conn = conn
        self.sinks = sinks
        self.settings = settings
        self.source = source
        self.position: str | None = None
        self.last_commit_ts: float | None = None
        self.last_batch_at: float | None = None
        self._last_idle = 0.0
        self._last_gauges = 0.0

    def write(self, batch: Batch) -> SyncStats:
        started = time.monotonic()
        dead = list(batch.dead)
        wait_visible(self.conn, batch.xids)
        with self.conn.transaction():
            affected = affected_patients(self.conn, batch.changes)
            stats = self._sync(sorted(affected.ids), batch, dead)
            deadletters.record(self.conn, dead)
            self.source.record_checkpoint(self.conn, batch)
            self._remember(batch)
            self._write_state(self._lag(batch))
        if affected.full_resync:
            log.info("truncate seen; re-checking every patient", extra={"source": self.source.kind})
            resync_all(self.conn, self.settings, self.sinks, self.source.keepalive)
        now = time.time()
        for ts in batch.commit_ts:
            metrics.SEARCHABLE_LAG.observe(max(0.0, now - ts))
        metrics.LAG_SECONDS.set(self._lag(batch))
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        metrics.BATCHES.labels(self.source.kind).inc()
        metrics.PATIENTS_SYNCED.labels("upsert").inc(stats.upserted)
        metrics.PATIENTS_SYNCED.labels("delete").inc(stats.deleted)
        by_table = collections.Counter(c.table for c in batch.changes)
        for table, count in by_table.items():
            metrics.EVENTS.labels(self.source.kind, table).inc(count)
        ignored = batch.events - len(batch.changes) - len(batch.dead)
        if ignored > 0:
            metrics.EVENTS.labels(self.source.kind, "other").inc(ignored)
        if dead:
            metrics.DEAD_LETTERS.labels(self.source.kind).inc(len(dead))
        self._gauges()
        log.debug(
            "batch written",
            extra={
                "events": batch.events,
                "patients": len(affected.ids),
                "upserted": stats.upserted,
                "deleted": stats.deleted,
                "dead_letters": len(dead),
                "position": batch.position,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return stats

    def _sync(self, ids: Sequence[str], batch: Batch, dead: list[DeadLetter]) -> SyncStats:
        stats, rejected = sync_isolating(
            self.conn,
            ids,
            self.settings,
            self.sinks,
            source=self.source.kind,
            position=batch.position or "",
        )
        dead.extend(rejected)
        return stats

    def _remember(self, batch: Batch) -> None:
        self.position = batch.position or self.position
        if batch.commit_ts:
            self.last_commit_ts = max(batch.commit_ts)
        self.last_batch_at = time.time()

    def _lag(self, batch: Batch | None) -> float:
        if batch is None or not batch.commit_ts:
            return 0.0
        return max(0.0, time.time() - max(batch.commit_ts))

    def _write_state(self, lag: float) -> None:
        value: IndexerState = {
            "source": self.source.kind,
            "position": self.position,
            "last_batch_at": iso_time(self.last_batch_at),
            "last_source_commit_at": iso_time(self.last_commit_ts),
            "lag_seconds": round(lag, 3),
            "max_lag_s": self.settings.max_lag_s,
            "stale": lag > self.settings.max_lag_s,
            "heartbeat_s": self.settings.indexer_heartbeat_s,
        }
        INDEXER.put(self.conn, value)

    def idle(self) -> None:
        """Caught up: say so (lag 0) now and then, and export slot/consumer lag."""
        now = time.monotonic()
        if now - self._last_idle < self.settings.indexer_heartbeat_s:
            return
        self._last_idle = now
        with self.conn.transaction():
            self._write_state(0.0)
        for sink in self.sinks:
            sink.write([], [])  # heartbeat: the API's lag check sees the engine is current
        metrics.LAG_SECONDS.set(0.0)
        self._gauges()

    def _gauges(self) -> None:
        """Retained WAL / consumer lag, at most every heartbeat period (they cost a query)."""
        now = time.monotonic()
        if now - self._last_gauges < self.settings.indexer_heartbeat_s:
            return
        self._last_gauges = now
        gauges = self.source.lag()
        if "retained_wal_bytes" in gauges:
            metrics.RETAINED_WAL.set(gauges["retained_wal_bytes"])
        if "consumer_lag" in gauges:
            metrics.CONSUMER_LAG.set(gauges["consumer_lag"])


class _Backoff:
    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.delay = 0.5

    def reset(self) -> None:
        self.delay = 0.5

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.ceiling)
        return delay


def _consume(
    source: Source,
    url: str,
    settings: Settings,
    stop: threading.Event,
    once: bool,
    backoff: _Backoff,
) -> None:
    source.open(stop, wait=not once)
    with psycopg.connect(url, application_name="patient-search-indexer") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # see sync_with_owners
        sinks = make_sinks(settings, conn)
        if source.needs_initial_sync():
            started = time.monotonic()
            count = resync_all(conn, settings, sinks, source.keepalive)
            source.mark_synced()
            log.info(
                "initial sync done",
                extra={"patients": count, "seconds": round(time.monotonic() - started, 2)},
            )
        writer = Writer(conn, settings, source, sinks)
        totals = collections.Counter[str]()
        last_summary = time.monotonic()
        while not stop.is_set():
            for batch in source.batches(settings.batch_size):
                stats = writer.write(batch)
                source.ack(batch)
                backoff.reset()
                totals.update(
                    events=batch.events, batches=1, upserted=stats.upserted, deleted=stats.deleted
                )
                if stop.is_set():
                    break
            if time.monotonic() - last_summary > _SUMMARY_EVERY_S and totals:
                log.info("indexer progress", extra={**totals, "position": writer.position})
                totals.clear()
                last_summary = time.monotonic()
            if stop.is_set() or (once and source.drained):
                break
            if source.drained:
                source.heartbeat()
                writer.idle()
                if source.kind == "logical":  # Kafka's poll already waited
                    stop.wait(settings.batch_timeout_ms / 1000)
        if totals:
            log.info("indexer stopping", extra={**totals, "position": writer.position})


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested; finishing the current batch", extra={"signal": signum})
        stop.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def drain(url: str, settings: Settings) -> None:
    """Write what the stream holds up to now, then return (no signals, no metrics server).

    After a full reindex: the slot was made before its snapshot and holds the WAL
    of the rebuild itself; reading through it here leaves an indexer started
    next with nothing but new changes. Raises SlotBusy when an indexer holds the
    slot (it is streaming already).
    """
    source = make_source(url, settings)
    try:
        _consume(source, url, settings, threading.Event(), True, _Backoff(1.0))
    finally:
        source.close()


def start(settings: Settings, *, once: bool = False) -> int:
    """The indexer's one entry point (`patient-search indexer`, `python -m indexer`):
    resolve the database, migrate (or check the schema), then run."""
    url = resolve_database_url(settings)
    migrate_or_check(url)
    os.environ["PATIENT_SEARCH_DATABASE_URL"] = url  # children (reindex workers) join it
    return run(settings.model_copy(update={"database_url": url}), once=once)


def run(settings: Settings, *, once: bool = False, stop: threading.Event | None = None) -> int:
    """Run the indexer until stopped (0), or drain pending changes and return with once=True."""
    from indexer.logical import SlotBusy

    stop = stop or threading.Event()
    previous = _install_signals(stop)
    metrics.serve(settings.indexer_metrics_port)
    backoff = _Backoff(settings.indexer_retry_max_s)
    drainer = None
    try:
        url = resolve_database_url(settings)
        drainer = None if once else start_drainer(settings, url)
        while not stop.is_set():
            source = make_source(url, settings)
            try:
                _consume(source, url, settings, stop, once, backoff)
                if once:
                    _flush_outbox(settings, url)
                return 0
            except SlotBusy as exc:
                log.error(str(exc))
                return 3
            except _retryable() as exc:
                delay = backoff.next()
                metrics.RETRIES.labels(type(exc).__name__).inc()
                log.warning(
                    "indexer error; resuming from the durable position",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                stop.wait(delay)
            finally:
                source.close()
        return 0
    finally:
        if drainer is not None:
            drainer.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _flush_outbox(settings: Settings, url: str) -> None:
    """--once: hand the queued changes to Meilisearch too, if it takes them in time."""
    if not settings.meili_url:
        return
    from indexer.meili_sink import MeiliDrainer

    drainer = MeiliDrainer.from_settings(settings, url)
    try:
        if not drainer.flush(settings.meili_task_timeout_s):
            log.warning("meilisearch did not take every queued change; the outbox keeps them")
    finally:
        drainer.stop()
