"""Accountable access end to end on real PostgreSQL: scopes, staff identity, the audit
record of every request (refused ones too), fail-closed, GET /v1/audit, lookup lockout."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from core.apikeys import create_key
from core.audit import verify
from core.settings import Settings
from search_api.access import new_request_id
from search_api.app import create_app
from search_api.ratelimit import locked, record_miss
from search_api.service import lookup_terms
from tests.factories import JOHN_SMITH, patient, seed

PATIENTS: list[dict[str, Any]] = [
    dict(JOHN_SMITH, id="p1", phones=["(555) 010-2233"]),
    patient("p2", "Jon", "Smyth", "1990-07-02"),
    patient("p3", "Ann", "Lee", "1970-01-01"),
    dict(JOHN_SMITH, id="q1", clinic_id="clinic-b", mrn=None),
]


@pytest.fixture
def settings() -> Settings:
    return Settings(pool_min_size=1, pool_max_size=4, audit_flush_ms=20)


@pytest.fixture
def keys(db_url: str, settings: Settings) -> dict[str, str]:
    return seed(
        db_url,
        PATIENTS,
        settings,
        lambda c: {
            "front": create_key(c, ["clinic-a"], name="front desk"),
            "booking": create_key(c, ["clinic-a"], scopes=["lookup"]),
            "ehr": create_key(c, ["clinic-a"], require_user=True),
            "privacy": create_key(c, ["clinic-a"], scopes=["audit"]),
            "privacy_b": create_key(c, ["clinic-b"], scopes=["audit"]),
        },
    )


@pytest.fixture
def client(db_url: str, keys: dict[str, str], settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db_url), raise_server_exceptions=False) as c:
        yield c


def trail(db_url: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The audit rows once `count` of them are written (the writer flushes in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(db_url) as conn:
            cur = conn.execute("select * from patient_search.audit_log order by seq")
            names = [d.name for d in cur.description or ()]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def post(client: TestClient, path: str, key: str, body: Any, **headers: str) -> Any:
    return client.post(path, json=body, headers={"X-API-Key": key, **headers})


def test_every_action_is_audited_with_the_patients_returned(
    client: TestClient, keys: dict[str, str], db_url: str
) -> None:
    staff = {"X-Staff-User": "nurse.jones", "X-Purpose-Of-Use": "treat", "X-Request-Id": "rq-1"}
    r = post(client, "/v1/patients/search", keys["front"], {"q": "john smith"}, **staff)
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "rq-1"
    found = [x["id"] for x in r.json()["results"]]
    assert found and "q1" not in found
    lookup = {"phone": "555-010-2233", "birthdate": "1985-03-14"}
    assert post(client, "/v1/patients/lookup", keys["front"], lookup).status_code == 200
    r = client.get("/v1/patients/p3", headers={"Authorization": f"Bearer {keys['front']}"})
    assert r.status_code == 200
    generated = r.headers["X-Request-Id"]
    r = client.get("/v1/audit?patient=p1", headers={"X-API-Key": keys["privacy"]})
    assert r.status_code == 200

    rows = trail(db_url, 4)
    assert [row["action"] for row in rows] == ["search", "lookup", "read", "audit"]
    search, lookup_row, read, audit = rows
    assert search["patient_ids"] == found
    assert search["staff_user"] == "nurse.jones" and search["purpose"] == "TREAT"
    assert search["request_id"] == "rq-1" and search["outcome"] == 200
    assert search["clinics"] == ["clinic-a"] and search["source"] == "testclient"
    received = json.loads(search["request"])  # the request as received
    assert received["body"] == '{"q":"john smith"}' and received["method"] == "POST"
    assert lookup_row["patient_ids"] == ["p1"]
    assert read["patient_ids"] == ["p3"] and read["request_id"] == generated
    assert "/v1/patients/p3" in read["request"]
    assert audit["patient_ids"] == ["p1"] and audit["key_id"] != search["key_id"]
    with psycopg.connect(db_url) as conn:
        assert verify(conn).ok
        used = conn.execute(
            "select count(*) from patient_search.api_keys where last_used_at is not null"
        ).fetchone()
    assert used == (2,)


def test_refused_requests_are_audited(
    client: TestClient, keys: dict[str, str], db_url: str
) -> None:
    path = "/v1/patients/search"
    assert post(client, path, "psk_wrong", {"q": "smith"}).status_code == 401
    assert client.post(path, json={"q": "smith"}).status_code == 401
    assert post(client, path, keys["booking"], {"q": "smith"}).status_code == 403
    assert post(client, path, keys["front"], {"q": "j"}).status_code == 400
    assert post(client, path, keys["ehr"], {"q": "smith"}).status_code == 400
    bad = client.post(
        path,
        content=b"{not json",
        headers={"X-API-Key": keys["front"], "Content-Type": "application/json"},
    )
    assert bad.status_code == 422
    assert client.get("/v1/patients/q1", headers={"X-API-Key": keys["front"]}).status_code == 404
    rows = trail(db_url, 7)
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("search", 401),
        ("search", 401),
        ("search", 403),
        ("search", 400),
        ("search", 400),
        ("search", 422),
        ("read", 404),
    ]
    assert rows[0]["key_id"] is None and rows[2]["key_id"] is not None
    assert all(r["patient_ids"] == [] for r in rows)
    assert "{not json" in rows[5]["request"]


def test_scopes(client: TestClient, keys: dict[str, str]) -> None:
    lookup = {"mrn": "00412", "birthdate": "1985-03-14"}
    booking = keys["booking"]
    assert post(client, "/v1/patients/lookup", booking, lookup).json()["results"][0]["id"] == "p1"
    for response in (
        post(client, "/v1/patients/search", booking, {"q": "smith"}),
        client.get("/v1/patients/p1", headers={"X-API-Key": booking}),
        client.get("/v1/audit", headers={"X-API-Key": booking}),
        post(client, "/v1/patients/search", keys["privacy"], {"q": "smith"}),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        assert "scope" in response.json()["error"]["message"]


def test_required_and_malformed_staff_headers(client: TestClient, keys: dict[str, str]) -> None:
    path, body = "/v1/patients/search", {"q": "smith"}
    r = post(client, path, keys["ehr"], body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "staff_user_required"
    assert post(client, path, keys["ehr"], body, **{"X-Staff-User": "dr.a"}).status_code == 200
    r = post(client, path, keys["front"], body, **{"X-Staff-User": "x" * 129})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_header"
    r = post(client, path, keys["front"], body, **{"X-Purpose-Of-Use": "not a code!"})
    assert r.status_code == 400
    # A malformed request id is replaced, never echoed.
    r = post(client, path, keys["front"], body, **{"X-Request-Id": "bad id\twith tab"})
    assert r.headers["X-Request-Id"] != "bad id\twith tab" and len(r.headers["X-Request-Id"]) == 32


def test_rate_limited_request_is_429_with_headers_and_audited(
    db_url: str, keys: dict[str, str]
) -> None:
    settings = Settings(
        pool_min_size=1, audit_flush_ms=20, rate_limit_user_burst=2, rate_limit_user_per_s=0.01
    )
    with TestClient(create_app(settings, db_url), raise_server_exceptions=False) as client:
        statuses = []
        for _ in range(3):
            r = post(
                client,
                "/v1/patients/search",
                keys["front"],
                {"q": "smith"},
                **{"X-Staff-User": "clerk"},
            )
            statuses.append(r.status_code)
        assert statuses == [200, 200, 429]
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        assert '"user";q=2;w=200' in r.headers["RateLimit-Policy"]
        assert r.headers["RateLimit"].startswith('"user";r=0;t=')
        # Another staff user of the same key still gets through.
        ok = post(
            client,
            "/v1/patients/search",
            keys["front"],
            {"q": "smith"},
            **{"X-Staff-User": "other"},
        )
        assert ok.status_code == 200 and "RateLimit" in ok.headers
    rows = trail(db_url, 4)
    assert [r["outcome"] for r in rows] == [200, 200, 429, 200]
    assert rows[2]["note"] == "rate limited" and rows[2]["patient_ids"] == []


def test_fails_closed_when_the_trail_cannot_be_written(
    client: TestClient, keys: dict[str, str], db_url: str
) -> None:
    path, body = "/v1/patients/search", {"q": "john smith"}
    assert post(client, path, keys["front"], body).status_code == 200
    trail(db_url, 1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("alter table patient_search.audit_log rename to audit_log_away")
        try:
            statuses: list[int] = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and statuses[-1:] != [503]:
                r = post(client, path, keys["front"], body)
                statuses.append(r.status_code)
                time.sleep(0.05)
            assert statuses[-1] == 503
            assert r.json()["error"]["code"] == "audit_unavailable"
            assert "results" not in r.json() and "Smith" not in r.text
        finally:
            conn.execute("alter table patient_search.audit_log_away rename to audit_log")
    # Once the table is back, the kept records (the refused ones included) are written.
    rows = trail(db_url, len(statuses) + 1)
    assert len(rows) == len(statuses) + 1 and rows[-1]["outcome"] == 503
    with psycopg.connect(db_url) as conn:
        assert verify(conn).ok


def test_serve_and_alarm_when_configured(db_url: str, keys: dict[str, str]) -> None:
    from search_api.metrics import AUDIT_FAILURES

    settings = Settings(pool_min_size=1, audit_flush_ms=20, audit_on_failure="serve")
    before = AUDIT_FAILURES._value.get()
    app = create_app(settings, db_url)
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        psycopg.connect(db_url, autocommit=True) as conn,
    ):
        conn.execute("alter table patient_search.audit_log rename to audit_log_away")
        try:
            statuses = []
            for _ in range(10):
                statuses.append(
                    post(client, "/v1/patients/search", keys["front"], {"q": "smith"}).status_code
                )
                time.sleep(0.05)
        finally:
            conn.execute("alter table patient_search.audit_log_away rename to audit_log")
    assert set(statuses) == {200}
    assert AUDIT_FAILURES._value.get() > before


def test_audit_api_filters_and_clinic_scope(
    client: TestClient, keys: dict[str, str], db_url: str
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    staff = {"X-Staff-User": "nurse.jones"}
    post(client, "/v1/patients/search", keys["front"], {"q": "john smith"}, **staff)
    client.get("/v1/patients/p3", headers={"X-API-Key": keys["front"], "X-Staff-User": "dr.b"})
    trail(db_url, 2)
    privacy = {"X-API-Key": keys["privacy"]}
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat()
    r = client.get("/v1/audit", params={"patient": "p1", "from": since}, headers=privacy)
    assert r.status_code == 200
    records = r.json()["records"]
    assert [x["staff_user"] for x in records] == ["nurse.jones"]
    assert "p1" in records[0]["patient_ids"] and records[0]["hash"]
    r = client.get("/v1/audit", params={"user": "dr.b"}, headers=privacy)
    assert [x["patient_ids"] for x in r.json()["records"]] == [["p3"]]
    # A clinic-b privacy key sees none of clinic-a's records, nor may it ask for them.
    other = {"X-API-Key": keys["privacy_b"]}
    assert client.get("/v1/audit", headers=other).json()["records"] == []
    assert client.get("/v1/audit", params={"clinic": "clinic-a"}, headers=other).status_code == 403
    assert (
        client.get("/v1/audit", params={"from": "2026-01-01T00:00:00"}, headers=privacy).status_code
        == 400
    )
    bundle = client.get("/v1/audit", params={"format": "fhir", "limit": 5}, headers=privacy).json()
    parsed = Bundle.model_validate(bundle)
    assert parsed.entry and all(e.resource.__resource_type__ == "AuditEvent" for e in parsed.entry)
    r = client.get("/v1/audit", params={"limit": 1}, headers=privacy)
    first = r.json()
    nxt = client.get("/v1/audit", params={"limit": 1, "after": first["next"]}, headers=privacy)
    assert nxt.json()["records"][0]["seq"] > first["records"][0]["seq"]


def test_lookup_lockout(client: TestClient, keys: dict[str, str], db_url: str) -> None:
    path, key = "/v1/patients/lookup", keys["front"]
    wrong = [f"1985-03-{day:02d}" for day in range(1, 6)]
    for birthdate in wrong:
        r = post(client, path, key, {"phone": "555-010-2233", "birthdate": birthdate})
        assert r.status_code == 200 and r.json()["results"] == []
    # The right birth date now answers like a miss for this key and phone ...
    right = {"phone": "(555) 010-2233", "birthdate": "1985-03-14"}
    locked = post(client, path, key, right)
    assert locked.status_code == 200 and locked.json()["results"] == []
    assert set(locked.json()) == {"results", "took_ms"}
    # ... but the MRN still works, as does the phone for another key.
    assert post(client, path, key, {"mrn": "00412", "birthdate": "1985-03-14"}).json()["results"]
    other = create_other_key(db_url)
    assert post(client, path, other, right).json()["results"][0]["id"] == "p1"
    rows = trail(db_url, 8)
    assert rows[4]["note"] == "identifier locked after repeated misses"
    assert rows[5]["note"] == "identifier locked after repeated misses"
    assert rows[5]["patient_ids"] == []


def test_a_lookup_checks_its_lockout_in_its_own_statement(
    client: TestClient, settings: Settings, db_url: str
) -> None:
    """PostgresEngine.lookup answers None, reading no one, when its `unless` holds: the
    lockout is checked where the lookup runs, not in a statement of its own."""
    engine = client.app.state.search.postgres  # type: ignore[attr-defined]
    terms = lookup_terms(birthdate="1985-03-14", phone="555-010-2233", mrn=None, settings=settings)
    clinics = ("clinic-a",)
    assert [c.id for c in engine.lookup(terms, clinics)] == ["p1"]
    assert engine.lookup(terms, clinics, unless=sql.SQL("true")) is None
    phone = [terms[0][0]]
    assert [c.id for c in engine.lookup(terms, clinics, unless=locked(7, phone))] == ["p1"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(settings.lookup_lockout_misses):
            record_miss(conn, 7, phone, settings)
    assert engine.lookup(terms, clinics, unless=locked(7, phone)) is None
    assert [c.id for c in engine.lookup(terms, clinics, unless=locked(8, phone))] == ["p1"]
    nobody = lookup_terms(birthdate="1985-03-15", phone="555-010-2233", mrn=None, settings=settings)
    assert engine.lookup(nobody, clinics, unless=locked(8, phone)) == []


def create_other_key(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        key = create_key(conn, ["clinic-a"])
        conn.commit()
    return key


def test_thin_search_is_400_saying_what_to_add(client: TestClient, keys: dict[str, str]) -> None:
    r = post(client, "/v1/patients/search", keys["front"], {"q": "female"})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "query_too_thin",
        "message": "a sex alone is not a search: add a name, a date of birth, a phone or an MRN",
    }


def test_fhir_facade_uses_the_same_access_and_trail(
    client: TestClient, keys: dict[str, str], db_url: str
) -> None:
    with psycopg.connect(db_url) as conn:
        ehr = create_key(conn, ["clinic-a"], scopes=["fhir"])
        conn.commit()
    bearer = {"Authorization": f"Bearer {ehr}", "X-Staff-User": "dr.fhir"}
    assert client.get("/fhir/Patient/p3", headers=bearer).status_code == 200
    found = client.get("/fhir/Patient", params={"family": "smith"}, headers=bearer)
    assert found.status_code == 200
    searched = sorted(e["resource"]["id"] for e in found.json().get("entry", []))
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "resource",
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "Smith", "given": ["John"]}],
                    "birthDate": "1985-03-14",
                },
            }
        ],
    }
    matched = client.post(
        "/fhir/Patient/$match",
        json=body,
        headers={**bearer, "Content-Type": "application/fhir+json"},
    )
    assert matched.status_code == 200
    # A /v1 key without the fhir scope is refused, as an OperationOutcome, and recorded.
    refused = client.get("/fhir/Patient/p3", headers={"X-API-Key": keys["front"]})
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    rows = trail(db_url, 4)
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("read", 200),
        ("search", 200),
        ("match", 200),
        ("read", 403),
    ]
    assert rows[0]["patient_ids"] == ["p3"] and rows[0]["staff_user"] == "dr.fhir"
    assert sorted(rows[1]["patient_ids"]) == searched and "p1" in searched
    assert "p1" in rows[2]["patient_ids"] and "q1" not in rows[2]["patient_ids"]
    assert rows[3]["patient_ids"] == []


def test_generated_request_ids_are_unique_across_processes() -> None:
    """A random prefix per process, then a counter: a forked worker draws its own prefix."""
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports its first id and leaves at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    assert len(theirs) == 32 and theirs[:16] != ids[0][:16]
    assert theirs not in ids
