"""Rows of `patient_search.state`, and the reindex guard: how our processes coordinate.

The indexer reports its position and lag here (the API reads it for readiness
and engine choice), the Meilisearch sink its last write, and a rebuild
registers itself so that indexer batches record the patients they touch. Each
key is named once below with the shape of its value; no other module spells a
key or the table.

The reindex guard is the one protocol by which a rebuild (of the PostgreSQL
projection or of the Meilisearch index) stays consistent with a running
indexer:

1. an advisory lock: one rebuild at a time, across processes;
2. registration (row `reindex`) under a lock on `reindex_touched` that waits
   for indexer batches in flight; from its commit on, every batch records the
   ids it touched (`record_touched`, in the batch's own transaction);
3. the rebuild reads the source in one snapshot taken after registration;
4. `ReindexGuard.swap` takes the same lock again, hands over the touched ids
   (to be re-read from the current source into the new copy), and
   unregisters in the swap's transaction; an abort unregisters too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypedDict, TypeVar

import psycopg
from psycopg.types.json import Jsonb

_REINDEX_LOCK = 7_345_002  # advisory lock: one rebuild at a time


def iso_time(ts: float | None) -> str | None:
    """A Unix time as state values hold times: ISO 8601 in UTC (None stays None)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat() if ts is not None else None


class IndexerState(TypedDict, total=False):
    """Written by the indexer after every batch and on idle heartbeats."""

    source: str
    position: str | None
    last_batch_at: str | None
    last_source_commit_at: str | None
    lag_seconds: float
    max_lag_s: float
    stale: bool
    heartbeat_s: float


class MeiliState(TypedDict, total=False):
    """Written by the Meilisearch sink: last successful write, failing since when."""

    index: str
    failing_since: str | None
    last_write_at: str | None


class MeiliRebuildState(TypedDict, total=False):
    """A Meilisearch rebuild in progress: sink writes also go to `indexes`."""

    live: str
    indexes: list[str]


class ReindexState(TypedDict, total=False):
    """A registered rebuild: indexer batches record touched ids while it exists."""

    clinic_id: str | None
    engine: str


V = TypeVar("V")


