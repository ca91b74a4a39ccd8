"""A full reindex under the roles of deploy/roles.sql keeps the API role's access."""

from __future__ import annotations

import psycopg
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.settings import Settings
from indexer.reindex import reindex
from search_api.app import create_app
from tests.factories import insert_patient
from tests.fixtures import connect_as, role_url


def test_api_role_still_searches_after_a_full_reindex(roles: str) -> None:
    with psycopg.connect(roles) as conn:
        insert_patient(conn, "p1", given="Jonathan", family="Smith", phones=["555-010-2233"])
        key = create_key(conn, ["clinic-a"])
        owner = conn.execute(
            "select pg_get_userbyid(relowner) from pg_class "
            "where oid = 'patient_search.patients'::regclass"
        ).fetchone()
    settings = Settings(pool_min_size=1, pool_max_size=2, reindex_workers=1)
    reindex(roles, settings, progress=False)
    reindex(roles, settings, progress=False)  # and again: grants carried over each time
    with connect_as(roles, "patient_search_api") as api:
        assert api.execute("select count(*) from patient_search.patients").fetchone() == (1,)
    with psycopg.connect(roles) as conn:
        after = conn.execute(
            "select pg_get_userbyid(relowner) from pg_class "
            "where oid = 'patient_search.patients'::regclass"
        ).fetchone()
    assert after == owner
    app = create_app(settings, role_url(roles, "patient_search_api"))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/patients/search", json={"q": "smith jon"}, headers={"X-API-Key": key}
        )
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["results"]] == ["p1"]
