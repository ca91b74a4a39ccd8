"""How many patients of a clinic share a name word or a date of birth (table term_counts).

The re-ranker weighs agreement by how telling it is (Fellegi-Sunter): agreeing on a
family name held by one patient in four thousand is far stronger evidence than
agreeing on Smith. Counts are kept per clinic, keyed by the clinic-scoped index
term itself (`<clinic>\\x1fn:smith`, `<clinic>\\x1fdob:1985-03-14`), plus one row
per clinic holding its number of patients (`<clinic>\\x1f#`).

Maintained in one place, the projection write path (engines.pg_projection): every
upsert and delete of a live document applies the difference of its counted terms;
a reindex recomputes them from the rebuilt table before it is swapped in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from core import terms

SCHEMA = "patient_search"

TABLE = "term_counts"
SEP = "\x1f"
TOTAL = "#"  # the row holding the clinic's number of patients
COUNTED = (terms.term(terms.NAME, ""), terms.term(terms.DOB, ""))


def key(clinic_id: str, term: str) -> str:
    """The clinic-scoped key of a term (the same shape the projection stores)."""
    return f"{clinic_id}{SEP}{term}"


def counted(stored_terms: Iterable[str]) -> list[str]:
    """The clinic-scoped terms of one document that are counted."""
    return [t for t in stored_terms if t.partition(SEP)[2].startswith(COUNTED)]


def document_delta(clinic_id: str, stored_terms: Iterable[str], sign: int) -> Counter[str]:
    delta: Counter[str] = Counter({key(clinic_id, TOTAL): sign})
    for term in counted(stored_terms):
        delta[term] += sign
    return delta


def apply_delta(conn: psycopg.Connection[Any], delta: Counter[str]) -> None:
    """Add the changes in one statement; rows that reach zero are removed."""
    changed = sorted((t, n) for t, n in delta.items() if n)  # sorted: a stable lock order
    if not changed:
        return
    conn.execute(
        """
        insert into patient_search.term_counts (term, count)
        select * from unnest(%s::text[], %s::int[])
        on conflict (term) do update set count = term_counts.count + excluded.count
        """,
        ([t for t, _ in changed], [n for _, n in changed]),
    )
    if any(n < 0 for _, n in changed):
        conn.execute(
            "delete from patient_search.term_counts where term = any(%s) and count <= 0",
            ([t for t, n in changed if n < 0],),
        )


def refresh(conn: psycopg.Connection[Any], *, table: str, clinic_id: str | None = None) -> None:
    """Recompute the counts of every clinic (or one) from a projection table."""
    source = sql.Identifier(SCHEMA, table)
    if clinic_id is None:
        conn.execute("delete from patient_search.term_counts")
        where: sql.Composable = sql.SQL("true")
    else:
        conn.execute(
            "delete from patient_search.term_counts where left(term, %s) = %s",
            (len(clinic_id) + 1, clinic_id + SEP),
        )
        where = sql.SQL("clinic_id = {}").format(clinic_id)
    conn.execute(
        sql.SQL(
            """
            insert into patient_search.term_counts (term, count)
            select t, count(*) from {source} p, unnest(p.terms) t
            where {where} and split_part(t, {sep}, 2) like any({patterns})
            group by t
            union all
            select clinic_id || {total}, count(*) from {source} where {where} group by clinic_id
            """
        ).format(
            source=source,
            where=where,
            sep=SEP,
            total=SEP + TOTAL,
            patterns=[f"{c}%" for c in COUNTED],
        )
    )


def refresh_all(conn: psycopg.Connection[Any], *, table: str) -> None:
    """Every clinic's counts after a full rebuild, the same numbers as `refresh`: name
    words from the word dictionary (recounted from the same documents just before),
    dates and clinic sizes from `table`'s columns (a document's one `dob:` term is its
    birth_date), instead of unnesting every document's terms (a reindex's swap, issue 11)."""
    conn.execute("delete from patient_search.term_counts")
    conn.execute(
        sql.SQL(
            """
            with dates as (
              select clinic_id, birth_date, count(*) as n from {source} group by 1, 2
            )
            insert into patient_search.term_counts (term, count)
            select clinic_id || {name} || term, patients from patient_search.name_words
            union all
            select clinic_id || {dob} || to_char(birth_date, 'YYYY-MM-DD'), n
            from dates where birth_date is not null
            union all
            select clinic_id || {total}, sum(n) from dates group by clinic_id
            """
        ).format(
            source=sql.Identifier(SCHEMA, table),
            name=SEP + terms.term(terms.NAME, ""),
            dob=SEP + terms.term(terms.DOB, ""),
            total=SEP + TOTAL,
        )
    )


def lookup(conn: psycopg.Connection[Any], keys: Sequence[str]) -> dict[str, int]:
    """Counts of the given clinic-scoped keys; a key nobody holds is absent."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        "select term, count from patient_search.term_counts where term = any(%s)", (wanted,)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def migrate_40(conn: psycopg.Connection[Any]) -> None:
    """The table, filled from the live projection (core.schema migration 40)."""
    conn.execute(
        """
        create table if not exists patient_search.term_counts (
          term  text collate "C" primary key,
          count integer not null
        )
        """
    )
    refresh(conn, table="patients")
