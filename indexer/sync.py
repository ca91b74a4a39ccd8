"""Bring documents of given patients in line with the source: the one write path.

Every change (CDC event, repair, reindex catch-up) ends here as a set of
patient ids. The current source state of those patients is read in one query
and written to every engine, so duplicated, reordered or late events do no
harm: whatever arrives, the document ends equal to the source, and a patient
missing from the source is deleted everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from core.documents import PatientDocument, build_document
from core.state import record_touched
from engines import pg_projection
from indexer.source import fetch_patients


class Sink(Protocol):
    """Another engine that mirrors the projection (e.g. Meilisearch).

    `write` must be durable when it returns, or raise; the caller then rolls
    back and does not move its checkpoint.
    """

    name: str

    def write(self, docs: Sequence[PatientDocument], deleted_ids: Sequence[str]) -> None: ...

    def close(self) -> None: ...


# A GIN index entry must fit a third of a page (2,712 bytes at 8 kB): a longer term
# (an 8 kB "email", a 5 kB name) would fail the whole write, or a reindex's index build.
MAX_TERM_BYTES = 2000


class DocumentRejected(ValueError):
    """This patient's document cannot be indexed; the reason names the rule, not the value."""


def check_indexable(doc: PatientDocument) -> None:
    lead = len(doc.clinic_id.encode()) + 1
    for term in doc.terms:
        # At most four bytes a character: most terms are cleared without encoding them.
        if lead + 4 * len(term) <= MAX_TERM_BYTES:
            continue
        stored = pg_projection.scope_terms(doc.clinic_id, [term])[0]
        if len(stored.encode()) > MAX_TERM_BYTES:
            kind = stored.rpartition("\x1f")[2].partition(":")[0]
            raise DocumentRejected(f"value too large to index ({kind} term)")


def build_checked(
    rows: Iterable[dict[str, Any]], *, region: str
) -> tuple[list[PatientDocument], list[tuple[str, str]]]:
    """Documents for bulk loads, and (patient id, reason) for the rows set aside: one bad
    patient never fails a whole rebuild."""
    docs: list[PatientDocument] = []
    rejected: list[tuple[str, str]] = []
    for row in rows:
        try:
            doc = build_document(row, row["contacts"], region=region)
            check_indexable(doc)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DocumentRejected) else type(exc).__name__
            rejected.append((str(row["id"]), f"document rejected: {reason}"))
            continue
        docs.append(doc)
    return docs, rejected


@dataclass(frozen=True)
class SyncStats:
    upserted: int
    deleted: int


def sync_patients(
    conn: psycopg.Connection[Any],
    patient_ids: Iterable[str],
    *,
    schema: str = "public",
    region: str = "US",
    sinks: Sequence[Sink] = (),
) -> SyncStats:
    """Rebuild the documents of these patients from the source, in the caller's transaction."""
    ids = sorted(set(patient_ids))
    if not ids:
        return SyncStats(0, 0)
    record_touched(conn, ids)  # first: waits for a rebuild's registration or swap
    docs, deleted = load_documents(conn, ids, schema=schema, region=region)
    for doc in docs:
        check_indexable(doc)
    pg_projection.upsert_documents(conn, docs)
    pg_projection.delete_documents(conn, deleted)
    for sink in sinks:
        sink.write(docs, deleted)
    return SyncStats(upserted=len(docs), deleted=len(deleted))


def load_documents(
    conn: psycopg.Connection[Any], ids: Sequence[str], *, schema: str, region: str
) -> tuple[list[PatientDocument], list[str]]:
    rows = fetch_patients(conn, ids, schema=schema)
    docs = [build_document(row, row["contacts"], region=region) for row in rows.values()]
    deleted = [i for i in ids if i not in rows]
    return docs, deleted
