"""Rebuild the projection from the source without a moment of empty or partial results.

1. Register the rebuild (state row 'reindex'), waiting for in-flight indexer
   batches; from then on every indexer batch records the ids it touched.
2. Stream the source through a server-side cursor in one snapshot, build the
   documents and COPY them into a fresh table; build its indexes.
3. Swap under the reindex guard: re-sync the touched ids into the fresh table
   from the current source, then rename it into place (full rebuild) or
   replace that clinic's rows (one clinic), in one transaction.
Readers see the old projection until the swap commits, and no change made
while the rebuild ran is lost.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import psycopg
from psycopg import sql
from tqdm import tqdm

from core import term_counts
from core.database import fast_json
from core.documents import PatientDocument
from core.schema import (
    PROJECTION,
    PROJECTION_INDEX_SUFFIXES,
    SCHEMA,
    projection_indexes_ddl,
    projection_table_ddl,
)
from core.settings import Settings
from core.state import ReindexGuard, ReindexState, reindex_guard
from engines import pg_projection
from indexer import deadletters
from indexer.events import DeadLetter
from indexer.runner import Source, drain, make_source
from indexer.source import count_patients, fetch_patients, stream_patients
from indexer.sync import build_checked

log = logging.getLogger(__name__)

REBUILD = "patients_rebuild"
OWNERS = "contact_owner_rebuild"
NAME_KEYS = "name_keys_rebuild"

# Memory of the terms GIN build. Less is cheaper here: the build's sorted accumulator
# then fits the CPU caches better and is flushed more often (terms index over the 1M
# crowded projection, collated "C": 64MB 39.8 CPU-s, 16MB 36.5, the server's 512MB
# 49.9, serial; 41.5-49.5 vs 53.3 with 2 parallel workers).
GIN_BUILD_MEMORY = "64MB"


def reindex(
    url: str, settings: Settings, *, clinic_id: str | None = None, progress: bool = True
) -> int:
    """Rebuild the projection (all clinics, or one); returns the number of documents."""
    started = time.monotonic()
    registration: ReindexState = {"clinic_id": clinic_id, "engine": "postgres"}
    with reindex_guard(url, registration, on_release=_drop_rebuild_tables) as guard:
        # A full rebuild is the indexer's initial sync: the change stream is made ready
        # before the snapshot, so the indexer then streams from there instead of redoing
        # it. Under the guard: a second reindex started meanwhile must not drop and
        # remake the running one's slot (the changes between would be lost).
        stream = _prepare_stream(url, settings) if clinic_id is None else None
        filled = _build(url, guard.conn, settings, clinic_id, progress)
        swapping = time.monotonic()
        _swap(guard, settings, clinic_id, filled, stream=stream)
    log.info("reindex swapped in", extra={"seconds": _since(swapping)})
    if stream is not None and stream.kind == "logical":
        _catch_up_stream(url, settings)
    log.info(
        "reindex finished",
        extra={
            "documents": filled.total,
            "set_aside": len(filled.rejected),
            "seconds": round(time.monotonic() - started, 2),
        },
    )
    return filled.total


def _prepare_stream(url: str, settings: Settings) -> Source | None:
    """The indexer's change stream, ready before the snapshot; None (the indexer will
    then run its own initial sync) when it cannot be prepared."""
    stream = make_source(url, settings)
    try:
        stream.prepare_for_rebuild()
    except (psycopg.Error, RuntimeError) as exc:
        log.warning(
            "change stream not prepared; the indexer will re-check every patient at start",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        return None
    return stream


def _catch_up_stream(url: str, settings: Settings) -> None:
    """Read the slot up to now unless an indexer is already doing it (see runner.drain)."""
    from indexer.logical import SlotBusy

    started = time.monotonic()
    try:
        drain(url, settings)
    except SlotBusy:
        return
    except (psycopg.Error, RuntimeError, ConnectionError) as exc:
        log.warning(
            "change stream not caught up; the indexer will read it at start",
            extra={"error": type(exc).__name__},
        )
        return
    log.info("change stream caught up", extra={"seconds": _since(started)})


def _drop_rebuild_tables(conn: psycopg.Connection[Any]) -> None:
    """Leftovers of an aborted rebuild (after a swap there is nothing left to drop)."""
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, REBUILD)))
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, OWNERS)))
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, NAME_KEYS)))


def _build(
    url: str,
    conn: psycopg.Connection[Any],
    settings: Settings,
    clinic_id: str | None,
    progress: bool,
) -> _Filled:
    """Fill the rebuild tables from one snapshot, in parallel partitions, then index them."""
    with conn.transaction():
        _create_rebuild_tables(conn, full=clinic_id is None)
    with psycopg.connect(url) as holder:
        # One snapshot for every partition: the rebuild is a consistent picture.
        holder.execute("set transaction isolation level repeatable read, read only")
        row = holder.execute("select pg_export_snapshot()").fetchone()
        assert row is not None
        job = _Partition(
            url=url,
            snapshot=row[0],
            parts=settings.reindex_workers,
            schema=settings.source_schema,
            clinic_id=clinic_id,
            region=settings.default_region,
        )
        expected = count_patients(holder, schema=job.schema, clinic_id=clinic_id)
        with tqdm(
            total=expected,
            unit="patients",
            desc="reindex",
            disable=not progress,
            file=sys.stderr,
            smoothing=0.1,
        ) as bar:
            filling = time.monotonic()
            filled = _fill(job, bar.update)
        holder.commit()
    log.info("reindex filled", extra={"documents": filled.total, "seconds": _since(filling)})
    indexing = time.monotonic()
    _build_indexes(url, _index_lanes(full=clinic_id is None), workers=settings.reindex_workers)
    log.info("reindex indexes built", extra={"seconds": _since(indexing)})
    return filled


def _create_rebuild_tables(conn: psycopg.Connection[Any], *, full: bool) -> None:
    """The fresh projection; for a full rebuild also its contact owners and name keys,
    filled beside it by the same partitions (no second pass over the documents)."""
    _drop_rebuild_tables(conn)
    conn.execute(projection_table_ddl(REBUILD, primary_key=False))
    if full:
        conn.execute(
            sql.SQL("create table {} (contact_id text not null, patient_id text not null)").format(
                sql.Identifier(SCHEMA, OWNERS)
            )
        )
        conn.execute(
            sql.SQL("create table {} (like patient_search.name_keys including defaults)").format(
                sql.Identifier(SCHEMA, NAME_KEYS)
            )
        )


def _index_lanes(*, full: bool) -> tuple[list[list[sql.Composed]], list[sql.Composed]]:
    """The rebuild's index builds (and statistics) in two lanes of about equal length,
    the GIN index on terms alone in the first, then what must follow both.

    Lanes hold only locks that let each other run (CREATE INDEX takes SHARE): the
    primary key is built as a unique index and attached after both (ALTER TABLE ADD
    PRIMARY KEY, and ANALYZE, would wait for the other lane's build to end)."""
    rebuild = sql.Identifier(SCHEMA, REBUILD)
    pkey = sql.Identifier(f"{REBUILD}_pkey")
    terms, *others = projection_indexes_ddl(REBUILD)
    gin_lane: list[sql.Composed] = [
        sql.SQL("set maintenance_work_mem = {}").format(sql.Literal(GIN_BUILD_MEMORY)),
        terms,
        sql.SQL("reset maintenance_work_mem").format(),  # one lane for all on one core
    ]
    rest: list[sql.Composed] = [
        sql.SQL("create unique index {} on {} (id)").format(pkey, rebuild),
        *others,
    ]
    if full:
        keys = sql.Identifier(SCHEMA, NAME_KEYS)
        owners = sql.Identifier(SCHEMA, OWNERS)
        rest += [
            sql.SQL("alter table {} add constraint {} primary key (contact_id)").format(
                owners, sql.Identifier(f"{OWNERS}_pkey")
            ),
            sql.SQL("create index {} on {} (patient_id)").format(
                sql.Identifier(f"{OWNERS}_patient"), owners
            ),
            sql.SQL("alter table {} add primary key (clinic_id, term, id)").format(keys),
            sql.SQL("create index {} on {} (id)").format(sql.Identifier(f"{NAME_KEYS}_id"), keys),
            sql.SQL("analyze {}").format(keys),
        ]
    after = [
        sql.SQL("alter table {} add constraint {} primary key using index {}").format(
            rebuild, pkey, pkey
        ),
        # Statistics before the swap: the rename carries them, and the few rows the
        # swap re-syncs do not change them.
        sql.SQL("analyze {}").format(rebuild),
    ]
    return [gin_lane, rest], after


def _build_indexes(
    url: str, plan: tuple[list[list[sql.Composed]], list[sql.Composed]], *, workers: int
) -> None:
    """Each lane on a connection of its own, at once when there is more than one core."""
    lanes, after = plan

    def run(statements: list[sql.Composed]) -> None:
        with psycopg.connect(url, autocommit=True) as lane:
            for statement in statements:
                started = time.monotonic()
                lane.execute(statement)
                log.debug(
                    "reindex index step",
                    extra={"step": statement.as_string(lane)[:60], "seconds": _since(started)},
                )

    if workers <= 1:
        run([s for lane in lanes for s in lane] + after)
        return
    with ThreadPoolExecutor(len(lanes)) as pool:
        for done in [pool.submit(run, lane) for lane in lanes]:
            done.result()
    run(after)


def _copy_owners(conn: psycopg.Connection[Any], docs: list[PatientDocument]) -> None:
    copy_sql = "copy patient_search.contact_owner_rebuild (contact_id, patient_id) from stdin"
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for doc in docs:
            for contact_id in doc.contact_ids:
                copy.write_row((contact_id, doc.id))


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


@dataclass(frozen=True)
class _Partition:
    url: str
    snapshot: str
    parts: int
    schema: str
    clinic_id: str | None
    region: str


_progress: Any = None  # the workers' progress queue (set by the pool initializer)


def _init_worker(queue: Any) -> None:
    global _progress
    _progress = queue


@dataclass
class _Filled:
    """What a fill produced: documents written, patients set aside."""

    total: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: _Filled) -> None:
        self.total += other.total
        self.rejected += other.rejected


