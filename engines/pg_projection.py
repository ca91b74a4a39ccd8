"""Writes to the PostgreSQL projection (schema patient_search), inside the caller's transaction."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Json

from core import name_keys, term_counts, terms
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


SCOPE = "\x1f"  # between a clinic and a term in a stored term
NAME_LEAD = terms.name("")  # "n:": name words, the terms name_keys holds
_SCOPED_NAME = SCOPE + NAME_LEAD


def scope_terms(clinic_id: str, terms: Iterable[str]) -> list[str]:
    return [f"{clinic_id}{SCOPE}{t}" for t in terms]


def unscope_terms(clinic_id: str, stored: Iterable[str]) -> list[str]:
    """Inverse of scope_terms: the document's own terms from a projection row."""
    lead = f"{clinic_id}\x1f"
    return [t[len(lead) :] for t in stored if t.startswith(lead)]


def doc_json(doc: PatientDocument) -> dict[str, Any]:
    return {"patient": doc.patient, "match": doc.match, "contact_ids": doc.contact_ids}


def _json_text(value: Any) -> str:
    """A document's text, as both writes send it (COPY and upsert): the `json` column
    keeps the text as given, so one spelling means one stored value."""
    return orjson.dumps(value).decode()


def _row(doc: PatientDocument) -> tuple[Any, ...]:
    return (
        doc.id,
        doc.clinic_id,
        doc.active,
        doc.birth_date,
        stored_terms(doc),
        doc.name_text,
        doc.sort_key,
        Json(doc_json(doc), dumps=_json_text),
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
    ids = [d.id for d in docs]
    before = stored_words(conn, ids, table=table)
    live = table == PROJECTION
    old = _lock_counted_terms(conn, [d.id for d in docs]) if live else []
    with conn.cursor() as cur:
        cur.executemany(query, [_row(d) for d in docs])
    if live:
        _count_terms(conn, old, [(d.clinic_id, stored_terms(d)) for d in docs])
    _remember_contacts(conn, docs)
    if table == PROJECTION:
        # From what the table holds before and after, so a write that a guard skipped
        # changes no count.
        after = stored_words(conn, ids, table=table)
        after.subtract(before)
        adjust_words(conn, after)
        refresh_name_keys(conn, ids)
        notify_changed(conn, {d.clinic_id for d in docs} | {c for c, _ in before}, ids)


def delete_documents(
    conn: psycopg.Connection[Any], ids: Iterable[str], *, table: str = PROJECTION
) -> None:
    wanted = sorted(set(ids))
    if not wanted:
        return
    words_gone = stored_words(conn, wanted, table=table) if table == PROJECTION else Counter()
    gone = conn.execute(
        sql.SQL("delete from {} where id = any(%s) returning clinic_id, terms").format(
            sql.Identifier(SCHEMA, table)
        ),
        (wanted,),
    ).fetchall()
    if table == PROJECTION:  # contact_owner, words and term counts mirror the projection
        adjust_words(conn, Counter({k: -n for k, n in words_gone.items()}))
        conn.execute("delete from patient_search.name_keys where id = any(%s)", (wanted,))
        notify_changed(conn, {r[0] for r in gone}, wanted)
        _count_terms(conn, [(r[0], r[1]) for r in gone], [])
        conn.execute(
            "delete from patient_search.contact_owner where patient_id = any(%s)", (wanted,)
        )


def copy_documents(
    conn: psycopg.Connection[Any], docs: Sequence[PatientDocument], *, table: str
) -> None:
    """Bulk load for reindex into a fresh table (no conflicts possible there).

    The rows are spelled in COPY's text format here, one string per batch: psycopg's
    per-value dumpers (the text[] one is Python, jsonb through the json module) were
    half of a reindex worker's time (py-spy, issue 11). The table holds the same values
    as after `upsert_documents` (tested).
    """
    cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
    with conn.cursor() as cur:
        copy_sql = sql.SQL("copy {} ({}) from stdin").format(sql.Identifier(SCHEMA, table), cols)
        with cur.copy(copy_sql) as copy:
            copy.write("".join(map(_copy_line, docs)))


# COPY text format: backslash, newline, carriage return and tab are the characters a
# value must escape; an array literal quotes every element, escaping " and backslash.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_ELEMENT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_NULL = "\\N"


def _text(value: str) -> str:
    """A value in COPY's text format (most need no escaping: checked first, in C)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_line(doc: PatientDocument) -> str:
    # orjson writes control characters escaped: a backslash is all COPY must double.
    document = _json_text(doc_json(doc)).replace("\\", "\\\\")
    fields = (
        _text(doc.id),
        _text(doc.clinic_id),
        "t" if doc.active else "f",
        doc.birth_date.isoformat() if doc.birth_date is not None else _NULL,
        _text(_terms_literal(doc.clinic_id, doc.terms)),
        _text(doc.name_text),
        _text(doc.sort_key),
        document,
        doc.source_updated_at.isoformat() if doc.source_updated_at is not None else _NULL,
    )
    return "\t".join(fields) + "\n"


def _terms_literal(clinic_id: str, terms: list[str]) -> str:
    """The text[] literal of stored_terms(doc)."""
    lead = clinic_id + SCOPE
    return array_literal([lead + t for t in terms])


def array_literal(values: Sequence[str]) -> str:
    """A text[] literal, every element quoted (none reads as NULL): the COPY of documents
    and the search passes' term arrays (engines.pg_search.text_array) spell it alike."""
    if not values:
        return "{}"
    joined = "\x00".join(values)  # text never holds NUL
    if '"' in joined or "\\" in joined:
        joined = joined.translate(_ELEMENT_ESCAPES)
    return '{"' + joined.replace("\x00", '","') + '"}'


def name_keys_of(doc: PatientDocument) -> list[str]:
    """The keys a document holds in name_keys, as the SQL fills derive them: its `n:`
    words, then its given-family pairs (core.name_keys)."""
    words = [t[len(NAME_LEAD) :] for t in doc.terms if t.startswith(NAME_LEAD)]
    pairs = name_keys.pairs_of(doc.match.get("given", []), doc.match.get("family", []))
    return list(dict.fromkeys([*words, *pairs]))


def copy_name_keys(
    conn: psycopg.Connection[Any], docs: Sequence[PatientDocument], *, table: str
) -> None:
    """Bulk load of the documents' name keys into a fresh table (reindex)."""
    lines: list[str] = []
    for doc in docs:
        lead = f"{_text(doc.clinic_id)}\t"
        tail = f"\t{_text(doc.id)}\n"
        lines.extend(lead + _text(key) + tail for key in name_keys_of(doc))
    copy_sql = sql.SQL("copy {} (clinic_id, term, id) from stdin").format(
        sql.Identifier(SCHEMA, table)
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.write("".join(lines))


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


# Projection changes are announced on two channels, so answer caches drop what they hold:
# CHANNEL names each changed clinic (ALL_CLINICS for a full rebuild): its search answers;
# PATIENTS_CHANNEL names the changed patients, a JSON array of ids per notification (or
# the JSON string "*" for every patient): their reads, which no other change touches.
CHANNEL = "patient_search_changes"
ALL_CLINICS = "*"
PATIENTS_CHANNEL = "patient_search_patients"
_PAYLOAD_BYTES = 7_000  # below NOTIFY's 8,000-byte payload limit
# Names each clinic that gained a name word (ALL_CLINICS: recounted), so that the API's
# word dictionaries reload: they skip exact passes for words they count no patient for.
WORDS_CHANNEL = "patient_search_words"


def notify_changed(
    conn: psycopg.Connection[Any],
    clinics: Iterable[str],
    patients: Iterable[str] = (),
    *,
    every_patient: bool = False,
) -> None:
    """In the writer's transaction: listeners hear of it when (and only if) it commits."""
    _notify(conn, CHANNEL, sorted(set(clinics)))
    payloads = ['"*"'] if every_patient else patient_payloads(sorted(set(patients)))
    _notify(conn, PATIENTS_CHANNEL, payloads)


def notify_new_words(conn: psycopg.Connection[Any], clinics: Iterable[str]) -> None:
    """In the writer's transaction, as notify_changed."""
    _notify(conn, WORDS_CHANNEL, sorted(set(clinics)))


def _notify(conn: psycopg.Connection[Any], channel: str, payloads: list[str]) -> None:
    if payloads:
        conn.execute("select pg_notify(%s, p) from unnest(%s::text[]) p", (channel, payloads))


def patient_payloads(ids: Sequence[str]) -> list[str]:
    """JSON arrays of ids, each within one notification's payload; an id too long for
    any payload stands for every patient ("*")."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2  # the brackets
    for encoded in (json.dumps(pid) for pid in ids):
        length = len(encoded.encode()) + 1
        if length + 2 > _PAYLOAD_BYTES:
            return ['"*"']
        if chunk and size + length > _PAYLOAD_BYTES:
            payloads.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
        chunk.append(encoded)
        size += length
    if chunk:
        payloads.append("[" + ",".join(chunk) + "]")
    return payloads


def stored_words(
    conn: psycopg.Connection[Any], ids: Sequence[str], *, table: str = PROJECTION
) -> Counter[tuple[str, str]]:
    """(clinic, name word) -> patients among `ids` whose stored document holds it."""
    rows = conn.execute(
        sql.SQL("select clinic_id, terms from {} where id = any(%s)").format(
            sql.Identifier(SCHEMA, table)
        ),
        (list(ids),),
    ).fetchall()
    counts: Counter[tuple[str, str]] = Counter()
    for clinic, stored in rows:
        lead = clinic + _SCOPED_NAME
        counts.update((clinic, t[len(lead) :]) for t in stored if t.startswith(lead))
    return counts


def adjust_words(conn: psycopg.Connection[Any], delta: Counter[tuple[str, str]]) -> None:
    """Apply per-clinic word counts; a word leaves its clinic with its last patient."""
    changed = sorted((k, n) for k, n in delta.items() if n)
    if not changed:
        return
    clinics = [c for (c, _), _ in changed]
    words = [w for (_, w), _ in changed]
    counted = conn.execute(
        "insert into patient_search.name_words (clinic_id, term, patients) "
        "select * from unnest(%s::text[], %s::text[], %s::int[]) "
        "on conflict (clinic_id, term) do update "
        "set patients = name_words.patients + excluded.patients "
        "returning clinic_id, term, patients",
        (clinics, words, [n for _, n in changed]),
    ).fetchall()
    # A counted row holds one patient at least (see the delete below): a word whose count
    # is just what this change adds was new to its clinic.
    notify_new_words(conn, {c for c, w, n in counted if n > 0 and n == delta[(c, w)]})
    conn.execute(
        "delete from patient_search.name_words w "
        "using unnest(%s::text[], %s::text[]) d(clinic_id, term) "
        "where w.clinic_id = d.clinic_id and w.term = d.term and w.patients <= 0",
        (clinics, words),
    )


def refresh_name_keys(
    conn: psycopg.Connection[Any],
    ids: Sequence[str],
    *,
    source: str = PROJECTION,
    target: str = "name_keys",
) -> None:
    """The name keys of these patients, as their stored documents now hold them."""
    conn.execute(
        sql.SQL("delete from {} where id = any(%s)").format(sql.Identifier(SCHEMA, target)),
        (list(ids),),
    )
    _insert_name_keys(conn, source, target, sql.SQL("p.id = any(%s)"), list(ids))


def fill_name_keys(conn: psycopg.Connection[Any], *, clinic_id: str) -> None:
    """Name keys of every patient of one clinic (after its rebuild)."""
    _insert_name_keys(conn, PROJECTION, "name_keys", sql.SQL("p.clinic_id = %s"), clinic_id)


def _insert_name_keys(
    conn: psycopg.Connection[Any], source: str, target: str, which: sql.SQL, value: Any
) -> None:
    """The keys of `source`'s rows matching `which` (one %s, `value`): their `n:` terms,
    and the given-family pairs of their documents' words (core.name_keys)."""
    source_table = sql.Identifier(SCHEMA, source)
    conn.execute(
        sql.SQL(
            "insert into {} (clinic_id, term, id) "
            "select p.clinic_id, substr(t, length(p.clinic_id) + %s), p.id "
            "from {} p cross join lateral unnest(p.terms) t "
            "where {} and left(t, length(p.clinic_id) + %s) = p.clinic_id || %s "
            "union all {}"  # a pair holds a space, a word none: only pairs repeat (john john)
        ).format(
            sql.Identifier(SCHEMA, target),
            source_table,
            which,
            name_keys.select_pairs(source_table, which),
        ),
        (len(_SCOPED_NAME) + 1, value, len(_SCOPED_NAME), _SCOPED_NAME, value),
    )


def count_words(
    conn: psycopg.Connection[Any], *, keys: str = "name_keys", clinic_id: str | None = None
) -> None:
    """Recount the words of one clinic (or all) from a name keys table: patients per word
    (the given-family pairs are keys, not words)."""
    only: sql.Composable = sql.SQL("")
    if clinic_id is None:
        conn.execute("delete from patient_search.name_words")
    else:
        conn.execute("delete from patient_search.name_words where clinic_id = %s", (clinic_id,))
        only = sql.SQL(" and clinic_id = {}").format(clinic_id)
    conn.execute(
        sql.SQL(
            "insert into patient_search.name_words (clinic_id, term, patients) "
            "select clinic_id, term, count(*) from {} where strpos(term, {}) = 0{} "
            "group by 1, 2"
        ).format(sql.Identifier(SCHEMA, keys), name_keys.PAIR_SEP, only)
    )
    notify_new_words(conn, [ALL_CLINICS if clinic_id is None else clinic_id])