class StateKey(Generic[V]):
    """One named row; `V` is the shape of its JSON value."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, conn: psycopg.Connection[Any]) -> V | None:
        row = conn.execute(
            "select value from patient_search.state where key = %s", (self.name,)
        ).fetchone()
        return row[0] if row else None

    def get_with_age(self, conn: psycopg.Connection[Any]) -> tuple[V, float] | None:
        """The value and the seconds since it was last written (a silent writer shows)."""
        row = conn.execute(
            "select value, extract(epoch from now() - updated_at)::float8 "
            "from patient_search.state where key = %s",
            (self.name,),
        ).fetchone()
        return (row[0], float(row[1])) if row else None

    def put(self, conn: psycopg.Connection[Any], value: V) -> None:
        """Replace the value."""
        conn.execute(
            "insert into patient_search.state (key, value) values (%s, %s) "
            "on conflict (key) do update set value = excluded.value, updated_at = now()",
            (self.name, Jsonb(value)),
        )

    def merge(self, conn: psycopg.Connection[Any], value: V) -> None:
        """Overwrite the given fields, keep the others."""
        conn.execute(
            "insert into patient_search.state (key, value) values (%s, %s) "
            "on conflict (key) do update set value = state.value || excluded.value, "
            "updated_at = now()",
            (self.name, Jsonb(value)),
        )

    def delete(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("delete from patient_search.state where key = %s", (self.name,))


INDEXER = StateKey[IndexerState]("indexer")
MEILI = StateKey[MeiliState]("meili")
MEILI_REBUILD = StateKey[MeiliRebuildState]("meili_rebuild")
REINDEX = StateKey[ReindexState]("reindex")


def read_many(conn: psycopg.Connection[Any], *keys: StateKey[Any]) -> dict[str, dict[str, Any]]:
    """Several rows in one query, by key name (absent rows are absent)."""
    rows = conn.execute(
        "select key, value from patient_search.state where key = any(%s)",
        ([k.name for k in keys],),
    ).fetchall()
    return {key: value or {} for key, value in rows}


# -- the reindex guard -------------------------------------------------------------


class ReindexBusy(RuntimeError):
    """Another rebuild holds the guard."""


def record_touched(conn: psycopg.Connection[Any], ids: Iterable[str]) -> None:
    """Indexer side, first in each batch's transaction: take the guard, record ids if needed.

    The row-exclusive lock makes a rebuild's registration and swap wait for this
    transaction (and this one for them), so no change slips between a rebuild's
    snapshot and its swap.
    """
    conn.execute("lock table patient_search.reindex_touched in row exclusive mode")
    conn.execute(
        """
        insert into patient_search.reindex_touched (patient_id)
        select unnest(%s::text[])
        where exists (select 1 from patient_search.state where key = %s)
        on conflict do nothing
        """,
        (list(ids), REINDEX.name),
    )


def lock_out_batches(conn: psycopg.Connection[Any]) -> None:
    """Until the caller's transaction ends, no indexer batch writes (they wait in
    `record_touched`), and none is half-written: the rebuild swap and `check --repair`
    then read the source after every batch before them and write before every batch
    after them, so they never undo a newer write."""
    conn.execute("lock table patient_search.reindex_touched in share row exclusive mode")


Hook = Callable[[psycopg.Connection[Any]], None]


class ReindexGuard:
    """A registered rebuild; `conn` is its own connection (not autocommit)."""

    def __init__(self, conn: psycopg.Connection[Any], on_release: Hook | None) -> None:
        self.conn = conn
        self._on_release = on_release
        self.released = False

    @contextlib.contextmanager
    def swap(self) -> Iterator[list[str]]:
        """One transaction with indexer batches held off: yields the touched ids; the
        caller re-reads them into its new copy and swaps; unregistered on commit."""
        with self.conn.transaction():
            lock_out_batches(self.conn)
            touched = [
                r[0]
                for r in self.conn.execute(
                    "select patient_id from patient_search.reindex_touched order by 1"
                )
            ]
            yield touched
            self._release()
        self.released = True

    def _release(self) -> None:
        if self._on_release is not None:
            self._on_release(self.conn)
        REINDEX.delete(self.conn)
        self.conn.execute("delete from patient_search.reindex_touched")

    def abort(self) -> None:
        self.conn.rollback()
        with self.conn.transaction():
            self._release()
        self.released = True


@contextlib.contextmanager
def reindex_guard(
    url: str,
    registration: ReindexState,
    *,
    on_register: Hook | None = None,
    on_release: Hook | None = None,
) -> Iterator[ReindexGuard]:
    """Hold the guard for a rebuild (raises ReindexBusy when another one runs).

    `on_register` runs in the registration transaction, `on_release` in the
    swap's transaction or, when the body raises or ends without a swap, in the
    abort's.
    """
    with psycopg.connect(url, autocommit=True) as holder:
        got = holder.execute("select pg_try_advisory_lock(%s)", (_REINDEX_LOCK,)).fetchone()
        if not got or not got[0]:
            raise ReindexBusy("another reindex is running")
        try:
            with psycopg.connect(url) as conn:
                with conn.transaction():
                    lock_out_batches(conn)
                    conn.execute("delete from patient_search.reindex_touched")
                    REINDEX.put(conn, registration)
                    if on_register is not None:
                        on_register(conn)
                guard = ReindexGuard(conn, on_release)
                try:
                    yield guard
                finally:
                    if not guard.released:  # raised, or left without a swap
                        guard.abort()
        finally:
            holder.execute("select pg_advisory_unlock(%s)", (_REINDEX_LOCK,))
