"""Meilisearch beside the projection: a durable outbox, its drainer, and the zero-downtime rebuild.

The PostgreSQL projection never waits for Meilisearch. In each indexer batch's
transaction, `OutboxSink` records the changed patient ids in
`patient_search.meili_outbox` (commits with the projection, whatever state
Meilisearch is in). `MeiliDrainer`, a thread of the indexer, drains the outbox
in order: it reads the current documents of those ids from the projection,
writes them (and deletes the missing ones) to the live index and to any index
being rebuilt, awaits each task, and only then deletes the outbox rows it
read. So Meilisearch catches up when it returns, with nothing lost (rows stay
until written) and nothing resurrected (documents are read at drain time,
after the change that queued them; a later change queues a later row).

Errors go through engines.meili.classify_error:
- "rejected" (a task failed with `invalid_request`): the batch is retried one
  document at a time and only the refused ones become dead letters (ids and
  reason, no patient data);
- "unavailable" (outage, 5xx, timeout, canceled or system/internal task
  failure, and configuration errors such as a rotated key, logged as errors):
  the rows stay, the drainer backs off and retries; a task it timed out
  waiting for is waited for again by uid, never enqueued twice.

State row 'meili' (last successful write, failing since) and the age of the
oldest outbox row tell search_api.failover how far the index is behind.

Rebuild (`MeiliRebuild`, `rebuild_meili`): a new index with settings, filled
from a snapshot of the source, caught up with the patients touched meanwhile,
swapped in with swap-indexes, the old one deleted. While it runs, state row
'meili_rebuild' lists the new index and every drained write goes to it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import meilisearch
import psycopg
from meilisearch.errors import MeilisearchApiError

from core.database import WorkerConnection
from core.documents import PatientDocument
from core.settings import Settings
from core.state import (
    MEILI,
    MEILI_REBUILD,
    MeiliState,
    ReindexState,
    iso_time,
    reindex_guard,
)
from engines.meili import (
    EngineFailure,
    MeiliTaskFailed,
    check_version,
    classify_error,
    make_client,
)
from engines.meili_settings import (
    PRIMARY_KEY,
    InvalidDocumentId,
    encode_id,
    index_settings,
    meili_document,
    settings_mismatches,
    to_meili,
)
from engines.pg_projection import unscope_terms
from indexer import deadletters
from indexer.events import DeadLetter

log = logging.getLogger(__name__)

_STATE_EVERY_S = 1.0
_REENSURE_S = 60.0  # the drainer re-checks version, index and settings this often

__all__ = ["MeiliTaskFailed", "MeiliUnavailable"]


class MeiliUnavailable(ConnectionError):
    """Meilisearch did not do it (outage, timeout, configuration): retry, blame no document."""

    def __init__(self, failure: EngineFailure, detail: str = "") -> None:
        self.failure = failure
        super().__init__(f"meilisearch unavailable: {failure.reason}{detail}")


def _payload_key(*parts: Any) -> str:
    """Identity of a submission: the same target, operation and content."""
    raw = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class TaskWaiter:
    """Submit a task and wait for it; errors leave as MeiliUnavailable or MeiliTaskFailed.

    MeiliTaskFailed is raised only when classify_error calls it "rejected".
    A task not finished in time is remembered under its submission's identity
    (`key`): the retry of the same submission waits on that task uid again
    instead of enqueuing a duplicate behind a slow queue.
    """

    def __init__(self, client: meilisearch.Client, timeout_s: float) -> None:
        self.client = client
        self.timeout_ms = int(timeout_s * 1000)
        self.pending: dict[str, int] = {}

    def run(
        self, submit: Callable[..., Any], *args: Any, key: str | None = None, **kwargs: Any
    ) -> None:
        uid = self.pending.get(key) if key is not None else None
        try:
            if uid is None:
                uid = int(submit(*args, **kwargs).task_uid)
            task = self.client.wait_for_task(uid, timeout_in_ms=self.timeout_ms, interval_in_ms=25)
        except Exception as exc:
            if uid is not None and key is not None:
                self.pending[key] = uid  # enqueued: wait for this one next time
            raise _mapped(exc) from exc
        if key is not None:
            self.pending.pop(key, None)
            if len(self.pending) > 1000:  # submissions whose content changed meanwhile
                self.pending.clear()
        if task.status != "succeeded":
            raise _mapped(MeiliTaskFailed(task.uid, task.status, task.error))


def _mapped(exc: Exception) -> Exception:
    failure = classify_error(exc)
    if failure.kind == "rejected":
        return exc
    return MeiliUnavailable(failure, f" ({type(exc).__name__})")


class StateStore:
    """State rows of the sink, on a small autocommit connection of its own.

    Rebuild targets are read on every write (no cache): a rebuild's
    registration commits under the reindex guard before its snapshot, so a
    batch that starts after it must see it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = WorkerConnection(url, "patient-search-meili-sink")
        self._written_at = 0.0
        self._failing_since: float | None = None

    def close(self) -> None:
        self._db.close()

    def rebuild_targets(self) -> list[str]:
        value = MEILI_REBUILD.get(self._db.get())
        return list((value or {}).get("indexes") or [])

    def record(self, index_uid: str, *, ok: bool, force: bool = False) -> None:
        now = time.time()
        if ok:
            changed = self._failing_since is not None
            self._failing_since = None
        else:
            changed = self._failing_since is None
            self._failing_since = self._failing_since or now
        if not (force or changed or now - self._written_at >= _STATE_EVERY_S):
            return
        value: MeiliState = {"index": index_uid, "failing_since": iso_time(self._failing_since)}
        if ok:
            value["last_write_at"] = iso_time(now)
        MEILI.merge(self._db.get(), value)
        self._written_at = now