def _fill(job: _Partition, advance: Callable[[int], object]) -> _Filled:
    """Each partition reads, normalizes and COPYs on its own: the CPU-bound part runs on
    every core and nothing funnels through this process but progress counts."""
    if job.parts <= 1:
        return _fill_partition(job, 0, advance)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with ProcessPoolExecutor(
        job.parts, mp_context=ctx, initializer=_init_worker, initargs=(queue,)
    ) as pool:
        futures = [pool.submit(_fill_partition, job, k) for k in range(job.parts)]
        while not all(f.done() for f in futures):
            with contextlib.suppress(Empty):
                advance(queue.get(timeout=0.2))
        while not queue.empty():
            advance(queue.get())
        filled = _Filled()
        for future in futures:
            filled.add(future.result())
    return filled


def _fill_partition(
    job: _Partition, part: int, advance: Callable[[int], object] | None = None
) -> _Filled:
    with _young_collections_only() as collect:
        return _fill_batches(job, part, advance or _progress.put, collect)


@contextlib.contextmanager
def _young_collections_only() -> Iterator[Callable[[], object]]:
    """The cyclic garbage collector off for a fill, but for one young pass per batch.

    Left on, it ran every 700 allocations over the batch's live rows and documents
    (issue 11, 100k crowded rows, one partition's read + build + COPY spelling, seven
    alternating runs each: median 120 -> 106 us a row; building alone 76 -> 44 us).
    The fill's rows and documents hold no cycles (the young passes of a 100k fill found
    none), so reference counting frees them; the pass per batch frees any a library
    leaves."""
    gc.freeze()  # what the process held before: never garbage, never traversed again
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: gc.collect(0)
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()


