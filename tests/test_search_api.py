"""The read path end to end on real PostgreSQL: reindex, API key, HTTP search, lookup."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from core.apikeys import create_key
from core.logging import json_handler
from core.settings import Settings
from search_api.app import create_app
from tests.factories import JOHN_SMITH, patient, seed

PATIENTS: list[dict[str, Any]] = [
    dict(JOHN_SMITH, id="p1", phones=["(555) 010-2233"], emails=["John.Smith@Example.com"]),
    patient("p2", "Jon", "Smyth", "1990-07-02", mrn="00413"),
    patient("p3", "William", "Garcia-Lopez", "1972-11-05", phones=["555.010.7788"]),
    patient("p4", "José", "Núñez", "2001-01-09"),
    patient("p5", "Margaret", "O’Brien", "1950-12-25"),
    patient("p6", "Maria", "de la Cruz", "1988-04-30", middle="Isabel"),
    patient("p7", "John", "Smith", "1961-09-01", mrn="00999"),
    patient("p8", "Elizabeth", "Van der Berg", "1979-06-15", active=False),
    patient("p9", "Ahmed", "Khan", "1999-02-11"),
    # Another clinic holds a near twin of p1: it must never show up for clinic-a.
    dict(JOHN_SMITH, id="q1", clinic_id="clinic-b", phones=["(555) 010-2233"]),
]


@pytest.fixture
def settings() -> Settings:
    return Settings(pool_min_size=1, pool_max_size=4)


@pytest.fixture
def seeded(db_url: str, settings: Settings) -> tuple[str, str, str]:
    key_a, key_b = seed(
        db_url,
        PATIENTS,
        settings,
        lambda c: (create_key(c, ["clinic-a"], name="front desk a"), create_key(c, ["clinic-b"])),
    )
    return db_url, key_a, key_b


@pytest.fixture
def client(seeded: tuple[str, str, str], settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, seeded[0])
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["X-API-Key"] = seeded[1]
        yield c


def search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/patients/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def top(client: TestClient, q: str, **extra: Any) -> str:
    results = search(client, q=q, **extra)["results"]
    assert results, f"no results for {q!r}"
    return results[0]["id"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("john smith 3/14/1985", "p1"),
        ("Smith, John 1985-03-14", "p1"),
        ("smith john 03/14/85", "p1"),
        ("jon smyth", "p2"),
        ("john smith 14.03.1985", "p1"),
        ("smith jo 3/14/85", "p1"),
        ("Jhon Smith 3/14/1985", "p1"),
        ("john smith 14/3/1985", "p1"),  # day and month swapped
        ("john smith 3/15/1985", "p1"),  # one digit wrong
        ("(555) 010-2233", "p1"),
        ("+1 555 010 2233", "p1"),
        ("5550102233", "p1"),
        ("MRN 00412", "p1"),
        ("mrn:00413", "p2"),
        ("john.smith@example.com", "p1"),
        ("bill garcia", "p3"),
        ("garcia lopez", "p3"),
        ("garcialopez", "p3"),
        ("william garcia-lopez", "p3"),
        ("lopez", "p3"),
        ("jose nunez", "p4"),
        ("josé núñez", "p4"),
        ("peggy obrien", "p5"),
        ("margaret o'brien", "p5"),
        ("maria cruz", "p6"),
        ("delacruz", "p6"),
        ("khna ahmed", "p9"),
        ("ahmed 2/11/1999", "p9"),
        ("7788 garcia", "p3"),
    ],
)
def test_right_patient_first(client: TestClient, q: str, expected: str) -> None:
    assert top(client, q) == expected


def test_answer_shape_and_exact_first(client: TestClient) -> None:
    body = search(client, q="john smith 3/14/1985")
    assert body["engine"] == "postgres"
    assert body["degraded"] is False
    assert body["took_ms"] >= 0
    assert body["query"]["names"] == ["john", "smith"]
    first = body["results"][0]
    assert first["id"] == "p1"
    assert first["match"] == "exact"
    assert {"given_name", "family_name", "birth_date"} <= set(first["matched"])
    assert set(first["patient"]) >= {
        "id",
        "clinic_id",
        "mrn",
        "given_name",
        "middle_name",
        "family_name",
        "birth_date",
        "sex",
        "phones",
        "emails",
        "postal_code",
        "active",
    }
    assert first["patient"]["emails"][0]["value"] == "John.Smith@Example.com"
    # The namesake with another birth date comes after, with a lower score.
    ids = [r["id"] for r in body["results"]]
    assert "p7" in ids
    assert all(0.0 <= r["score"] <= 1.0 for r in body["results"])
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert first["score"] > body["results"][ids.index("p7")]["score"]


@pytest.mark.parametrize(
    "body",
    [
        {"q": "john smith 3/14/1985"},  # highlights with a date, a phone shown
        {"q": "555-010-2233"},  # a phone highlight (its index)
        {"q": "jo"},  # as-you-type, several results
        {"given": "john", "family": "smith", "birthdate": "1985-03-14", "offset": 1},
        {"q": "maria de la cruz isabel"},
        {"q": "zzzzqx"},  # no result
    ],
)
def test_the_answer_is_the_models_own_layout(client: TestClient, body: dict[str, Any]) -> None:
    """The search answer is written straight from the data (routes.patients._search_answer):
    its bytes must be what SearchResponse itself writes for them, field for field."""
    from search_api.models import SearchResponse

    response = client.post("/v1/patients/search", json=body)
    assert response.status_code == 200, response.text
    model = SearchResponse.model_validate_json(response.content)
    assert model.model_dump_json().encode() == response.content


def test_match_kinds(client: TestClient) -> None:
    assert search(client, q="smi")["results"][0]["match"] == "prefix"
    assert search(client, q="bill garcia-lopez")["results"][0]["match"] == "phonetic"
    assert search(client, q="garcai-lopez william")["results"][0]["match"] == "fuzzy"


def test_structured_fields(client: TestClient) -> None:
    assert search(client, given="jon", family="smyth")["results"][0]["id"] == "p2"
    body = search(client, family="smith", birthdate="1961-09-01")
    assert body["results"][0]["id"] == "p7"
    assert search(client, phone="555-010-7788")["results"][0]["id"] == "p3"
    assert search(client, mrn="00-412")["results"][0]["id"] == "p1"


def test_clinic_isolation(client: TestClient, seeded: tuple[str, str, str]) -> None:
    for q in ("john smith 3/14/1985", "MRN 00412", "(555) 010-2233", "smith"):
        assert "q1" not in [r["id"] for r in search(client, q=q, limit=100)["results"]]
    other = client.post(
        "/v1/patients/search", json={"q": "john smith"}, headers={"X-API-Key": seeded[2]}
    ).json()
    assert [r["id"] for r in other["results"]] == ["q1"]
    assert client.get("/v1/patients/q1").status_code == 404
    assert client.get("/v1/patients/p1").json()["patient"]["family_name"] == "Smith"


def test_inactive_only_when_asked(client: TestClient) -> None:
    assert "p8" not in [r["id"] for r in search(client, q="elizabeth van der berg")["results"]]
    body = search(client, q="elizabeth van der berg", include_inactive=True)
    assert body["results"][0]["id"] == "p8"
    assert body["results"][0]["patient"]["active"] is False
    assert search(client, q="liz vanderberg", include_inactive=True)["results"][0]["id"] == "p8"


def test_pagination_is_stable(client: TestClient) -> None:
    full = [r["id"] for r in search(client, q="jo", limit=20)["results"]]
    paged = [
        r["id"]
        for offset in range(0, len(full), 2)
        for r in search(client, q="jo", limit=2, offset=offset)["results"]
    ]
    assert len(full) >= 3
    assert paged == full


def test_api_key_required(client: TestClient) -> None:
    response = client.post("/v1/patients/search", json={"q": "smith"}, headers={"X-API-Key": ""})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    response = client.post(
        "/v1/patients/search", json={"q": "smith"}, headers={"X-API-Key": "psk_nope"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": 42},
        {"q": "smith", "limit": 0},
        {"q": "smith", "limit": 101},
        {"q": "smith", "limit": "ten"},
        {"q": "smith", "offset": -1},
        {"q": "smith", "unknown": 1},
        {"q": "smith\x00"},
        {"q": "smith\u202e"},
        {"q": "!!! ??? ..."},
        {"given": ["a"]},
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/patients/search", json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_sql_and_like_metacharacters_are_plain_text(client: TestClient) -> None:
    for q in ("smith'; drop table patients; --", "smi%", "sm_th", "o'brien\\", "a%_\\b"):
        response = client.post("/v1/patients/search", json={"q": q})
        assert response.status_code in (200, 400, 422), response.text
    assert top(client, "o'brien") == "p5"
    assert top(client, "smith") in {"p1", "p7"}


def test_malformed_json_is_4xx(client: TestClient) -> None:
    response = client.post(
        "/v1/patients/search", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_lookup_exact_identifiers_same_shape(client: TestClient) -> None:
    hit = client.post(
        "/v1/patients/lookup", json={"phone": "555-010-2233", "birthdate": "1985-03-14"}
    )
    miss = client.post(
        "/v1/patients/lookup", json={"phone": "555-010-2233", "birthdate": "1985-03-15"}
    )
    by_mrn = client.post(
        "/v1/patients/lookup", json={"mrn": "MRN 00412", "birthdate": "03/14/1985"}
    )
    assert hit.status_code == miss.status_code == by_mrn.status_code == 200
    assert [r["id"] for r in hit.json()["results"]] == ["p1"]
    assert [r["id"] for r in by_mrn.json()["results"]] == ["p1"]
    assert miss.json()["results"] == []
    assert set(hit.json()) == set(miss.json())
    assert set(hit.json()["results"][0]) == {
        "id",
        "clinic_id",
        "given_name",
        "family_name",
        "birth_date",
    }
    # A name is no identifier for booking.
    bad = client.post("/v1/patients/lookup", json={"birthdate": "1985-03-14"})
    assert bad.status_code == 422


def test_health_ready_metrics_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    search(client, q="smith")
    metrics = client.get("/metrics").text
    assert "patient_search_request_seconds_bucket" in metrics
    assert 'endpoint="/v1/patients/search"' in metrics
    assert "patient_search_engine_query_seconds" in metrics
    assert "smith" not in metrics.lower()
    schema = client.get("/openapi.json").json()
    for path, method in (("/v1/patients/search", "post"), ("/fhir/Patient", "get")):
        headers = {
            p["name"] for p in schema["paths"][path][method]["parameters"] if p["in"] == "header"
        }
        assert {"X-API-Key", "Authorization", "X-Staff-User", "X-Purpose-Of-Use"} <= headers
    assert not any(
        p["in"] == "header" for p in schema["paths"]["/healthz"]["get"].get("parameters", [])
    )
    # The patient routes send bytes serialized once; the schema still documents them.
    for path, model in (("search", "SearchResponse"), ("lookup", "LookupResponse")):
        answer = schema["paths"][f"/v1/patients/{path}"]["post"]["responses"]["200"]
        assert answer["content"]["application/json"]["schema"]["$ref"].endswith(model)
    assert client.get("/docs").status_code == 200


def test_readyz_stale_when_indexer_lags(client: TestClient, seeded: tuple[str, str, str]) -> None:
    with psycopg.connect(seeded[0]) as conn:
        conn.execute(
            "insert into patient_search.state (key, value) values ('indexer', %s)",
            (json.dumps({"lag_seconds": 10_000}),),
        )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["indexer"] == "stale"


def test_no_patient_data_in_logs(
    seeded: tuple[str, str, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every record, extra fields included, as the JSON formatter writes it: no patient data."""
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = json_handler(stream)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    # Every engine query is "slow" here, so the slow-query log lines are checked too.
    app = create_app(Settings(slow_query_ms=0.0, pool_max_size=2), seeded[0])
    client = TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": seeded[1]})
    client.__enter__()
    queries = [
        "john smith 3/14/1985",
        "(555) 010-2233",
        "john.smith@example.com",
        "MRN 00412",
        "Núñez",
        "garcia-lopez",
    ]
    for q in queries:
        client.post("/v1/patients/search", json={"q": q})
    client.post("/v1/patients/search", json={"q": "Smith\x00"})
    client.post("/v1/patients/lookup", json={"phone": "555-010-2233", "birthdate": "1985-03-14"})
    client.get("/v1/patients/p1")
    client.__exit__(None, None, None)
    logging.getLogger().removeHandler(handler)
    captured = stream.getvalue() + caplog.text + capsys.readouterr().err
    assert "slow engine query" in captured  # the check below looks at real log lines
    for secret in (
        "smith",
        "5550102233",
        "010-2233",
        "example.com",
        "00412",
        "1985",
        "nunez",
        "núñez",
        "garcia",
    ):
        assert secret not in captured.lower(), secret