def apply_settings(
    client: meilisearch.Client, uid: str, waiter: TaskWaiter, *, budget_ms: int | None
) -> bool:
    """Check the version, create the index when missing, and update settings that differ.

    Compared first: an unchanged settings update would still be a task, and some
    settings changes make Meilisearch re-index every document. Returns True when
    the documents in the index cannot be trusted to have our shape: the index was
    just created, or its filterable attributes (fields our documents carry) changed.
    """
    created = False
    try:
        check_version(client)
        client.get_index(uid)
    except MeilisearchApiError as exc:
        if exc.code != "index_not_found":
            raise _mapped(exc) from exc
        waiter.run(client.create_index, uid, {"primaryKey": PRIMARY_KEY})
        created = True
    except Exception as exc:
        raise _mapped(exc) from exc
    wanted = index_settings(budget_ms=budget_ms)
    try:
        actual = dict(client.index(uid).get_settings())
    except Exception as exc:
        raise _mapped(exc) from exc
    mismatches = settings_mismatches(wanted, actual)
    if mismatches:
        waiter.run(client.index(uid).update_settings, wanted)
    return created or "filterableAttributes" in mismatches


class MeiliSink:
    """Writes documents to an index and any index being rebuilt; durable when it returns."""

    name = "meilisearch"

    def __init__(
        self,
        client: meilisearch.Client,
        index_uid: str,
        *,
        state: StateStore | None = None,
        batch_size: int = 1000,
        task_timeout_s: float = 60.0,
        budget_ms: int | None = None,
    ) -> None:
        self.client = client
        self.index_uid = index_uid
        self.state = state
        self.batch_size = batch_size
        self.waiter = TaskWaiter(client, task_timeout_s)
        self.budget_ms = budget_ms

    @classmethod
    def from_settings(cls, settings: Settings, database_url: str) -> MeiliSink:
        if not settings.meili_url:
            raise ValueError("PATIENT_SEARCH_MEILI_URL is not set")
        client = make_client(settings.meili_url, settings.meili_api_key, settings.meili_timeout_s)
        return cls(
            client,
            settings.meili_index,
            state=StateStore(database_url),
            batch_size=settings.meili_batch_size,
            task_timeout_s=settings.meili_task_timeout_s,
            budget_ms=settings.search_budget_ms,
        )

    def ensure_index(self) -> bool:
        """Settings before documents (adding would create a bare index); see apply_settings."""
        stale = apply_settings(self.client, self.index_uid, self.waiter, budget_ms=self.budget_ms)
        if self.state is not None:
            self.state.record(self.index_uid, ok=True, force=True)
        return stale

    def write(self, docs: Sequence[PatientDocument], deleted_ids: Sequence[str]) -> None:
        self.write_payload([to_meili(d) for d in docs], deleted_ids)

    def write_payload(self, payload: Sequence[dict[str, Any]], deleted_ids: Sequence[str]) -> None:
        """To the live index and to any index being rebuilt; empty input = heartbeat."""
        targets = [self.index_uid]
        if self.state is not None:
            targets += [t for t in self.state.rebuild_targets() if t != self.index_uid]
        try:
            for uid in targets:
                write_payload(self.waiter, self.client, uid, payload, deleted_ids, self.batch_size)
        except MeiliUnavailable:
            if self.state is not None:
                self.state.record(self.index_uid, ok=False)
            raise
        if self.state is not None:
            self.state.record(self.index_uid, ok=True)

    def close(self) -> None:
        if self.state is not None:
            self.state.close()


