"""The audit trail: who asked for which patients, when, why, and what they got.

One AuditRecord per request to a patient-data path, refused ones included.
Records are appended to patient_search.audit_log by an AuditWriter: a bounded
queue drained by a background thread at least every `flush_ms`, so the
request path only enqueues. Each row carries the hash of the previous row
(`prev_hash`) and its own (`hash` = SHA-256 over prev_hash and the row's
canonical JSON), and patient_search.audit_head holds the end of the chain: an
edited, removed or appended-by-hand row breaks `verify`, which names the row.

The request as received is protected data: it lives in this table only,
never in logs.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.database import WorkerConnection

log = logging.getLogger(__name__)

ACTIONS = ("search", "lookup", "read", "match", "audit")
GENESIS = "0" * 64
_COLUMNS = (
    "seq",
    "at",
    "request_id",
    "key_id",
    "clinics",
    "staff_user",
    "purpose",
    "source",
    "action",
    "outcome",
    "request",
    "patient_ids",
    "note",
)


@dataclass(frozen=True)
class AuditRecord:
    """One request to a patient-data path, as the trail keeps it."""

    at: dt.datetime
    request_id: str
    key_id: int | None
    clinics: tuple[str, ...]
    staff_user: str | None
    purpose: str | None
    source: str | None
    action: str
    outcome: int
    request: str
    patient_ids: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True)
class StoredRecord:
    """A row of the trail: the record, its place in the chain and both hashes."""

    seq: int
    record: AuditRecord
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, **asdict(self.record)}
        out["at"] = iso_utc(self.record.at)
        out["clinics"] = list(self.record.clinics)
        out["patient_ids"] = list(self.record.patient_ids)
        out["prev_hash"] = self.prev_hash
        out["hash"] = self.hash
        return out


def iso_utc(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def canonical(seq: int, record: AuditRecord) -> str:
    """The exact text a row's hash covers; stable across a round trip through PostgreSQL."""
    return f"[{seq},{chained_text(record)}"


def chained_text(record: AuditRecord) -> str:
    """The canonical text after the sequence number, which only the chain's head knows:
    the server completes it (patient_search.audit_append, core.schema migration 100)."""
    values = list(_fields(record).values())
    return json.dumps(values, separators=(",", ":"), ensure_ascii=True)[1:]


def _fields(record: AuditRecord) -> dict[str, Any]:
    """A record's columns after seq, in their order, as JSON values."""
    return {
        "at": iso_utc(record.at),
        "request_id": record.request_id,
        "key_id": record.key_id,
        "clinics": list(record.clinics),
        "staff_user": record.staff_user,
        "purpose": record.purpose,
        "source": record.source,
        "action": record.action,
        "outcome": record.outcome,
        "request": record.request,
        "patient_ids": list(record.patient_ids),
        "note": record.note,
    }


def chain_hash(prev_hash: str, seq: int, record: AuditRecord) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(seq, record)}".encode()).hexdigest()


