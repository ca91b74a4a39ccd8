"""The FHIR facade under the least-privilege API role of deploy/roles.sql and api-grants.sql."""

from __future__ import annotations

import psycopg
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.settings import Settings
from indexer.reindex import reindex
from search_api.app import create_app
from tests.factories import insert_patient
from tests.fixtures import role_url


def test_api_role_searches_and_pages(roles: str) -> None:
    with psycopg.connect(roles) as conn:
        for i in range(5):
            insert_patient(conn, f"p{i}", given=f"Ann{i}", family="Lopez")
        key = create_key(conn, ["clinic-a"])
    settings = Settings(pool_min_size=1, pool_max_size=2, reindex_workers=1)
    reindex(roles, settings, progress=False)
    app = create_app(settings, role_url(roles, "patient_search_api"))
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        seen: list[str] = []
        page = client.post(
            "/fhir/Patient/_search",
            content=b"family=lopez&_count=2",
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        while True:
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [e["resource"]["id"] for e in body.get("entry", [])]
            nxt = [lk["url"] for lk in body["link"] if lk["relation"] == "next"]
            if not nxt:
                break
            page = client.get(nxt[0], headers=headers)
    assert sorted(seen) == [f"p{i}" for i in range(5)]
