"""API key lifecycle on real PostgreSQL: scopes, required user, expiry, list, revoke, rotate."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core import schema
from core.apikeys import create_key, find_key, list_keys, rotate_key
from core.settings import get_settings
from patient_search.cli import main


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_create_with_scopes_user_and_expiry(
    cli: None, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["apikey", "create", "--clinic", "c1", "--clinic", "c2", "--name", "EHR"]
    assert main([*args, "--scope", "fhir", "--scope", "audit", "--require-user"]) == 0
    key = last_line(capsys)
    assert main(["apikey", "create", "--clinic", "c1", "--expires", "30"]) == 0
    plain = last_line(capsys)
    with psycopg.connect(db_url) as conn:
        found = find_key(conn, key)
        assert found is not None
        assert found.clinics == ("c1", "c2")
        assert found.scopes == {"fhir", "audit"}
        assert found.require_user and found.expires_at is None
        other = find_key(conn, plain)
        assert other is not None and other.scopes == {"search", "lookup", "read"}
        assert other.expires_at is not None
        days = (other.expires_at - dt.datetime.now(dt.UTC)).total_seconds() / 86400
        assert 29.9 < days <= 30
        # An expired key is not found at all.
        conn.execute("update patient_search.api_keys set expires_at = now() - interval '1 s'")
        assert find_key(conn, plain) is None
    with pytest.raises(SystemExit, match="unknown scope"):
        main(["apikey", "create", "--clinic", "c1", "--scope", "admin"])


def test_list_shows_grants_never_the_secret(
    cli: None, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["apikey", "create", "--clinic", "c1", "--name", "booking", "--scope", "lookup"])
    key = last_line(capsys)
    with psycopg.connect(db_url) as conn:
        conn.execute("update patient_search.api_keys set last_used_at = '2026-11-20 10:00+00'")
    assert main(["apikey", "list"]) == 0
    out = capsys.readouterr().out
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["id", "name", "clinics", "scopes", "user"]
    assert "booking" in row and "lookup" in row and "2026-11-20 10:00" in row
    assert "active" in row
    assert key not in out and key[4:12] not in out


def test_revoke_and_rotate(cli: None, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["apikey", "create", "--clinic", "c1", "--scope", "search", "--require-user"])
    old = last_line(capsys)
    with psycopg.connect(db_url) as conn:
        old_id = find_key(conn, old).id  # type: ignore[union-attr]
    assert main(["apikey", "rotate", str(old_id), "--grace-hours", "2"]) == 0
    new = last_line(capsys)
    with psycopg.connect(db_url) as conn:
        new_key, old_key = find_key(conn, new), find_key(conn, old)
        assert new_key is not None and old_key is not None  # both work during the grace
        assert new_key.scopes == {"search"} and new_key.require_user
        assert old_key.expires_at is not None
        left = old_key.expires_at - dt.datetime.now(dt.UTC)
        assert dt.timedelta(hours=1.9) < left <= dt.timedelta(hours=2)
        listed = {k.id: k for k in list_keys(conn)}
        assert listed[new_key.id].rotated_from == old_id
    assert main(["apikey", "revoke", str(new_key.id)]) == 0
    assert main(["apikey", "revoke", str(new_key.id)]) == 1  # already revoked
    assert main(["apikey", "rotate", str(new_key.id)]) == 1  # only active keys rotate
    with psycopg.connect(db_url) as conn:
        assert find_key(conn, new) is None
        # Rotation with no grace ends the old key at once.
        key = create_key(conn, ["c1"])
        key_id = find_key(conn, key).id  # type: ignore[union-attr]
        rotate_key(conn, key_id, grace=dt.timedelta(0))
        assert find_key(conn, key) is None


def test_keys_made_before_scopes_keep_search_lookup_read(server_url: str) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        with psycopg.connect(url) as conn:
            first = schema.MIGRATIONS[:1]
            original = schema.MIGRATIONS[:]
            schema.MIGRATIONS[:] = first
            try:
                schema.migrate(conn)
            finally:
                schema.MIGRATIONS[:] = original
            conn.execute(
                "insert into patient_search.api_keys (key_hash, name, clinics)"
                " values ('legacy-hash', 'old EHR', '{c1}')"
            )
            conn.commit()
            assert 50 in schema.migrate(conn)
            row = conn.execute(
                "select scopes, require_user, expires_at from patient_search.api_keys"
            ).fetchone()
        assert row == (["search", "lookup", "read"], False, None)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
