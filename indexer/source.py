"""Reading the clinic's source tables: patients with their contacts, by id or streamed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.documents import PATIENT_COLUMNS

_CONTACTS = sql.SQL(
    """coalesce((select json_agg(json_build_object(
         'id', c.id, 'kind', c.kind, 'value', c.value, 'use', c.use) order by c.id)
       from {contacts} c where c.patient_id = p.id), '[]'::json) as contacts"""
)


def _select(schema: str) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier("p", c) for c in PATIENT_COLUMNS)
    return sql.SQL("select {columns}, {contacts} from {patients} p").format(
        columns=columns,
        contacts=_CONTACTS.format(contacts=sql.Identifier(schema, "patient_contacts")),
        patients=sql.Identifier(schema, "patients"),
    )


def fetch_patients(
    conn: psycopg.Connection[Any], ids: Iterable[str], *, schema: str = "public"
) -> dict[str, dict[str, Any]]:
    """Current source state of the given patients, one query for the whole batch."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = _select(schema) + sql.SQL(" where p.id = any(%s)")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, (wanted,))
        return {row["id"]: row for row in cur}


def stream_patients(
    conn: psycopg.Connection[Any],
    *,
    schema: str = "public",
    clinic_id: str | None = None,
    batch_size: int = 2000,
    partition: tuple[int, int] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Every patient in batches through a server-side cursor: memory flat in table size.

    Must run inside a transaction (the named cursor lives in it). `partition`
    (k, n) keeps the k-th of n disjoint slices by id hash, for parallel readers.
    """
    query = _select(schema)
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if clinic_id is not None:
        conditions.append(sql.SQL("p.clinic_id = %s"))
        params.append(clinic_id)
    if partition is not None and partition[1] > 1:
        conditions.append(sql.SQL("(hashtext(p.id) & 2147483647) %% %s = %s"))
        params.extend([partition[1], partition[0]])
    if conditions:
        query += sql.SQL(" where ") + sql.SQL(" and ").join(conditions)
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