@given(
    body=st.dictionaries(
        st.sampled_from(
            [
                "q",
                "limit",
                "offset",
                "given",
                "family",
                "birthdate",
                "phone",
                "email",
                "mrn",
                "include_inactive",
                "extra",
            ]
        ),
        st.one_of(
            st.text(max_size=300),
            st.integers(),
            st.none(),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.lists(st.text(max_size=5), max_size=2),
        ),
    )
)
@settings_(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_body_is_answered_without_a_5xx(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/patients/search", json=body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message"}


@given(q=st.text(min_size=1, max_size=200))
@settings_(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_search_text_is_answered_without_a_5xx(client: TestClient, q: str) -> None:
    response = client.post("/v1/patients/search", json={"q": q})
    assert response.status_code in (200, 400, 422), (q, response.text)


def test_exhausted_pool_answers_503_with_retry_after(seeded: tuple[str, str, str]) -> None:
    # No answer cache: the repeated search must need the database.
    settings = Settings(pool_min_size=1, pool_max_size=1, pool_timeout_s=0.3, cache_enabled=False)
    app = create_app(settings, seeded[0])
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": seeded[1]}) as c:
        assert c.post("/v1/patients/search", json={"q": "smith"}).status_code == 200
        pool = app.state.search.pool
        with pool.connection():  # the only connection is busy
            response = c.post("/v1/patients/search", json={"q": "smith"})
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json()["error"]["code"] == "busy"
        assert c.post("/v1/patients/search", json={"q": "smith"}).status_code == 200


def test_unreachable_database_answers_503(tmp_path: Any) -> None:
    url = f"host={tmp_path} port=1 dbname=nothing user=nobody connect_timeout=1"
    app = create_app(Settings(pool_min_size=1, pool_timeout_s=0.5), url)
    with TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": "psk_x"}) as c:
        response = c.post("/v1/patients/search", json={"q": "smith"})
        assert response.status_code == 503
        assert "Retry-After" in response.headers
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503


def test_configured_request_bounds_are_enforced(seeded: tuple[str, str, str]) -> None:
    """MAX_QUERY_LENGTH and MAX_LIMIT are read: lowered, they turn longer requests into a 422."""
    app = create_app(Settings(pool_min_size=1, max_limit=5, max_query_length=20), seeded[0])
    with TestClient(app) as client:
        headers = {"X-API-Key": seeded[1]}
        for body, field in (({"q": "smith " * 4}, "q"), ({"q": "smith", "limit": 6}, "limit")):
            response = client.post("/v1/patients/search", json=body, headers=headers)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_request"
            assert response.json()["error"]["message"].startswith(f"{field}:")
        ok = client.post("/v1/patients/search", json={"q": "smith", "limit": 5}, headers=headers)
        assert ok.status_code == 200
        assert ok.json()["results"]
