"""The HTTP edge (issue 9, item 5): no 5xx from any path or header, size limits, a cap on
words, one deadline for the whole search, and PHI answers that no cache may keep."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from core.apikeys import create_key, hash_key
from core.settings import Settings
from engines.pg_search import SEARCH_DEADLINES
from indexer.reindex import reindex
from search_api.app import create_app
from tests.factories import insert_patient


@pytest.fixture
def seeded(db_url: str) -> tuple[str, str]:
    with psycopg.connect(db_url) as conn:
        insert_patient(
            conn,
            "p1",
            given="John",
            family="Smith",
            birth_date=dt.date(1985, 3, 14),
            phones=["(555) 010-2233"],
            mrn="00412",
        )
        key = create_key(conn, ["clinic-a"])
        conn.commit()
    reindex(db_url, Settings(), progress=False)
    return db_url, key


def open_client(url: str, key: str, **settings: object) -> TestClient:
    app = create_app(Settings(pool_min_size=1, pool_max_size=2, **settings), url)  # type: ignore[arg-type]
    return TestClient(app, headers={"X-API-Key": key}, raise_server_exceptions=False)


@pytest.fixture
def client(seeded: tuple[str, str]) -> Iterator[TestClient]:
    with open_client(*seeded) as c:
        yield c


def test_nul_in_the_path_is_a_4xx(client: TestClient) -> None:
    response = client.get("/v1/patients/x%00y")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_implausible_keys_never_reach_the_cache_or_the_database(client: TestClient) -> None:
    for key in ("x" * 65536, "psk_" + "a" * 500, "no-prefix-key", "psk_bad key!"):
        response = client.post(
            "/v1/patients/search", json={"q": "smith"}, headers={"X-API-Key": key}
        )
        assert 400 <= response.status_code < 500, response.status_code
        assert response.json()["error"]["code"] in ("unauthorized", "headers_too_large")
    cached = client.app.state.search.access.keys._entries  # type: ignore[attr-defined]
    assert set(cached) <= {hash_key(client.headers["X-API-Key"])}


def test_a_huge_body_is_refused_by_size_before_parsing(client: TestClient) -> None:
    declared = client.post(
        "/v1/patients/search",
        content=b"{" + b" " * (100 * 2**20) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as it streams
        yield b'{"q": "'
        for _ in range(200):
            yield b"a" * 65536

    streamed = client.post(
        "/v1/patients/search", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413


def test_too_many_words_is_a_clear_4xx(client: TestClient) -> None:
    words = " ".join(f"{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(66))
    response = client.post("/v1/patients/search", json={"q": words[:200]})
    assert response.status_code == 422
    assert "words" in response.json()["error"]["message"]
    assert client.post("/v1/patients/search", json={"q": "john smith 3/14/1985"}).status_code == 200


def test_phi_answers_are_not_stored(client: TestClient) -> None:
    answers = [
        client.post("/v1/patients/search", json={"q": "smith"}),
        client.post(
            "/v1/patients/lookup", json={"phone": "555-010-2233", "birthdate": "1985-03-14"}
        ),
        client.get("/v1/patients/p1"),
        client.get("/v1/patients/nobody"),
    ]
    for response in answers:
        assert response.headers["cache-control"] == "no-store", response.request.url


def search_with_a_table_locked(
    seeded: tuple[str, str], table: str, q: str
) -> tuple[int, dict[str, object], dict[str, str]]:
    """A search whose passes on `table` wait for a lock until its deadline (300 ms)."""
    with open_client(*seeded, search_timeout_ms=300) as client:
        client.post("/v1/patients/search", json={"q": "warm"})  # keys and words loaded
        with psycopg.connect(seeded[0]) as locker:
            locker.execute(f"lock table patient_search.{table} in access exclusive mode")
            response = client.post("/v1/patients/search", json={"q": q})
    return response.status_code, response.json(), dict(response.headers)


def test_one_deadline_for_the_whole_search(seeded: tuple[str, str]) -> None:
    """Cut short after the phone found John, the search answers with him: the name
    passes left (as you type "sm", read by name keys) would only rank below him."""
    before = SEARCH_DEADLINES._value.get()
    status, body, _ = search_with_a_table_locked(seeded, "name_keys", "555-010-2233 sm")
    assert status == 200
    assert [r["id"] for r in body["results"]] == ["p1"]  # type: ignore[attr-defined]
    assert SEARCH_DEADLINES._value.get() > before


def test_a_search_out_of_time_before_finding_anyone_is_a_503(seeded: tuple[str, str]) -> None:
    """An empty answer would say the patient is not there, and staff might register
    them again: the caller is told to retry instead."""
    status, body, headers = search_with_a_table_locked(seeded, "patients", "john smith")
    assert status == 503
    assert body["error"]["code"] == "busy"  # type: ignore[index]
    assert "ran out of time" in body["error"]["message"]  # type: ignore[index]
    assert headers["retry-after"] == "1"
