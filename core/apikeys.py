"""API keys: random secrets shown once, stored as SHA-256 hashes, each scoped to clinics.

A key has 256 bits of entropy, so a fast hash is enough: nobody can guess
a preimage, and verification stays cheap on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

PREFIX = "psk_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str | None
    clinics: tuple[str, ...]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(
    conn: psycopg.Connection[Any], clinics: Sequence[str], *, name: str | None = None
) -> str:
    wanted = tuple(dict.fromkeys(c.strip() for c in clinics if c and c.strip()))
    if not wanted:
        raise ValueError("an API key needs at least one clinic")
    key = PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "insert into patient_search.api_keys (key_hash, name, clinics) values (%s, %s, %s)",
        (hash_key(key), name, list(wanted)),
    )
    return key


def plausible_key(key: str) -> bool:
    """Shaped like a key we issue: our prefix, URL-safe characters, a sane length."""
    body = key[len(PREFIX) :]
    return (
        key.startswith(PREFIX)
        and 0 < len(body) <= 100
        and body.isascii()
        and (body.replace("-", "").replace("_", "").isalnum())
    )


def find_key(conn: psycopg.Connection[Any], key: str) -> ApiKey | None:
    if not plausible_key(key):
        return None
    row = conn.execute(
        "select id, name, clinics from patient_search.api_keys "
        "where key_hash = %s and revoked_at is null",
        (hash_key(key),),
    ).fetchone()
    return ApiKey(id=row[0], name=row[1], clinics=tuple(row[2])) if row else None


def revoke_key(conn: psycopg.Connection[Any], key_id: int) -> bool:
    cur = conn.execute(
        "update patient_search.api_keys set revoked_at = now() "
        "where id = %s and revoked_at is null",
        (key_id,),
    )
    return cur.rowcount == 1
