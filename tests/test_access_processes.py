"""Accountable access across real `patient-search serve` processes on real PostgreSQL:
revocation within a second in two processes, one rate limit across two workers, and no
audit record lost on SIGTERM."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from core.apikeys import create_key, find_key, revoke_key
from tests.factories import cloned_database
from tests.fixtures import serve, stop


@pytest.fixture(scope="module")
def module_db(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db) as url:
        yield url


@pytest.fixture(scope="module")
def servers(module_db: str) -> Iterator[list[str]]:
    """Two `serve` processes on one database; the second has two workers."""
    limits = {"rate_limit_user_burst": "10", "rate_limit_user_per_s": "0.001"}
    first, base_a = serve(module_db, **limits)
    try:
        second, base_b = serve(module_db, workers=2, **limits)
    except AssertionError:
        stop(first)
        raise
    try:
        yield [base_a, base_b]
    finally:
        stop(first)
        stop(second)


def new_key(db_url: str) -> tuple[int, str]:
    with psycopg.connect(db_url) as conn:
        key = create_key(conn, ["clinic-a"])
        found = find_key(conn, key)
        conn.commit()
    assert found is not None
    return found.id, key


def read(client: httpx.Client, key: str, **headers: str) -> httpx.Response:
    return client.get("/v1/patients/nobody", headers={"X-API-Key": key, **headers}, timeout=10)


@pytest.fixture
def clients(servers: list[str]) -> Iterator[list[httpx.Client]]:
    """Four keep-alive connections per server, so the workers of one server share them."""
    made = [httpx.Client(base_url=base) for base in servers for _ in range(4)]
    yield made
    for c in made:
        c.close()


def test_revocation_reaches_every_process_within_a_second(
    module_db: str, clients: list[httpx.Client]
) -> None:
    key_id, key = new_key(module_db)
    for client in clients:  # every worker's cache holds the key
        assert read(client, key).status_code == 404  # authenticated; no such patient
    with psycopg.connect(module_db) as conn:
        assert revoke_key(conn, key_id)
        conn.commit()
    revoked_at = time.monotonic()
    answers: list[tuple[float, int]] = []
    while time.monotonic() - revoked_at < 1.5:
        for client in clients:
            sent = time.monotonic() - revoked_at
            answers.append((sent, read(client, key).status_code))
    accepted = [sent for sent, status in answers if status != 401]
    late = [sent for sent in accepted if sent >= 1.0]
    assert not late, f"still accepted {late} s after the revocation"
    assert {status for sent, status in answers if sent >= 1.0} == {401}
    print(f"revoked key last accepted {max(accepted, default=0):.3f} s after the commit")


def test_one_rate_limit_across_workers_and_processes(
    module_db: str, clients: list[httpx.Client]
) -> None:
    _, key = new_key(module_db)
    statuses = []
    for i in range(30):
        r = read(clients[i % len(clients)], key, **{"X-Staff-User": "clerk.7"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            refused = r
    assert statuses.count(404) == 10  # the burst, once, for all workers together
    assert statuses.count(429) == 20
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == '"key";q=2000;w=2, "user";q=10;w=10000'
    assert refused.headers["RateLimit"].startswith('"user";r=0;t=')
    assert refused.json()["error"]["code"] == "rate_limited"


def test_queued_records_are_written_on_sigterm(module_db: str) -> None:
    proc, base = serve(module_db, audit_flush_ms="1000")
    try:
        _, key = new_key(module_db)
        with psycopg.connect(module_db, autocommit=True) as conn:
            before = conn.execute("select count(*) from patient_search.audit_log").fetchone()
            with httpx.Client(base_url=base) as client:
                answer = read(client, key, **{"X-Request-Id": "sigterm-1"})
            assert answer.status_code == 404
            queued = conn.execute(
                "select count(*) from patient_search.audit_log where request_id = 'sigterm-1'"
            ).fetchone()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            after = conn.execute(
                "select count(*) from patient_search.audit_log where request_id = 'sigterm-1'"
            ).fetchone()
            total = conn.execute("select count(*) from patient_search.audit_log").fetchone()
    finally:
        stop(proc)
    assert queued == (0,)  # still in the queue when the signal came
    assert after == (1,)
    assert before is not None and total == (before[0] + 1,)
