"""Compare source and projection per clinic, and repair drift through the one write path.

Documents are rebuilt from the source in keyset pages of ids and compared with
the projection inside PostgreSQL (jsonb equality, so formatting never makes a
false drift). Each side gets an order-independent checksum over id + document
hash, so two reports can be compared without listing ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core.documents import PatientDocument
from core.state import lock_out_batches
from engines.pg_projection import doc_json, stored_terms
from indexer.sync import Sink, load_documents, sync_patients

_PAGE = 1000


@dataclass
class ClinicReport:
    clinic_id: str
    source_count: int = 0
    projection_count: int = 0
    missing: int = 0  # in the source, not in the projection
    extra: int = 0  # in the projection, not in the source (or under another clinic)
    stale: int = 0  # in both, document differs
    source_checksum: str = ""
    projection_checksum: str = ""
    repaired: int = 0
    drift_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.stale)


class _Checksum:
    """Sum of 64-bit hashes mod 2^64: independent of row order, cheap to combine."""

    def __init__(self) -> None:
        self.value = 0

    def add(self, pid: str, doc_hash: str | None) -> None:
        digest = hashlib.sha256(f"{pid}\0{doc_hash}".encode()).digest()
        self.value = (self.value + int.from_bytes(digest[:8], "big")) % (1 << 64)

    def hex(self) -> str:
        return f"{self.value:016x}"


def _record(doc: PatientDocument) -> dict[str, Any]:
    return {
        "id": doc.id,
        "clinic_id": doc.clinic_id,
        "active": doc.active,
        "birth_date": doc.birth_date.isoformat() if isinstance(doc.birth_date, dt.date) else None,
        "terms": stored_terms(doc),
        "name_text": doc.name_text,
        "sort_key": doc.sort_key,
        "doc": doc_json(doc),
    }


_COMPARE = """
select x.id, md5(x.doc::text), md5(p.doc::jsonb::text),
       p.id is not null and p.clinic_id = x.clinic_id and p.active = x.active
         and p.birth_date is not distinct from x.birth_date and p.terms = x.terms
         and p.name_text = x.name_text and p.sort_key = x.sort_key and p.doc::jsonb = x.doc
from jsonb_to_recordset(%s::jsonb) as x(
       id text, clinic_id text, active boolean, birth_date date, terms text[],
       name_text text, sort_key text, doc jsonb)
left join patient_search.patients p on p.id = x.id
"""


def _pages(
    conn: psycopg.Connection[Any], table: sql.Composable, clinic_id: str
) -> Iterator[list[str]]:
    last = ""
    while True:
        rows = conn.execute(
            sql.SQL(
                "select id from {} where clinic_id = %s and id > %s order by id limit %s"
            ).format(table),
            (clinic_id, last, _PAGE),
        ).fetchall()
        if not rows:
            return
        ids = [r[0] for r in rows]
        yield ids
        last = ids[-1]


def _check_clinic(
    conn: psycopg.Connection[Any], clinic_id: str, *, schema: str, region: str
) -> ClinicReport:
    report = ClinicReport(clinic_id)
    src_sum, proj_sum = _Checksum(), _Checksum()
    source_table = sql.Identifier(schema, "patients")
    for ids in _pages(conn, source_table, clinic_id):
        docs, _ = load_documents(conn, ids, schema=schema, region=region)
        docs = [d for d in docs if d.clinic_id == clinic_id]
        report.source_count += len(docs)
        rows = conn.execute(_COMPARE, (Jsonb([_record(d) for d in docs]),)).fetchall()
        for pid, src_hash, proj_hash, same in rows:
            src_sum.add(pid, src_hash)
            if proj_hash is None:
                report.missing += 1
                report.drift_ids.append(pid)
            elif not same:
                report.stale += 1
                report.drift_ids.append(pid)
    projection = sql.Identifier("patient_search", "patients")
    for ids in _pages(conn, projection, clinic_id):
        rows = conn.execute(
            sql.SQL(
                "select p.id, md5(p.doc::jsonb::text), s.id is not null from {proj} p "
                "left join {src} s on s.id = p.id and s.clinic_id = p.clinic_id "
                "where p.id = any(%s)"
            ).format(proj=projection, src=source_table),
            (ids,),
        ).fetchall()
        for pid, proj_hash, in_source in rows:
            report.projection_count += 1
            proj_sum.add(pid, proj_hash)
            if not in_source:
                report.extra += 1
                report.drift_ids.append(pid)
    report.source_checksum = src_sum.hex()
    report.projection_checksum = proj_sum.hex()
    return report


def _clinics(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute(
        sql.SQL(
            "select clinic_id from {} union select clinic_id from patient_search.patients "
            "order by 1"
        ).format(sql.Identifier(schema, "patients"))
    ).fetchall()
    return [r[0] for r in rows]


def check(
    conn: psycopg.Connection[Any],
    *,
    schema: str,
    region: str,
    clinic_id: str | None = None,
    repair: bool = False,
    sinks: Sequence[Sink] = (),
) -> list[ClinicReport]:
    """One report per clinic; with repair=True drifting patients are re-synced (and committed)
    to the projection and every other configured engine (`sinks`)."""
    reports = []
    for clinic in [clinic_id] if clinic_id is not None else _clinics(conn, schema):
        with conn.transaction():
            report = _check_clinic(conn, clinic, schema=schema, region=region)
        if repair and report.drift_ids:
            report.repaired = _repair(conn, report.drift_ids, schema, region, sinks)
        reports.append(report)
    return reports


def _repair(
    conn: psycopg.Connection[Any],
    ids: Sequence[str],
    schema: str,
    region: str,
    sinks: Sequence[Sink],
) -> int:
    """Re-sync drifting patients without undoing a concurrent indexer batch.

    The source is read after indexer batches are held off, in a READ COMMITTED
    transaction (each statement sees every batch committed before the lock), and
    written before any later batch runs; a batch for a change made after this
    read then writes the newer state after us. So a repair neither resurrects a
    patient the indexer just deleted nor rolls back a newer update.
    """
    conn.commit()  # ends the read-only work of the check itself
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    repaired = 0
    for start in range(0, len(ids), _PAGE):
        chunk = ids[start : start + _PAGE]
        with conn.transaction():
            lock_out_batches(conn)
            stats = sync_patients(conn, chunk, schema=schema, region=region, sinks=sinks)
        repaired += stats.upserted + stats.deleted
    return repaired
