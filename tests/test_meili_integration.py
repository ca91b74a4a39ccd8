"""Against a live Meilisearch (PATIENT_SEARCH_MEILI_URL, e.g. the docker-compose one).

Skipped where no server is configured: these machines cannot run one, and its
answers are never faked. Each test uses its own index uid and deletes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from core.settings import Settings
from engines.meili import MeiliEngine, make_client
from engines.pg_search import PostgresEngine
from indexer.meili_sink import MeiliSink, StateStore, rebuild_meili
from indexer.sync import load_documents, sync_patients
from search_api.failover import Router
from search_api.plan import SearchInput
from search_api.service import search
from tests.factories import insert_patient

MEILI_URL = os.environ.get("PATIENT_SEARCH_MEILI_URL")
pytestmark = [
    pytest.mark.meili,
    pytest.mark.skipif(not MEILI_URL, reason="PATIENT_SEARCH_MEILI_URL not set"),
]

POPULATION = [
    dict(
        id="p1",
        given="John",
        family="Smith",
        birth_date=dt.date(1985, 3, 14),
        mrn="00412",
        phones=["(555) 010-2233"],
        emails=["john.smith@example.com"],
    ),
    dict(id="p2", given="Jon", family="Smyth", birth_date=dt.date(1990, 7, 2), mrn="00413"),
    dict(id="p3", given="William", family="Garcia-Lopez", birth_date=dt.date(1972, 11, 5)),
    dict(id="p 4/ü", given="Siobhan", family="O'Brien", birth_date=dt.date(2001, 1, 30)),
    dict(
        id="p5",
        given="Maria",
        family="Gonzalez",
        clinic_id="clinic-b",
        birth_date=dt.date(1985, 3, 14),
    ),
    dict(id="p6", given="Robert", family="Smith", active=False),
]
QUERIES = [
    "smith",
    "jon smyth",
    "bill garcia",
    "obrien",
    "o'brien siobhan",
    "00412",
    "(555) 010-2233",
    "john 3/14/1985",
    "smtih john",
    "robert smith",
    "gonzalez",
]


@pytest.fixture
def settings() -> Settings:
    return Settings(
        meili_url=MEILI_URL,
        meili_api_key=os.environ.get("PATIENT_SEARCH_MEILI_API_KEY"),
        meili_index=f"test_{uuid.uuid4().hex[:10]}",
        search_budget_ms=2000,
    )


@pytest.fixture
def loaded(db_url: str, settings: Settings) -> Iterator[tuple[str, Settings]]:
    ids = []
    with psycopg.connect(db_url) as conn:
        for p in POPULATION:
            ids.append(insert_patient(conn, **p))  # type: ignore[arg-type]
        sync_patients(conn, ids)
        docs, _ = load_documents(conn, ids, schema="public", region="US")
        conn.commit()
    sink = MeiliSink.from_settings(settings, db_url)
    sink.ensure_index()
    sink.write(docs, [])
    sink.close()
    yield db_url, settings
    client = make_client(settings.meili_url or "", settings.meili_api_key, 10)
    for uid in (settings.meili_index, f"{settings.meili_index}__rebuild"):
        with contextlib.suppress(Exception):
            client.wait_for_task(client.delete_index(uid).task_uid)


def _router(db_url: str, settings: Settings, pool: ConnectionPool, primary: bool) -> Router:
    engine = MeiliEngine.from_settings(settings) if primary else None
    if engine is not None:
        assert engine.verify_settings() == []
    return Router.from_settings(settings, PostgresEngine(pool), engine)


def test_top_result_parity_with_postgres(loaded: tuple[str, Settings]) -> None:
    db_url, settings = loaded
    with ConnectionPool(db_url, min_size=1, max_size=2) as pool:
        meili, pg = _router(db_url, settings, pool, True), _router(db_url, settings, pool, False)
        for q in QUERIES:
            a = search(meili, SearchInput(q=q), ["clinic-a"], settings)
            b = search(pg, SearchInput(q=q), ["clinic-a"], settings)
            assert a.engine == "meilisearch" and not a.degraded, q
            top_a = [r.candidate.id for r in a.results[:1]]
            top_b = [r.candidate.id for r in b.results[:1]]
            assert top_a == top_b, q


def test_clinic_filter(loaded: tuple[str, Settings]) -> None:
    db_url, settings = loaded
    engine = MeiliEngine.from_settings(settings)
    assert engine.verify_settings() == []
    with ConnectionPool(db_url, min_size=1, max_size=2) as pool:
        router = _router(db_url, settings, pool, True)
        for clinics, expected in ((["clinic-a"], "p1"), (["clinic-b"], "p5")):
            out = search(router, SearchInput(q="3/14/1985"), clinics, settings)
            assert [r.candidate.id for r in out.results] == [expected]
        out = search(router, SearchInput(q="gonzalez"), ['clinic-a" OR clinic_id EXISTS'], settings)
        assert out.results == []
    assert engine.get("p5", ("clinic-a",)) is None
    got = engine.get("p 4/ü", ("clinic-a",))
    assert got is not None and got.id == "p 4/ü"


def test_swap_reindex(loaded: tuple[str, Settings]) -> None:
    db_url, settings = loaded
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p7", given="Zelda", family="Quist")
        conn.execute("delete from patients where id = 'p2'")
        conn.commit()
    assert rebuild_meili(db_url, settings, progress=False) == len(POPULATION)
    engine = MeiliEngine.from_settings(settings)
    assert engine.verify_settings() == []
    with ConnectionPool(db_url, min_size=1, max_size=2) as pool:
        router = _router(db_url, settings, pool, True)
        out = search(router, SearchInput(q="zelda quist"), ["clinic-a"], settings)
        assert [r.candidate.id for r in out.results] == ["p7"]
        out = search(router, SearchInput(q="00413"), ["clinic-a"], settings)
        assert out.results == []
    client = make_client(settings.meili_url or "", settings.meili_api_key, 10)
    uids = {i["uid"] for i in client.get_raw_indexes({"limit": 1000})}
    assert settings.meili_index in uids and f"{settings.meili_index}__rebuild" not in uids
    assert StateStore(db_url).rebuild_targets() == []