def write_documents(
    waiter: TaskWaiter,
    client: meilisearch.Client,
    uid: str,
    docs: Sequence[PatientDocument],
    deleted_ids: Sequence[str],
    batch_size: int,
) -> None:
    write_payload(waiter, client, uid, [to_meili(d) for d in docs], deleted_ids, batch_size)


def write_payload(
    waiter: TaskWaiter,
    client: meilisearch.Client,
    uid: str,
    payload: Sequence[dict[str, Any]],
    deleted_ids: Sequence[str],
    batch_size: int,
) -> None:
    index = client.index(uid)
    for start in range(0, len(payload), batch_size):
        chunk = list(payload[start : start + batch_size])
        key = _payload_key(uid, "add", chunk)
        waiter.run(index.add_documents, chunk, PRIMARY_KEY, key=key)
    if deleted_ids:
        keys: list[str | int] = [encode_id(i) for i in deleted_ids]
        with warnings.catch_warnings():
            # The client deprecates its id-list form, not the documented delete-batch route.
            warnings.simplefilter("ignore", DeprecationWarning)
            waiter.run(index.delete_documents, keys, key=_payload_key(uid, "delete", keys))


# -- the outbox -------------------------------------------------------------------


class OutboxSink:
    """Sink protocol, on the indexer's own connection: queue ids in the batch's transaction."""

    name = "meilisearch-outbox"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def write(self, docs: Sequence[PatientDocument], deleted_ids: Sequence[str]) -> None:
        ids = sorted({d.id for d in docs} | set(deleted_ids))
        if ids:
            self.conn.execute(
                "insert into patient_search.meili_outbox (patient_id) select unnest(%s::text[])",
                (ids,),
            )

    def close(self) -> None:
        pass


def requeue_all(conn: psycopg.Connection[Any]) -> None:
    """Queue every patient of the projection: the index is new or its documents' shape changed.

    Queued as of the epoch, so the lag check keeps searches on PostgreSQL until
    the index holds them all.
    """
    conn.execute(
        "insert into patient_search.meili_outbox (patient_id, enqueued_at) "
        "select id, 'epoch' from patient_search.patients order by id"
    )
    log.info("meilisearch index new or reshaped; every patient queued for it")


