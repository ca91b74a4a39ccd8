"""Writes to the PostgreSQL projection (schema patient_search), inside the caller's transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core import term_counts, terms
from core.documents import PatientDocument
from core.schema import PROJECTION, SCHEMA

_COLUMNS = (
    "id",
    "clinic_id",
    "active",
    "birth_date",
    "terms",
    "name_text",
    "sort_key",
    "doc",
    "source_updated_at",
)


def stored_terms(doc: PatientDocument) -> list[str]:
    """Terms as the projection stores them: each led by its clinic.

    Keys are then per clinic, so an index lookup reads only that clinic's
    postings; a clinic column inside the GIN index would instead intersect
    every lookup with a posting list of the whole clinic (measured: 5-10x slower).
    """
    return scope_terms(doc.clinic_id, doc.terms)


def scope_terms(clinic_id: str, terms: Iterable[str]) -> list[str]:
    return [f"{clinic_id}\x1f{t}" for t in terms]


def unscope_terms(clinic_id: str, stored: Iterable[str]) -> list[str]:
    """Inverse of scope_terms: the document's own terms from a projection row."""
    lead = f"{clinic_id}\x1f"
    return [t[len(lead) :] for t in stored if t.startswith(lead)]


def doc_json(doc: PatientDocument) -> dict[str, Any]:
    return {"patient": doc.patient, "match": doc.match, "contact_ids": doc.contact_ids}


def _row(doc: PatientDocument) -> tuple[Any, ...]:
    return (
        doc.id,
        doc.clinic_id,
        doc.active,
        doc.birth_date,
        stored_terms(doc),
        doc.name_text,
        doc.sort_key,
        Jsonb(doc_json(doc)),
        doc.source_updated_at,
    )


def upsert_documents(
    conn: psycopg.Connection[Any], docs: Sequence[PatientDocument], *, table: str = PROJECTION
) -> None:
    if not docs:
        return
    cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in _COLUMNS[1:]
    )
    query = sql.SQL(
        "insert into {table} ({cols}) values ({vals}) "
        "on conflict (id) do update set {updates}, indexed_at = now()"
    ).format(
        table=sql.Identifier(SCHEMA, table),
        cols=cols,
        vals=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
        updates=updates,
    )
    live = table == PROJECTION
    old = _lock_counted_terms(conn, [d.id for d in docs]) if live else []
    with conn.cursor() as cur:
        cur.executemany(query, [_row(d) for d in docs])
    if live:
        _count_terms(conn, old, [(d.clinic_id, stored_terms(d)) for d in docs])
    _remember_contacts(conn, docs)
    add_dictionary_terms(conn, docs)


def delete_documents(
    conn: psycopg.Connection[Any], ids: Iterable[str], *, table: str = PROJECTION
) -> None:
    wanted = sorted(set(ids))
    if not wanted:
        return
    gone = conn.execute(
        sql.SQL("delete from {} where id = any(%s) returning clinic_id, terms").format(
            sql.Identifier(SCHEMA, table)
        ),
        (wanted,),
    ).fetchall()
    if table == PROJECTION:  # contact_owner and term counts mirror the live projection
        _count_terms(conn, [(r[0], r[1]) for r in gone], [])
        conn.execute(
            "delete from patient_search.contact_owner where patient_id = any(%s)", (wanted,)
        )


def copy_documents(
    conn: psycopg.Connection[Any], docs: Sequence[PatientDocument], *, table: str
) -> None:
    """Bulk load for reindex into a fresh table (no conflicts possible there)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
    with conn.cursor() as cur:
        copy_sql = sql.SQL("copy {} ({}) from stdin").format(sql.Identifier(SCHEMA, table), cols)
        with cur.copy(copy_sql) as copy:
            for doc in docs:
                copy.write_row(_row(doc))


def _lock_counted_terms(
    conn: psycopg.Connection[Any], ids: list[str]
) -> list[tuple[str, list[str]]]:
    """The documents as they are before an upsert, locked until it commits."""
    rows = conn.execute(
        "select clinic_id, terms from patient_search.patients where id = any(%s) "
        "order by id for update",
        (sorted(set(ids)),),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _count_terms(
    conn: psycopg.Connection[Any],
    before: Sequence[tuple[str, list[str]]],
    after: Sequence[tuple[str, list[str]]],
) -> None:
    """Per-clinic counts of name words and dates follow every live write (core.term_counts)."""
    delta: Counter[str] = Counter()
    for clinic_id, stored in before:
        delta.update(term_counts.document_delta(clinic_id, stored, -1))
    for clinic_id, stored in after:
        delta.update(term_counts.document_delta(clinic_id, stored, 1))
    term_counts.apply_delta(conn, delta)


def _remember_contacts(conn: psycopg.Connection[Any], docs: Sequence[PatientDocument]) -> None:
    """contact id -> patient id, so a deleted contact row still tells whose document to rebuild."""
    ids = [d.id for d in docs]
    conn.execute("delete from patient_search.contact_owner where patient_id = any(%s)", (ids,))
    pairs = [(c, d.id) for d in docs for c in d.contact_ids]
    if pairs:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into patient_search.contact_owner (contact_id, patient_id) values (%s, %s) "
                "on conflict (contact_id) do update set patient_id = excluded.patient_id",
                pairs,
            )


def owners_of_contacts(conn: psycopg.Connection[Any], contact_ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(contact_ids))
    if not wanted:
        return set()
    rows = conn.execute(
        "select patient_id from patient_search.contact_owner where contact_id = any(%s)", (wanted,)
    ).fetchall()
    return {r[0] for r in rows}


def dictionary_words(docs: Iterable[PatientDocument]) -> set[str]:
    return {w for d in docs for w in terms.values(d.terms, terms.NAME)}


def add_dictionary_terms(conn: psycopg.Connection[Any], docs: Sequence[PatientDocument]) -> None:
    """New name words become reachable by prefix and typo expansion at once."""
    words = sorted(dictionary_words(docs))
    if words:
        conn.execute(
            "insert into patient_search.name_dictionary (term) select unnest(%s::text[]) "
            "on conflict (term) do nothing",
            (words,),
        )
