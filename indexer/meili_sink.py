"""Meilisearch as a Sink of the indexer, and its zero-downtime rebuild.

`MeiliSink.write` is durable when it returns: each batch is an add-or-replace
task (and a delete task), and each task is awaited. Outcomes, for the indexer:
- a task that Meilisearch processed and failed (a rejected document) raises
  MeiliTaskFailed: the indexer rolls back, isolates the patient and sends it
  to the dead-letter table; the checkpoint never passes an unwritten batch;
- Meilisearch unreachable, answering 5xx, or not finishing a task in time
  raises MeiliUnavailable, a ConnectionError, which the indexer retries with
  backoff from its durable position (nothing dead-lettered for an outage).

The sink also keeps state row 'meili' (last successful write, failing since)
that search_api.failover reads to decide whether the index is lagging.

Rebuild (`MeiliRebuild`, `rebuild_meili`): a new index with settings, filled
from a snapshot of the source, caught up with the patients touched meanwhile,
swapped in with swap-indexes, the old one deleted. While it runs, state row
'meili_rebuild' lists the new index and every sink write goes to it too.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import meilisearch
import psycopg
from meilisearch.errors import (
    MeilisearchApiError,
    MeilisearchCommunicationError,
    MeilisearchTimeoutError,
)

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
from engines.meili import make_client
from engines.meili_settings import PRIMARY_KEY, encode_id, index_settings, to_meili

log = logging.getLogger(__name__)

_STATE_EVERY_S = 1.0


class MeiliUnavailable(ConnectionError):
    """Meilisearch did not answer, or not in time: retry later, dead-letter nothing."""


class MeiliTaskFailed(RuntimeError):
    """Meilisearch processed a task and failed it: the documents were rejected."""


def _unavailable(exc: Exception) -> Exception:
    if isinstance(exc, MeilisearchCommunicationError | MeilisearchTimeoutError):
        return MeiliUnavailable(f"meilisearch unreachable: {type(exc).__name__}")
    if isinstance(exc, MeilisearchApiError) and (
        exc.status_code >= 500 or exc.status_code in (408, 429)
    ):
        return MeiliUnavailable(f"meilisearch answered {exc.status_code}")
    return exc


class TaskWaiter:
    """Submit a task and wait for it; failures mapped to the two outcomes above."""

    def __init__(self, client: meilisearch.Client, timeout_s: float) -> None:
        self.client = client
        self.timeout_ms = int(timeout_s * 1000)

    def run(self, submit: Any, *args: Any, **kwargs: Any) -> None:
        try:
            info = submit(*args, **kwargs)
            task = self.client.wait_for_task(
                info.task_uid, timeout_in_ms=self.timeout_ms, interval_in_ms=25
            )
        except (MeilisearchCommunicationError, MeilisearchTimeoutError, MeilisearchApiError) as e:
            raise _unavailable(e) from e
        if task.status != "succeeded":
            code = (task.error or {}).get("code", task.status)
            raise MeiliTaskFailed(f"meilisearch task {task.uid} {task.status}: {code}")


class StateStore:
    """State rows of the sink, on a small autocommit connection of its own.

    Rebuild targets are read on every write (no cache): a rebuild's
    registration commits under the reindex guard before its snapshot, so a
    batch that starts after it must see it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._written_at = 0.0
        self._failing_since: float | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url, autocommit=True, application_name="patient-search-meili-sink"
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def rebuild_targets(self) -> list[str]:
        value = MEILI_REBUILD.get(self._connection())
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
        MEILI.merge(self._connection(), value)
        self._written_at = now


def apply_settings(
    client: meilisearch.Client, uid: str, waiter: TaskWaiter, *, search_cutoff_ms: int | None
) -> None:
    """Create the index when missing (primary key `pk`), then apply our settings; both awaited."""
    try:
        client.get_index(uid)
    except MeilisearchApiError as exc:
        if exc.code != "index_not_found":
            raise _unavailable(exc) from exc
        waiter.run(client.create_index, uid, {"primaryKey": PRIMARY_KEY})
    except (MeilisearchCommunicationError, MeilisearchTimeoutError) as exc:
        raise _unavailable(exc) from exc
    waiter.run(client.index(uid).update_settings, index_settings(search_cutoff_ms=search_cutoff_ms))


class MeiliSink:
    """Sink protocol: `name`, `write(docs, deleted_ids)` durable or raise."""

    name = "meilisearch"

    def __init__(
        self,
        client: meilisearch.Client,
        index_uid: str,
        *,
        state: StateStore | None = None,
        batch_size: int = 1000,
        task_timeout_s: float = 60.0,
        search_cutoff_ms: int | None = None,
    ) -> None:
        self.client = client
        self.index_uid = index_uid
        self.state = state
        self.batch_size = batch_size
        self.waiter = TaskWaiter(client, task_timeout_s)
        self.search_cutoff_ms = search_cutoff_ms

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
            search_cutoff_ms=settings.search_budget_ms,
        )

    def ensure_index(self) -> None:
        """At indexer start: settings before documents (adding would create a bare index)."""
        apply_settings(
            self.client, self.index_uid, self.waiter, search_cutoff_ms=self.search_cutoff_ms
        )

    def write(self, docs: Sequence[PatientDocument], deleted_ids: Sequence[str]) -> None:
        """Write to the live index and to any index being rebuilt; empty input = heartbeat."""
        targets = [self.index_uid]
        if self.state is not None:
            targets += [t for t in self.state.rebuild_targets() if t != self.index_uid]
        try:
            for uid in targets:
                write_documents(self.waiter, self.client, uid, docs, deleted_ids, self.batch_size)
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
    index = client.index(uid)
    payload = [to_meili(d) for d in docs]
    for start in range(0, len(payload), batch_size):
        waiter.run(index.add_documents, payload[start : start + batch_size], PRIMARY_KEY)
    if deleted_ids:
        keys: list[str | int] = [encode_id(i) for i in deleted_ids]
        with warnings.catch_warnings():
            # The client deprecates its id-list form, not the documented delete-batch route.
            warnings.simplefilter("ignore", DeprecationWarning)
            waiter.run(index.delete_documents, keys)


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
        search_cutoff_ms: int | None = None,
    ) -> None:
        self.client = client
        self.live_uid = live_uid
        self.new_uid = f"{live_uid}__rebuild"
        self.waiter = TaskWaiter(client, task_timeout_s)
        self.batch_size = batch_size
        self.search_cutoff_ms = search_cutoff_ms

    def prepare(self) -> None:
        """A fresh, empty new index with our settings (a leftover from a crash is dropped)."""
        self._delete_index(self.new_uid)
        apply_settings(
            self.client, self.live_uid, self.waiter, search_cutoff_ms=self.search_cutoff_ms
        )
        apply_settings(
            self.client, self.new_uid, self.waiter, search_cutoff_ms=self.search_cutoff_ms
        )

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
            if "index_not_found" not in str(exc):
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
        search_cutoff_ms=settings.search_budget_ms,
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
