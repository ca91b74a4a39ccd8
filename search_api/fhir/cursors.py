"""Paging links that name a stored search instead of carrying it.

A `next` link holds only a random token; the search's parameters (patient data)
stay in the database (patient_search.fhir_cursors), with the clinics of the key
that ran it. Another key, of other clinics, gets "not found" for the same
token, as does an expired one.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

TOKEN_BYTES = 18
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class Page:
    applied: tuple[tuple[str, str], ...]  # the search's recognised parameters
    offset: int


def _clinics(clinics: Sequence[str]) -> list[str]:
    return sorted(set(clinics))


def save_page(pool: ConnectionPool, clinics: Sequence[str], page: Page, *, ttl_s: int) -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    params: dict[str, Any] = {"applied": [list(p) for p in page.applied], "offset": page.offset}
    with pool.connection() as conn:
        conn.execute(
            "delete from patient_search.fhir_cursors "
            "where created_at < now() - make_interval(secs => %s)",
            (ttl_s,),
        )
        conn.execute(
            "insert into patient_search.fhir_cursors (token, clinics, params) values (%s, %s, %s)",
            (token, _clinics(clinics), Jsonb(params)),
        )
    return token


def load_page(
    pool: ConnectionPool, clinics: Sequence[str], token: str, *, ttl_s: int
) -> Page | None:
    """The page a token names, if it was made for exactly these clinics and is still valid."""
    if not 8 <= len(token) <= 64 or not set(token) <= _TOKEN_CHARS:
        return None
    with pool.connection() as conn:
        row = conn.execute(
            "select params from patient_search.fhir_cursors where token = %s and clinics = %s "
            "and created_at >= now() - make_interval(secs => %s)",
            (token, _clinics(clinics), ttl_s),
        ).fetchone()
    if row is None:
        return None
    params = row[0]
    return Page(
        applied=tuple((str(k), str(v)) for k, v in params["applied"]),
        offset=int(params["offset"]),
    )