def _clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; everything else is kept as received."""
    return text.replace("\x00", "\\u0000") if text is not None else None


def append(conn: psycopg.Connection[Any], records: Sequence[AuditRecord]) -> int:
    """Append records to the chain in one statement; returns the last seq.

    The server numbers and hashes them under the head row's lock, which serialises
    writers of every process (seq has no gaps) and is held inside PostgreSQL only.
    """
    rows = [{**_fields(r), "chained": chained_text(r)} for r in map(_sanitized, records)]
    row = conn.execute(
        "select patient_search.audit_append(%s::jsonb)", (orjson.dumps(rows).decode(),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _sanitized(rec: AuditRecord) -> AuditRecord:
    if "\x00" not in rec.request and not any(
        "\x00" in (v or "") for v in (rec.staff_user, rec.purpose, rec.note)
    ):
        return rec
    return AuditRecord(
        **{
            **asdict(rec),
            "request": _clean(rec.request) or "",
            "staff_user": _clean(rec.staff_user),
            "purpose": _clean(rec.purpose),
            "note": _clean(rec.note),
        }
    )


class AuditUnavailable(Exception):
    """The trail cannot take this record now (queue full or database away)."""


@dataclass
class AuditWriter:
    """Bounded queue + one thread that appends batches; the request path only enqueues.

    `submit` raises AuditUnavailable when the queue is full or the last write
    failed, so the caller can fail closed. Records already queued are kept and
    retried until the database answers again; `close` drains the queue (SIGTERM).
    """

    url: str
    queue_size: int = 50_000
    flush_ms: int = 200
    batch_size: int = 10_000
    touch_every_s: float = 60.0
    _queue: queue.Queue[AuditRecord] = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    _failing: bool = field(init=False, default=False)
    _db: WorkerConnection = field(init=False)
    _touched: dict[int, float] = field(init=False, default_factory=dict)
    _carry: list[AuditRecord] = field(init=False, default_factory=list)
    written: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._db = WorkerConnection(self.url, "patient-search-audit")

    def start(self) -> AuditWriter:
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        return not self._failing

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, record: AuditRecord) -> None:
        """Enqueue without blocking; AuditUnavailable when the trail cannot take it."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            raise AuditUnavailable("audit queue full") from None
        if self._failing:
            raise AuditUnavailable("audit trail not writable")

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking the thread's time and write everything still queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        leftover = self._carry + self._drain(self.queue_size)
        deadline = time.monotonic() + timeout
        while leftover and time.monotonic() < deadline:
            try:
                self._write(leftover)
                leftover = self._drain(self.queue_size)
            except psycopg.Error as exc:
                log.error("audit flush on shutdown failed", extra={"error": type(exc).__name__})
                self._reset()
                time.sleep(0.2)
        if leftover:
            log.error("audit records lost at shutdown", extra={"count": len(leftover)})
        self._reset()

    def _drain(self, limit: int) -> list[AuditRecord]:
        batch: list[AuditRecord] = []
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        batch: list[AuditRecord] = []
        while not self._stop.is_set():
            if not batch:
                batch = self._gather()
                if not batch:
                    continue
            try:
                self._write(batch)
                batch = []
            except psycopg.Error as exc:
                if not self._failing:
                    log.error("audit trail not writable", extra={"error": type(exc).__name__})
                self._failing = True
                self._reset()
                self._stop.wait(0.5)
        self._carry = batch  # close() writes it first, then whatever is still queued

    def _gather(self) -> list[AuditRecord]:
        """Records arriving within flush_ms of the first one (or until the batch is full).
        The thread sleeps through the window, then drains: waiting on the queue instead
        woke it at every record, taking the GIL from the request threads each time."""
        interval = self.flush_ms / 1000
        try:
            batch = [self._queue.get(timeout=interval)]
        except queue.Empty:
            return []
        if self._queue.qsize() < self.batch_size - 1:
            self._stop.wait(interval)
        batch.extend(self._drain(self.batch_size - 1))
        return batch

    def _write(self, batch: list[AuditRecord]) -> None:
        if not batch:
            return
        append(self._db.get(), batch)
        self.written += len(batch)
        if self._failing:
            log.warning("audit trail writable again", extra={"count": len(batch)})
        self._failing = False
        self._touch(batch)

    def _touch(self, batch: Iterable[AuditRecord]) -> None:
        """Keep api_keys.last_used_at roughly current without a write per request."""
        from core.apikeys import touch_keys

        now = time.monotonic()
        due = {
            r.key_id
            for r in batch
            if r.key_id is not None
            and now - self._touched.get(r.key_id, -1e9) >= self.touch_every_s
        }
        if due:
            try:
                touch_keys(self._db.get(), due)
            except psycopg.Error as exc:
                log.warning("could not record key use", extra={"error": type(exc).__name__})
                return
            self._touched.update(dict.fromkeys(due, now))

    def _reset(self) -> None:
        self._db.close()


# --- reading the trail -----------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """The filters `audit export` and GET /v1/audit share; `within` limits to a key's clinics."""

    patient: str | None = None
    user: str | None = None
    clinic: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    within: tuple[str, ...] | None = None
    after_seq: int | None = None

    def where(self) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for clause, value in (
            ("patient_ids @> array[%s]::text[]", self.patient),
            ("staff_user = %s", self.user),
            ("clinics @> array[%s]::text[]", self.clinic),
            ("at >= %s", self.start),
            ("at < %s", self.end),
            ("clinics <@ %s::text[]", list(self.within) if self.within is not None else None),
            ("seq > %s", self.after_seq),
        ):
            if value is not None:
                parts.append(sql.SQL(clause))
                params.append(value)
        if not parts:
            return sql.SQL("true"), params
        return sql.SQL(" and ").join(parts), params


def _stored(row: dict[str, Any]) -> StoredRecord:
    """A row selected with _SELECT, its columns mapped to AuditRecord's fields by name."""
    fields = {c: row[c] for c in _COLUMNS if c != "seq"}
    fields["clinics"] = tuple(fields["clinics"])
    fields["patient_ids"] = tuple(fields["patient_ids"])
    return StoredRecord(
        seq=row["seq"], record=AuditRecord(**fields), prev_hash=row["prev_hash"], hash=row["hash"]
    )


_SELECT = sql.SQL(", ").join(map(sql.Identifier, (*_COLUMNS, "prev_hash", "hash")))