def _fill_batches(
    job: _Partition, part: int, report: Callable[[int], object], collect: Callable[[], object]
) -> _Filled:
    filled = _Filled()
    with psycopg.connect(job.url) as reader, psycopg.connect(job.url) as writer:
        fast_json(reader)  # each patient's contacts arrive as json
        # A crash loses the rebuild anyway (it starts over): no need to wait for each
        # batch's commit to reach the disk.
        writer.execute("set synchronous_commit = off")
        writer.commit()
        reader.execute("set transaction isolation level repeatable read, read only")
        reader.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(job.snapshot)))
        for rows in stream_patients(
            reader,
            schema=job.schema,
            clinic_id=job.clinic_id,
            batch_size=2000,
            partition=(part, job.parts),
        ):
            docs, rejected = build_checked(rows, region=job.region)
            with writer.transaction():
                pg_projection.copy_documents(writer, docs, table=REBUILD)
                if job.clinic_id is None:
                    _copy_owners(writer, docs)
                    pg_projection.copy_name_keys(writer, docs, table=NAME_KEYS)
            filled.total += len(docs)
            filled.rejected += rejected
            report(len(rows))
            collect()
        reader.commit()
    return filled


def _swap(
    guard: ReindexGuard,
    settings: Settings,
    clinic_id: str | None,
    filled: _Filled,
    *,
    stream: Source | None = None,
) -> None:
    conn = guard.conn
    rebuild = sql.Identifier(SCHEMA, REBUILD)
    live = sql.Identifier(SCHEMA, PROJECTION)
    with guard.swap() as touched:
        rows = fetch_patients(conn, touched, schema=settings.source_schema)
        docs, rejected = build_checked(rows.values(), region=settings.default_region)
        if clinic_id is not None:
            docs = [d for d in docs if d.clinic_id == clinic_id]
        # Touched patients are re-read as they are now: gone, moved to another clinic,
        # or unindexable now all leave the rebuilt copy.
        pg_projection.delete_documents(conn, touched, table=REBUILD)
        pg_projection.copy_documents(conn, docs, table=REBUILD)
        if clinic_id is None:
            _catch_up_owners(conn, touched, docs)
            # Built beside the live tables; readers wait only for the renames.
            pg_projection.refresh_name_keys(conn, touched, source=REBUILD, target=NAME_KEYS)
            pg_projection.count_words(conn, keys=NAME_KEYS)
            term_counts.refresh_all(conn, table=REBUILD)
            _rename_into_place(conn, PROJECTION, REBUILD, PROJECTION_INDEX_SUFFIXES)
            _rename_into_place(conn, "contact_owner", OWNERS, ("pkey", "patient"))
            _rename_into_place(conn, "name_keys", NAME_KEYS, ("pkey", "id"))
            pg_projection.notify_changed(conn, [pg_projection.ALL_CLINICS])
            if stream is not None:
                stream.mark_rebuilt(conn)
        else:
            term_counts.refresh(conn, table=REBUILD, clinic_id=clinic_id)
            conn.execute(sql.SQL("delete from {} where clinic_id = %s").format(live), (clinic_id,))
            conn.execute(sql.SQL("insert into {} select * from {}").format(live, rebuild))
            conn.execute(sql.SQL("drop table {}").format(rebuild))
            _refresh_contact_owner(conn, clinic_id)
            conn.execute("delete from patient_search.name_keys where clinic_id = %s", (clinic_id,))
            pg_projection.fill_name_keys(conn, clinic_id=clinic_id)
            pg_projection.count_words(conn, clinic_id=clinic_id)
            pg_projection.notify_changed(conn, [clinic_id], every_patient=True)
        again = set(touched)
        aside = [(p, r) for p, r in filled.rejected if p not in again] + rejected
        deadletters.record(
            conn, [DeadLetter("reindex", "reindex", r, p, "document") for p, r in aside]
        )
    if clinic_id is not None:  # a full rebuild was analyzed before its swap
        conn.execute(sql.SQL("analyze {}").format(live))
    conn.commit()


