"""PostgreSQL logical decoding source: publication, slot, peek, write, then advance.

The slot only moves after the batch is committed (`ack`), so a crash at any
point replays from the last durable position: never a consuming `get` before
the write. Peeks are read through a server-side cursor so a huge transaction
or backlog never has to fit in memory; a batch cut inside a transaction is
written but leaves the slot where it was.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from core.settings import Settings
from indexer.events import Batch, Change, DeadLetter
from indexer.pgoutput import Begin, Commit, Decoder, ProtocolError, format_lsn

log = logging.getLogger(__name__)

_LOCK_CLASS = 7_345_010  # advisory lock namespace: (class, hashtext(slot))
INITIAL_SYNC = "initial-sync"
REBUILT = "rebuilt"  # a full reindex built the projection from a snapshot taken after the slot
# A transaction bigger than this many batches is written in pieces before its commit arrives.
_SPLIT_FACTOR = 4
_ONCE_LOCK_WAIT_S = 5.0


class SlotBusy(RuntimeError):
    """Another indexer holds this slot's advisory lock."""


class LogicalSource:
    kind = "logical"

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.slot = settings.slot_name
        self.publication = settings.publication_name
        self.schema = settings.source_schema
        self.checkpoint_key = f"logical:{self.slot}"
        self.decoder = Decoder(self.schema)
        self.drained = False
        self._control: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._idle_flush_lsn: str | None = None
        self._last_heartbeat = 0.0

    # -- lifecycle -------------------------------------------------------

    def open(self, stop: threading.Event, *, wait: bool = True) -> None:
        """Connect, lock the slot, create publication and slot when missing.

        wait=False (--once) still waits a few seconds: the backend of an indexer
        that was just killed may hold the lock until the server notices.
        """
        self._control = psycopg.connect(
            self.url, autocommit=True, application_name="patient-search-indexer"
        )
        self._lock(stop, timeout=None if wait else _ONCE_LOCK_WAIT_S)
        self._ensure_publication()
        if self._ensure_slot():
            with self.control.transaction():
                self._set_checkpoint(INITIAL_SYNC)
        self._reader = psycopg.connect(self.url, application_name="patient-search-indexer")
        self.decoder = Decoder(self.schema)

    def close(self) -> None:
        for conn in (self._reader, self._control):
            if conn is not None:
                with contextlib.suppress(Exception):  # a dead connection: nothing to save
                    conn.close()
        self._reader = self._control = None

    @property
    def control(self) -> psycopg.Connection[Any]:
        assert self._control is not None, "source not open"
        return self._control

    @property
    def reader(self) -> psycopg.Connection[Any]:
        assert self._reader is not None, "source not open"
        return self._reader

    def _try_lock(self) -> bool:
        row = self.control.execute(
            "select pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, self.slot)
        ).fetchone()
        return bool(row and row[0])

    def _lock(self, stop: threading.Event, *, timeout: float | None) -> None:
        """Session advisory lock: released by the server if this process dies."""
        warned = 0.0
        started = time.monotonic()
        while True:
            if self._try_lock():
                return
            expired = timeout is not None and time.monotonic() - started > timeout
            if expired or stop.is_set():
                raise SlotBusy(f"another indexer is consuming replication slot {self.slot!r}")
            if time.monotonic() - warned > 30:
                log.warning("slot held by another indexer; waiting", extra={"slot": self.slot})
                warned = time.monotonic()
            stop.wait(1.0)

    def _ensure_publication(self) -> None:
        tables = [sql.Identifier(self.schema, t) for t in ("patients", "patient_contacts")]
        pub = sql.Identifier(self.publication)
        row = self.control.execute(
            "select count(*) from pg_publication where pubname = %s", (self.publication,)
        ).fetchone()
        if not row or not row[0]:
            self.control.execute(
                sql.SQL("create publication {} for table {}").format(
                    pub, sql.SQL(", ").join(tables)
                )
            )
            log.info("publication created", extra={"publication": self.publication})
            return
        present = {
            r[0]
            for r in self.control.execute(
                "select tablename from pg_publication_tables "
                "where pubname = %s and schemaname = %s",
                (self.publication, self.schema),
            )
        }
        for name in ("patients", "patient_contacts"):
            if name not in present:
                self.control.execute(
                    sql.SQL("alter publication {} add table {}").format(
                        pub, sql.Identifier(self.schema, name)
                    )
                )

    def _ensure_slot(self) -> bool:
        """Create the slot when missing; True when created (an initial sync is due).

        A slot PostgreSQL invalidated (`wal_status` lost: more WAL than
        max_slot_wal_keep_size piled up while no indexer read it) streams nothing
        again and its changes are gone: it is dropped and made anew, and the initial
        sync re-checks every patient, so no change is lost for good."""
        row = self.control.execute(
            "select plugin, database = current_database(), wal_status = 'lost' "
            "from pg_replication_slots where slot_name = %s",
            (self.slot,),
        ).fetchone()
        if row is not None:
            if row[0] != "pgoutput" or not row[1]:
                raise RuntimeError(
                    f"replication slot {self.slot!r} exists with another plugin or database"
                )
            if not row[2]:
                return False
            log.error(
                "replication slot lost (WAL removed before it was read); recreating it "
                "and re-checking every patient",
                extra={"slot": self.slot},
            )
            self.control.execute("select pg_drop_replication_slot(%s)", (self.slot,))
        self.control.execute(
            "select pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,)
        )
        log.info("replication slot created", extra={"slot": self.slot})
        return True

    def prepare_for_rebuild(self) -> None:
        """Before a full reindex takes its snapshot: the slot exists, so every change
        committed after the snapshot stays in the stream for the indexer.

        An indexer holding the slot keeps it; one that finds the slot marked
        `initial-sync` (created here, or left by a rebuild that failed) re-checks
        everything unless `mark_rebuilt` ran in the rebuild's swap.
        """
        self._control = psycopg.connect(self.url, autocommit=True)
        try:
            if not self._try_lock():
                return  # a running indexer owns the slot (and created it)
            self._ensure_publication()
            if self.settings.meili_url is None:
                self._drop_unread_slot()
            if self._ensure_slot():
                self._set_checkpoint(INITIAL_SYNC)
        finally:
            self.close()

    def _drop_unread_slot(self) -> None:
        """No indexer reads the slot (this process holds its lock), and the rebuild's
        snapshot, taken after a new slot exists, holds every change the old one kept: a
        new slot starts at now. Kept, the old one keeps the WAL it lags by, and the
        rebuild's own (about 17 GB at 1M) pushed such a slot past max_slot_wal_keep_size
        twice in a row: PostgreSQL dropped its WAL and the catch-up re-checked every
        patient. With Meilisearch configured the old changes must still reach it: kept."""
        row = self.control.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
            "where slot_name = %s and database = current_database() and plugin = 'pgoutput' "
            "and not active",
            (self.slot,),
        ).fetchone()
        if row is not None:
            log.info(
                "unread replication slot dropped before the rebuild", extra={"slot": self.slot}
            )

    def keepalive(self) -> None:
        return None  # the slot waits for us as long as it takes

    def mark_rebuilt(self, conn: psycopg.Connection[Any]) -> None:
        """In the swap of a full reindex: its projection is the initial sync."""
        conn.execute(
            "update patient_search.checkpoints set position = %s, updated_at = now() "
            "where source = %s and position = %s",
            (REBUILT, self.checkpoint_key, INITIAL_SYNC),
        )

    # -- checkpoints -----------------------------------------------------

    def _set_checkpoint(self, position: str, conn: psycopg.Connection[Any] | None = None) -> None:
        (conn or self.control).execute(
            "insert into patient_search.checkpoints (source, position) values (%s, %s) "
            "on conflict (source) do update set position = excluded.position, updated_at = now()",
            (self.checkpoint_key, position),
        )

    def needs_initial_sync(self) -> bool:
        row = self.control.execute(
            "select position from patient_search.checkpoints where source = %s",
            (self.checkpoint_key,),
        ).fetchone()
        return row is None or row[0] == INITIAL_SYNC

    def record_checkpoint(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Informational (the slot is the truth); written in the batch's transaction."""
        if batch.position:
            self._set_checkpoint(batch.position, conn)

    def mark_synced(self) -> None:
        row = self.control.execute(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s",
            (self.slot,),
        ).fetchone()
        self._set_checkpoint(row[0] if row and row[0] else "synced")

    # -- reading ---------------------------------------------------------

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """One peek round, cut into batches at commit boundaries."""
        limit = self.settings.indexer_peek_changes
        flush = self.control.execute("select pg_current_wal_flush_lsn()::text").fetchone()
        rows = 0
        batch = Batch()
        in_tx = False
        query = (
            "select lsn::text, data from pg_logical_slot_peek_binary_changes("
            "%s, NULL, %s, 'proto_version', '1', 'publication_names', %s)"
        )
        try:
            with self.reader.cursor(name="patient_search_peek") as cur:
                cur.itersize = 2000
                cur.execute(query, (self.slot, limit, self.publication))
                for lsn, data in cur:
                    rows += 1
                    batch.events += 1
                    try:
                        items = self.decoder.decode(data, lsn)
                    except ProtocolError as exc:
                        # Skipping a change could lose it: record it and re-check everyone.
                        batch.dead.append(DeadLetter("logical", lsn, f"undecodable: {exc}"[:200]))
                        batch.changes.append(Change("patients", "truncate", position=lsn))
                        continue
                    for item in items:
                        if isinstance(item, Change):
                            batch.changes.append(item)
                        elif isinstance(item, Begin):
                            in_tx = True
                            batch.xids.add(item.xid)
                        elif isinstance(item, Commit):
                            in_tx = False
                            batch.ack = format_lsn(item.end_lsn)
                            batch.position = batch.ack
                            batch.commit_ts.append(item.commit_ts)
                    full = len(batch) >= batch_size
                    if full and (not in_tx or len(batch) >= batch_size * _SPLIT_FACTOR):
                        yield batch
                        batch = Batch(ack=batch.ack, position=batch.position) if in_tx else Batch()
            if batch.events:
                yield batch
        finally:
            self.reader.rollback()
        self.drained = rows < limit
        self._idle_flush_lsn = flush[0] if rows == 0 and flush else None

    def ack(self, batch: Batch) -> None:
        """The batch is committed: let the slot release the WAL behind it."""
        if batch.ack:
            self.control.execute(
                "select pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, batch.ack)
            )

    def heartbeat(self) -> bool:
        """Quiet database: advance to the flush LSN seen before an empty peek.

        Every commit before that LSN was decoded by the peek and it returned
        nothing, so nothing of ours is skipped; in-flight transactions commit
        later and stay ahead of the slot.
        """
        now = time.monotonic()
        if self._idle_flush_lsn is None or now - self._last_heartbeat < (
            self.settings.indexer_heartbeat_s
        ):
            return False
        self._last_heartbeat = now
        self.control.execute(
            "select pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, self._idle_flush_lsn)
        )
        self._idle_flush_lsn = None
        return True

    def lag(self) -> dict[str, float]:
        row = self.control.execute(
            "select coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::float8 "
            "from pg_replication_slots where slot_name = %s",
            (self.slot,),
        ).fetchone()
        return {"retained_wal_bytes": float(row[0]) if row else 0.0}