def query(
    conn: psycopg.Connection[Any], filters: AuditFilter, *, limit: int | None = None
) -> Iterator[StoredRecord]:
    """Matching rows in chain order, streamed with a server-side cursor."""
    where, params = filters.where()
    stmt = sql.SQL("select {} from patient_search.audit_log where {} order by seq").format(
        _SELECT, where
    )
    if limit is not None:
        stmt = stmt + sql.SQL(" limit {}").format(sql.Literal(limit))
    with conn.transaction(), conn.cursor(name="audit_query", row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(stmt, params)
        for row in cur:
            yield _stored(row)


# --- verifying and pruning --------------------------------------------------------------


@dataclass
class Verification:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _anchor(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    row = conn.execute(
        "select through_seq, hash from patient_search.audit_prunes order by id desc limit 1"
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def verify(conn: psycopg.Connection[Any]) -> Verification:
    """Walk the chain from the last prune anchor to the head; name every broken row."""
    result = Verification()
    expected_seq, prev = _anchor(conn)
    head = conn.execute("select seq, hash from patient_search.audit_head").fetchone()
    with conn.transaction(), conn.cursor(name="audit_verify", row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(
            sql.SQL("select {} from patient_search.audit_log where seq > %s order by seq").format(
                _SELECT
            ),
            (expected_seq,),
        )
        for row in cur:
            stored = _stored(row)
            expected_seq += 1
            result.checked += 1
            if stored.seq > expected_seq:
                gap = (
                    f"{expected_seq}"
                    if stored.seq == expected_seq + 1
                    else (f"{expected_seq}-{stored.seq - 1}")
                )
                result.problems.append(f"row(s) {gap} removed (missing before row {stored.seq})")
                expected_seq = stored.seq
            if stored.prev_hash != prev:
                result.problems.append(
                    f"row {stored.seq}: link to the previous row broken"
                    " (the previous row was altered, removed or replaced)"
                )
            if chain_hash(stored.prev_hash, stored.seq, stored.record) != stored.hash:
                result.problems.append(f"row {stored.seq}: contents altered (hash mismatch)")
            prev = stored.hash
    if head is not None:
        head_seq, head_hash = int(head[0]), str(head[1])
        if head_seq > expected_seq:
            result.problems.append(
                f"row(s) {expected_seq + 1}-{head_seq} removed from the end of the trail"
            )
        elif head_seq < expected_seq:
            result.problems.append(f"rows after {head_seq} were not written by the service")
        elif head_hash != prev:
            result.problems.append(f"row {head_seq}: does not match the recorded end of the chain")
    return result


@dataclass(frozen=True)
class Pruned:
    removed: int
    through_seq: int


def prune(conn: psycopg.Connection[Any], *, older_than: dt.timedelta) -> Pruned:
    """Remove rows older than the retention period, leaving an anchor to verify from.

    Refuses when the chain is already broken: the evidence must not be pruned away.
    """
    report = verify(conn)
    if not report.ok:
        raise ValueError("the audit trail fails verification; not pruning: " + report.problems[0])
    with conn.transaction():
        conn.execute("select 1 from patient_search.audit_head for update")
        cutoff = conn.execute("select now() - %s", (older_than,)).fetchone()
        assert cutoff is not None
        row = conn.execute(
            "select coalesce((select min(seq) from patient_search.audit_log where at >= %s),"
            " (select seq + 1 from patient_search.audit_head)) - 1",
            (cutoff[0],),
        ).fetchone()
        through = int(row[0]) if row and row[0] is not None else 0
        start, _ = _anchor(conn)
        if through <= start:
            return Pruned(removed=0, through_seq=start)
        last = conn.execute(
            "select hash from patient_search.audit_log where seq = %s", (through,)
        ).fetchone()
        assert last is not None
        conn.execute("select set_config('patient_search.audit_prune', 'on', true)")
        removed = conn.execute(
            "delete from patient_search.audit_log where seq <= %s", (through,)
        ).rowcount
        conn.execute(
            "insert into patient_search.audit_prunes (cutoff, through_seq, hash, removed)"
            " values (%s, %s, %s, %s)",
            (cutoff[0], through, last[0], removed),
        )
    return Pruned(removed=removed, through_seq=through)


# --- export formats ---------------------------------------------------------------------

CSV_FIELDS = (*_COLUMNS, "prev_hash", "hash")


def to_csv(records: Iterable[StoredRecord], out: io.TextIOBase | Any) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    count = 0
    for r in records:
        d = r.as_dict()
        d["clinics"] = " ".join(d["clinics"])
        d["patient_ids"] = " ".join(d["patient_ids"])
        writer.writerow(["" if d[f] is None else d[f] for f in CSV_FIELDS])
        count += 1
    return count


def to_jsonl(records: Iterable[StoredRecord], out: io.TextIOBase | Any) -> int:
    count = 0
    for r in records:
        out.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def to_fhir_bundle(records: Iterable[StoredRecord], *, server: str) -> dict[str, Any]:
    """A FHIR R4 Bundle (collection) of AuditEvent resources; see core.audit_fhir."""
    from core.audit_fhir import audit_event

    entries = [
        {"fullUrl": f"urn:uuid:{uuid.UUID(r.hash[:32])}", "resource": audit_event(r, server)}
        for r in records
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": iso_utc(dt.datetime.now(dt.UTC)),
        "total": len(entries),
        "entry": entries,
    }