def _rename_into_place(
    conn: psycopg.Connection[Any], live: str, rebuilt: str, index_suffixes: tuple[str, ...]
) -> None:
    old = f"{live}_old"
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, old)))
    _copy_access(conn, live, rebuilt)
    _rename_table(conn, live, old, index_suffixes)
    _rename_table(conn, rebuilt, live, index_suffixes)
    conn.execute(sql.SQL("drop table {}").format(sql.Identifier(SCHEMA, old)))


def _copy_access(conn: psycopg.Connection[Any], live: str, rebuilt: str) -> None:
    """The new table gets the live one's owner and grants (deploy/api-grants.sql gives the
    API role SELECT on the projection; a swap must not take it away)."""
    row = conn.execute(
        "select pg_get_userbyid(relowner) from pg_class where oid = to_regclass(%s)",
        (f"{SCHEMA}.{live}",),
    ).fetchone()
    if row is None:
        return
    target = sql.Identifier(SCHEMA, rebuilt)
    grants = conn.execute(
        "select a.privilege_type, a.grantee = 0, pg_get_userbyid(a.grantee), a.is_grantable "
        "from pg_class c, aclexplode(c.relacl) a "
        "where c.oid = to_regclass(%s) and a.grantee <> c.relowner",
        (f"{SCHEMA}.{live}",),
    ).fetchall()
    for privilege, public, grantee, grantable in grants:
        conn.execute(
            sql.SQL("grant {} on {} to {}{}").format(
                sql.SQL(privilege),  # from aclexplode: SELECT, INSERT, ... only
                target,
                sql.SQL("public") if public else sql.Identifier(grantee),
                sql.SQL(" with grant option" if grantable else ""),
            )
        )
    owner = conn.execute(
        "select pg_get_userbyid(relowner) from pg_class where oid = to_regclass(%s)",
        (f"{SCHEMA}.{rebuilt}",),
    ).fetchone()
    if owner is not None and owner[0] != row[0]:
        conn.execute(sql.SQL("alter table {} owner to {}").format(target, sql.Identifier(row[0])))