def projection_payload(
    conn: psycopg.Connection[Any], ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Meilisearch documents of these ids as the projection holds them now; absent = deleted."""
    rows = conn.execute(
        "select id, clinic_id, active, terms, doc from patient_search.patients where id = any(%s)",
        (list(ids),),
    ).fetchall()
    payload = [
        meili_document(
            pid,
            clinic,
            active,
            unscope_terms(clinic, terms),
            doc.get("patient") or {},
            doc.get("match") or {},
        )
        for pid, clinic, active, terms, doc in rows
    ]
    found = {r[0] for r in rows}
    return payload, [i for i in ids if i not in found]


class MeiliDrainer:
    """Drains the outbox into Meilisearch, in order, on a thread of the indexer."""

    def __init__(
        self,
        url: str,
        sink: MeiliSink,
        *,
        batch_size: int = 1000,
        idle_s: float = 0.1,
        retry_max_s: float = 30.0,
    ) -> None:
        self.url = url
        self.sink = sink
        self.batch_size = batch_size
        self.idle_s = idle_s
        self.retry_max_s = retry_max_s
        self._db = WorkerConnection(url, "patient-search-meili-drainer")
        self._ensured_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, url: str) -> MeiliDrainer:
        return cls(
            url,
            MeiliSink.from_settings(settings, url),
            batch_size=settings.meili_batch_size,
            idle_s=settings.batch_timeout_ms / 1000,
            retry_max_s=settings.indexer_retry_max_s,
        )

    def drain_once(self) -> int:
        """One batch of the outbox, oldest first; returns the rows done (0: empty)."""
        conn = self._db.get()
        if time.monotonic() - self._ensured_at > _REENSURE_S:
            # Again now and then: an index deleted or recreated bare (adding documents
            # to a missing index creates one without our settings) is caught here.
            if self.sink.ensure_index():
                requeue_all(conn)
            self._ensured_at = time.monotonic()
        rows = conn.execute(
            "select seq, patient_id from patient_search.meili_outbox order by seq limit %s",
            (self.batch_size,),
        ).fetchall()
        if not rows:
            return 0
        position = str(rows[-1][0])
        ids = self._storable(conn, sorted({r[1] for r in rows}), position)
        payload, deleted = projection_payload(conn, ids)
        try:
            self.sink.write_payload(payload, deleted)
        except MeiliTaskFailed:
            self._isolate(conn, payload, deleted, position=position)
        # Only the rows read: a change queued meanwhile keeps its row for the next round.
        conn.execute(
            "delete from patient_search.meili_outbox where seq = any(%s)", ([r[0] for r in rows],)
        )
        return len(rows)

    def _storable(
        self, conn: psycopg.Connection[Any], ids: Sequence[str], position: str
    ) -> list[str]:
        """Ids Meilisearch can hold; one too long even encoded becomes a dead letter."""
        keep: list[str] = []
        refused: list[DeadLetter] = []
        for pid in ids:
            try:
                encode_id(pid)
                keep.append(pid)
            except InvalidDocumentId:
                reason = "document rejected: id too long for meilisearch"
                refused.append(DeadLetter("meilisearch", position, reason, pid, "document"))
        deadletters.record(conn, refused)
        return keep

    def _isolate(
        self,
        conn: psycopg.Connection[Any],
        payload: Sequence[dict[str, Any]],
        deleted: Sequence[str],
        position: str,
    ) -> None:
        """A batch was refused: one document at a time; the refused ones become dead letters."""
        log.warning(
            "meilisearch refused a batch; isolating documents", extra={"docs": len(payload)}
        )
        self.sink.write_payload([], deleted)
        refused: list[DeadLetter] = []
        for doc in payload:
            try:
                self.sink.write_payload([doc], [])
            except MeiliTaskFailed as exc:
                pid = str(doc["patient"].get("id") or doc[PRIMARY_KEY])
                refused.append(
                    DeadLetter(
                        "meilisearch", position, f"document rejected: {exc.code}", pid, "document"
                    )
                )
        deadletters.record(conn, refused)

    def flush(self, timeout_s: float) -> bool:
        """Drain until empty (indexer --once); False when Meilisearch could not take it."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.drain_once() == 0:
                    return True
        except MeiliUnavailable as exc:
            _log_unavailable(exc.failure)
        return False

    def run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                done = self.drain_once()
                delay = 0.5
                if not done:
                    self._stop.wait(self.idle_s)
                continue
            except MeiliUnavailable as exc:
                _log_unavailable(exc.failure)
                self._ensured_at = float("-inf")  # check version and settings again first
                if self.sink.state is not None:
                    self._record_failure()
            except psycopg.Error as exc:
                log.warning("outbox not readable", extra={"error": type(exc).__name__})
                self._db.close()
            except Exception as exc:  # never die: the outbox would grow unseen
                log.error("meilisearch drainer failed", extra={"error": type(exc).__name__})
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max_s)

    def _record_failure(self) -> None:
        try:
            if self.sink.state is not None:
                self.sink.state.record(self.sink.index_uid, ok=False)
        except psycopg.Error:
            pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="meili-drainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A drain cut short leaves its rows in the outbox: redone by the next indexer.
            self._thread.join(timeout=5)
        self._db.close()
        self.sink.close()


def _log_unavailable(failure: EngineFailure) -> None:
    if failure.misconfigured:
        log.error(
            "meilisearch refuses our requests: check its key, version and index; "
            "the outbox keeps every change meanwhile",
            extra={"reason": failure.reason},
        )
    else:
        log.warning("meilisearch unavailable; retrying", extra={"reason": failure.reason})


# -- zero-downtime rebuild ------------------------------------------------------


