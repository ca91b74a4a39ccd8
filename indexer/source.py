"""Reading the clinic's source tables: patients with their contacts, by id or streamed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.documents import PATIENT_COLUMNS

# Contacts are joined aggregated by patient, never looked up per patient: the clinic's
# table may have no index on patient_id (DESIGN.md's schema has none), and a correlated
# subquery would then scan every contact once per patient. Aggregating first reads each
# table once (hash or sorted aggregate) whatever indexes exist.
_SELECT = sql.SQL(
    """select {columns}, coalesce(c.contacts, '[]'::json) as contacts
from {patients} p
left join (
  select c.patient_id, json_agg(json_build_object(
           'id', c.id, 'kind', c.kind, 'value', c.value, 'use', c.use) order by c.id) as contacts
  from {contacts} c where {contact_filter}
  group by c.patient_id
) c on c.patient_id = p.id
where {patient_filter}"""
)


def _select(
    schema: str, patient_filter: sql.Composable, contact_filter: sql.Composable
) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier("p", c) for c in PATIENT_COLUMNS)
    return _SELECT.format(
        columns=columns,
        patients=sql.Identifier(schema, "patients"),
        contacts=sql.Identifier(schema, "patient_contacts"),
        patient_filter=patient_filter,
        contact_filter=contact_filter,
    )


def fetch_query(schema: str, ids: Iterable[str]) -> tuple[sql.Composed, dict[str, Any]]:
    # A set joined by hash, not `= any(array)`: a generic plan would compare every
    # contact row with every id in the array.
    query = _select(
        schema,
        sql.SQL("p.id in (select unnest(%(ids)s::text[]))"),
        sql.SQL("c.patient_id in (select unnest(%(ids)s::text[]))"),
    )
    return query, {"ids": sorted(set(ids))}


def fetch_patients(
    conn: psycopg.Connection[Any], ids: Iterable[str], *, schema: str = "public"
) -> dict[str, dict[str, Any]]:
    """Current source state of the given patients: one query, one pass over contacts."""
    query, params = fetch_query(schema, ids)
    if not params["ids"]:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return {row["id"]: row for row in cur}


def stream_query(
    schema: str, *, clinic_id: str | None, partition: tuple[int, int] | None
) -> tuple[sql.Composed, dict[str, Any]]:
    """Patients with their contacts; `partition` (k, n) keeps the k-th of n id-hash slices."""
    patient_filter: list[sql.Composable] = [sql.SQL("true")]
    contact_filter: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {}
    if clinic_id is not None:
        patient_filter.append(sql.SQL("p.clinic_id = %(clinic)s"))
        contact_filter.append(
            sql.SQL("c.patient_id in (select id from {} where clinic_id = %(clinic)s)").format(
                sql.Identifier(schema, "patients")
            )
        )
        params["clinic"] = clinic_id
    if partition is not None and partition[1] > 1:
        for conditions, column in ((patient_filter, "p.id"), (contact_filter, "c.patient_id")):
            conditions.append(
                sql.SQL("(hashtext({}) & 2147483647) %% %(parts)s = %(part)s").format(
                    sql.SQL(column)
                )
            )
        params.update(parts=partition[1], part=partition[0])
    query = _select(
        schema, sql.SQL(" and ").join(patient_filter), sql.SQL(" and ").join(contact_filter)
    )
    return query, params


def stream_patients(
    conn: psycopg.Connection[Any],
    *,
    schema: str = "public",
    clinic_id: str | None = None,
    batch_size: int = 2000,
    partition: tuple[int, int] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Every patient in batches through a server-side cursor: memory flat in table size.

    Must run inside a transaction (the named cursor lives in it), for parallel
    readers one `partition` each.
    """
    query, params = stream_query(schema, clinic_id=clinic_id, partition=partition)
    # Plan for the whole result, not for the first rows (a cursor's default): the
    # first-rows plan is the per-patient lookup this query exists to avoid.
    conn.execute("set local cursor_tuple_fraction = 1.0")
    with conn.cursor(name="patient_search_stream", row_factory=dict_row) as cur:
        cur.itersize = batch_size
        cur.execute(query, params)
        while rows := cur.fetchmany(batch_size):
            yield rows


def count_patients(
    conn: psycopg.Connection[Any], *, schema: str = "public", clinic_id: str | None = None
) -> int:
    query = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, "patients"))
    params: tuple[Any, ...] = ()
    if clinic_id is not None:
        query += sql.SQL(" where clinic_id = %s")
        params = (clinic_id,)
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def contacts_index_hint(conn: psycopg.Connection[Any], *, schema: str = "public") -> str | None:
    """One line for operators when patient_contacts has no index led by patient_id.

    Reading stays one pass per table without it, but every indexer batch then
    scans the whole contacts table; the service never alters the clinic's tables.
    """
    table = f"{_quoted(schema)}.patient_contacts"
    row = conn.execute(
        """
        select to_regclass(%(t)s) is not null, exists (
          select 1 from pg_index i
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
          where i.indrelid = to_regclass(%(t)s) and a.attname = 'patient_id' and i.indisvalid)
        """,
        {"t": table},
    ).fetchone()
    if not row or not row[0] or row[1]:
        return None
    return (
        f"hint: source table {table} has no index on patient_id, so each indexer batch scans"
        " it whole; a DBA may add one without blocking writes: create index concurrently"
        f" patient_contacts_patient_id on {table} (patient_id);"
    )


def _quoted(name: str) -> str:
    """An identifier as an operator would type it: bare when that is unambiguous."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else sql.Identifier(name).as_string()
