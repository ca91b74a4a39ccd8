"""API keys: random secrets shown once, stored as SHA-256 hashes, scoped to clinics and scopes.

A key belongs to an integrating system (an EHR, a booking service). It has
256 bits of entropy, so a fast hash is enough: nobody can guess a preimage,
and verification stays cheap on every request.

Lifecycle: a key may expire (`expires_at`), be revoked, or be rotated (a new
secret with the same grants; the old one keeps working for a grace period).
Every change is announced on NOTIFY_CHANNEL so that each API process drops its
cached copy at once (search_api.access listens).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

PREFIX = "psk_"
SCOPES = ("search", "lookup", "read", "fhir", "audit")
DEFAULT_SCOPES = ("search", "lookup", "read")
NOTIFY_CHANNEL = "patient_search_api_keys"


@dataclass(frozen=True)
class ApiKey:
    """What a request's key grants; `expires_at` is checked on each use, cache or not."""

    id: int
    name: str | None
    clinics: tuple[str, ...]
    scopes: frozenset[str] = frozenset(DEFAULT_SCOPES)
    require_user: bool = False
    expires_at: dt.datetime | None = None

    def expired(self, now: dt.datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (now or dt.datetime.now(dt.UTC)) >= self.expires_at


@dataclass(frozen=True)
class KeyInfo:
    """A key as `apikey list` shows it: everything except the secret."""

    id: int
    name: str | None
    clinics: tuple[str, ...]
    scopes: tuple[str, ...]
    require_user: bool
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    rotated_from: int | None

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= dt.datetime.now(dt.UTC):
            return "expired"
        return "active"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def normalize_scopes(scopes: Iterable[str] | None) -> tuple[str, ...]:
    """Known scopes in canonical order; None means the defaults of a key made before scopes."""
    if scopes is None:
        return DEFAULT_SCOPES
    wanted = {s.strip().lower() for s in scopes if s and s.strip()}
    unknown = wanted - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(sorted(unknown))}; use {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError("an API key needs at least one scope")
    return tuple(s for s in SCOPES if s in wanted)


def _notify(conn: psycopg.Connection[Any], key_id: int) -> None:
    # Delivered when the caller's transaction commits.
    conn.execute("select pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(key_id)))


def create_key(
    conn: psycopg.Connection[Any],
    clinics: Sequence[str],
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    require_user: bool = False,
    expires_days: float | None = None,
    rotated_from: int | None = None,
) -> str:
    """Store a new key's hash and return the key; the caller commits."""
    wanted = tuple(dict.fromkeys(c.strip() for c in clinics if c and c.strip()))
    if not wanted:
        raise ValueError("an API key needs at least one clinic")
    if expires_days is not None and expires_days <= 0:
        raise ValueError("--expires takes a positive number of days")
    key = PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "insert into patient_search.api_keys"
        " (key_hash, name, clinics, scopes, require_user, expires_at, rotated_from)"
        " values (%s, %s, %s, %s, %s,"
        " case when %s::float8 is null then null"
        " else now() + make_interval(secs => %s::float8 * 86400) end, %s)",
        (
            hash_key(key),
            name,
            list(wanted),
            list(normalize_scopes(scopes)),
            require_user,
            expires_days,
            expires_days,
            rotated_from,
        ),
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
    """The live key (not revoked, not expired) with this secret, or None."""
    if not plausible_key(key):
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "select id, name, clinics, scopes, require_user, expires_at"
            " from patient_search.api_keys where key_hash = %s and revoked_at is null"
            " and (expires_at is null or expires_at > now())",
            (hash_key(key),),
        ).fetchone()
    if row is None:
        return None
    return ApiKey(**{**row, "clinics": tuple(row["clinics"]), "scopes": frozenset(row["scopes"])})


_INFO_COLUMNS = (
    "id, name, clinics, scopes, require_user, created_at, expires_at, last_used_at,"
    " revoked_at, rotated_from"
)


def _info(row: dict[str, Any]) -> KeyInfo:
    """A row of _INFO_COLUMNS, mapped to KeyInfo's fields by column name."""
    return KeyInfo(**{**row, "clinics": tuple(row["clinics"]), "scopes": tuple(row["scopes"])})


def list_keys(conn: psycopg.Connection[Any]) -> list[KeyInfo]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"select {_INFO_COLUMNS} from patient_search.api_keys order by id")
        return [_info(r) for r in cur]


def get_key(conn: psycopg.Connection[Any], key_id: int) -> KeyInfo | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"select {_INFO_COLUMNS} from patient_search.api_keys where id = %s", (key_id,)
        ).fetchone()
    return _info(row) if row else None


def revoke_key(conn: psycopg.Connection[Any], key_id: int) -> bool:
    """Revoke now; every API process forgets the key within a second of the commit."""
    cur = conn.execute(
        "update patient_search.api_keys set revoked_at = now() "
        "where id = %s and revoked_at is null",
        (key_id,),
    )
    if cur.rowcount == 1:
        _notify(conn, key_id)
    return cur.rowcount == 1


def rotate_key(
    conn: psycopg.Connection[Any], key_id: int, *, grace: dt.timedelta
) -> tuple[int, str]:
    """A new secret with the same grants; the old key expires after `grace` (or sooner)."""
    old = get_key(conn, key_id)
    if old is None or old.status != "active":
        raise ValueError(f"API key {key_id} is not active; only an active key can be rotated")
    remaining_days = None
    if old.expires_at is not None:
        remaining_days = (old.expires_at - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    key = create_key(
        conn,
        old.clinics,
        name=old.name,
        scopes=old.scopes,
        require_user=old.require_user,
        expires_days=remaining_days if remaining_days and remaining_days > 0 else None,
        rotated_from=old.id,
    )
    conn.execute(
        "update patient_search.api_keys set expires_at ="
        " least(coalesce(expires_at, 'infinity'), now() + %s) where id = %s",
        (grace, key_id),
    )
    _notify(conn, key_id)
    row = conn.execute(
        "select id from patient_search.api_keys where key_hash = %s", (hash_key(key),)
    ).fetchone()
    assert row is not None
    return row[0], key


def touch_keys(conn: psycopg.Connection[Any], key_ids: Iterable[int]) -> None:
    """Record use; the audit writer calls this off the request path, at most once a minute."""
    ids = sorted(set(key_ids))
    if ids:
        conn.execute(
            "update patient_search.api_keys set last_used_at = now() where id = any(%s)",
            (ids,),
        )