class MeiliRebuild:
    """Hooks for a rebuild driven by a reindex: begin, add, catch_up, finish (or abort).

    `begin` must be called inside the reindex's registration (under the reindex
    guard) so that indexer batches from then on reach the new index too;
    `catch_up` takes the touched patients re-read at swap time; `finish` swaps.
    """

    def __init__(
        self,
        client: meilisearch.Client,
        live_uid: str,
        *,
        task_timeout_s: float = 600.0,
        batch_size: int = 5000,
        budget_ms: int | None = None,
    ) -> None:
        self.client = client
        self.live_uid = live_uid
        self.new_uid = f"{live_uid}__rebuild"
        self.waiter = TaskWaiter(client, task_timeout_s)
        self.batch_size = batch_size
        self.budget_ms = budget_ms

    def prepare(self) -> None:
        """A fresh, empty new index with our settings (a leftover from a crash is dropped)."""
        self._delete_index(self.new_uid)
        apply_settings(self.client, self.live_uid, self.waiter, budget_ms=self.budget_ms)
        apply_settings(self.client, self.new_uid, self.waiter, budget_ms=self.budget_ms)

    def register(self, conn: psycopg.Connection[Any]) -> None:
        """In the caller's transaction: from its commit on, sink writes reach the new index."""
        MEILI_REBUILD.put(conn, {"live": self.live_uid, "indexes": [self.new_uid]})

    def add(self, docs: Sequence[PatientDocument]) -> None:
        write_documents(self.waiter, self.client, self.new_uid, docs, (), self.batch_size)

    def catch_up(self, docs: Sequence[PatientDocument], deleted_ids: Sequence[str]) -> None:
        write_documents(self.waiter, self.client, self.new_uid, docs, deleted_ids, self.batch_size)

    def swap(self) -> None:
        """Atomic in Meilisearch: readers see the old index, then the new one."""
        self.waiter.run(self.client.swap_indexes, [{"indexes": [self.live_uid, self.new_uid]}])

    def unregister(self, conn: psycopg.Connection[Any]) -> None:
        """Under the reindex guard, so no in-flight batch still writes to the old index."""
        MEILI_REBUILD.delete(conn)

    def drop_old(self) -> None:
        """After the swap the rebuild uid holds the old documents."""
        self._delete_index(self.new_uid)

    def _delete_index(self, uid: str) -> None:
        try:
            self.waiter.run(self.client.delete_index, uid)
        except MeiliTaskFailed as exc:
            if exc.code != "index_not_found":
                raise


def rebuild_meili(
    url: str,
    settings: Settings,
    *,
    client: meilisearch.Client | None = None,
    progress: bool = True,
) -> int:
    """Rebuild the Meilisearch index alone, without a moment of empty or partial results.

    Uses the PostgreSQL reindex's guard: the 'reindex' registration makes every
    indexer batch record the patients it touched, and taking the guard lock
    waits for batches in flight. Order: prepare the new index; register (new
    index listed for the sink, touched-ids recording on); fill from one source
    snapshot; under the guard, re-read the touched patients into the new index;
    swap; unregister; drop the old index.
    """
    from tqdm import tqdm

    from indexer.source import count_patients, stream_patients
    from indexer.sync import load_documents

    if not settings.meili_url:
        raise ValueError("PATIENT_SEARCH_MEILI_URL is not set")
    client = client or make_client(
        settings.meili_url, settings.meili_api_key, settings.meili_timeout_s
    )
    rebuild = MeiliRebuild(
        client,
        settings.meili_index,
        task_timeout_s=settings.meili_task_timeout_s * 10,
        batch_size=settings.meili_batch_size,
        budget_ms=settings.search_budget_ms,
    )
    rebuild.prepare()
    registration: ReindexState = {"clinic_id": None, "engine": "meilisearch"}
    with reindex_guard(
        url, registration, on_register=rebuild.register, on_release=rebuild.unregister
    ) as guard:
        total = _fill(url, settings, rebuild, progress, tqdm, stream_patients, count_patients)
        with guard.swap() as touched:
            docs, deleted = load_documents(
                guard.conn, touched, schema=settings.source_schema, region=settings.default_region
            )
            rebuild.catch_up(docs, deleted)
            rebuild.swap()
    rebuild.drop_old()
    return total


def _fill(
    url: str,
    settings: Settings,
    rebuild: MeiliRebuild,
    progress: bool,
    tqdm: Any,
    stream_patients: Any,
    count_patients: Any,
) -> int:
    from core.documents import build_document

    total = 0
    with psycopg.connect(url) as reader:
        reader.execute("set transaction isolation level repeatable read, read only")
        expected = count_patients(reader, schema=settings.source_schema, clinic_id=None)
        batches: Iterable[list[dict[str, Any]]] = stream_patients(
            reader, schema=settings.source_schema, clinic_id=None, batch_size=5000
        )
        with tqdm(
            total=expected, unit="patients", desc="meili", disable=not progress, file=sys.stderr
        ) as bar:
            for rows in batches:
                # Meilisearch's own indexing is the slow part here, not normalizing.
                docs = [
                    build_document(r, r["contacts"], region=settings.default_region) for r in rows
                ]
                rebuild.add(docs)
                total += len(docs)
                bar.update(len(docs))
        reader.commit()
    return total