def _rename_table(
    conn: psycopg.Connection[Any], src: str, dst: str, index_suffixes: tuple[str, ...]
) -> None:
    conn.execute(
        sql.SQL("alter table {} rename to {}").format(
            sql.Identifier(SCHEMA, src), sql.Identifier(dst)
        )
    )
    for suffix in index_suffixes:
        conn.execute(
            sql.SQL("alter index if exists {} rename to {}").format(
                sql.Identifier(SCHEMA, f"{src}_{suffix}"), sql.Identifier(f"{dst}_{suffix}")
            )
        )


def _catch_up_owners(
    conn: psycopg.Connection[Any], touched: list[str], docs: list[PatientDocument]
) -> None:
    """Patients the indexer changed during the rebuild: their contacts as they are now."""
    conn.execute(
        "delete from patient_search.contact_owner_rebuild where patient_id = any(%s)", (touched,)
    )
    pairs = [(c, d.id) for d in docs for c in d.contact_ids]
    if pairs:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into patient_search.contact_owner_rebuild (contact_id, patient_id) "
                "values (%s, %s) "
                "on conflict (contact_id) do update set patient_id = excluded.patient_id",
                pairs,
            )


def _refresh_contact_owner(conn: psycopg.Connection[Any], clinic_id: str) -> None:
    """After a one-clinic swap: that clinic's contact owners, from its new documents."""
    live = sql.Identifier(SCHEMA, PROJECTION)
    conn.execute(
        sql.SQL(
            "delete from patient_search.contact_owner o using {} p "
            "where p.id = o.patient_id and p.clinic_id = %s"
        ).format(live),
        (clinic_id,),
    )
    conn.execute(
        sql.SQL(
            "insert into patient_search.contact_owner (contact_id, patient_id) "
            "select c, p.id from {} p, json_array_elements_text(p.doc->'contact_ids') c "
            "where p.clinic_id = %s "
            "on conflict (contact_id) do update set patient_id = excluded.patient_id"
        ).format(live),
        (clinic_id,),
    )
