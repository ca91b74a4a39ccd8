"""A Meilisearch outage does not freeze the PostgreSQL fallback (issue 9, item 2).

Real PostgreSQL, the real indexer (logical decoding) and the real API, with
PATIENT_SEARCH_MEILI_URL pointing at a port where nothing listens: the projection
commits, the change waits in the outbox, the search answers from PostgreSQL
(degraded) and /readyz stays ready while reporting the primary's lag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from core.apikeys import create_key
from engines.meili import MeiliEngine, MeiliTaskFailed, make_client
from engines.meili_settings import to_meili
from indexer.meili_sink import (
    MeiliDrainer,
    MeiliSink,
    MeiliUnavailable,
    OutboxSink,
    projection_payload,
    requeue_all,
)
from indexer.runner import run
from indexer.sync import load_documents, sync_patients
from search_api.app import create_app
from search_api.failover import LagProbe, pool_state_reader
from tests.factories import insert_patient
from tests.fixtures import make_indexer_settings


def _outbox(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [r[0] for r in conn.execute("select patient_id from patient_search.meili_outbox")]


@pytest.fixture
def running(db_url: str, dead_url: str) -> Iterator[TestClient]:
    """Indexer thread and API, both configured with a Meilisearch that is down."""
    settings = make_indexer_settings(
        db_url, meili_url=dead_url, indexer_retry_max_s=1.0, pool_min_size=1, pool_max_size=4
    )
    assert run(settings.model_copy(update={"meili_url": None}), once=True) == 0  # slot
    with psycopg.connect(db_url) as conn:
        key = create_key(conn, ["clinic-a"])
        conn.commit()
    stop = threading.Event()
    indexer = threading.Thread(target=run, args=(settings,), kwargs={"stop": stop})
    indexer.start()
    app = create_app(settings, db_url, primary=MeiliEngine.from_settings(settings))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            client.headers["X-API-Key"] = key
            yield client
    finally:
        stop.set()
        indexer.join(15)
    assert not indexer.is_alive()


def test_meili_down_the_fallback_stays_current(db_url: str, running: TestClient) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p-new", given="Zofia", family="Wisniewska")
        conn.commit()
    inserted = time.monotonic()
    body: dict[str, object] = {}
    while time.monotonic() - inserted < 2.0:
        body = running.post("/v1/patients/search", json={"q": "wisniewska"}).json()
        if body.get("results"):
            break
        time.sleep(0.05)
    results = body.get("results")
    assert isinstance(results, list) and results, "not searchable within 2 s"
    assert results[0]["id"] == "p-new"
    assert body["engine"] == "postgres" and body["degraded"] is True
    # Ready all along; the primary's lag is reported apart (the probe refreshes each second).
    checks: dict[str, object] = {}
    for _ in range(30):
        ready = running.get("/readyz")
        assert ready.status_code == 200, ready.json()
        checks = ready.json()["checks"]
        if checks["primary"] == "lagging":
            break
        time.sleep(0.1)
    assert checks["primary"] == "lagging" and checks["primary_lag_seconds"] is None
    # The change waits for Meilisearch; nothing was dead-lettered for an outage.
    assert "p-new" in _outbox(db_url)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from patient_search.dead_letters").fetchone() == (0,)


def test_outbox_commits_with_the_projection(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="John", family="Smith")
        conn.commit()
        with conn.transaction():
            sync_patients(conn, ["p1", "gone"], sinks=[OutboxSink(conn)])
        with pytest.raises(RuntimeError), conn.transaction():
            sync_patients(conn, ["p1"], sinks=[OutboxSink(conn)])
            raise RuntimeError("the batch rolls back: so does its outbox row")
    assert sorted(_outbox(db_url)) == ["gone", "p1"]


def test_drainer_keeps_rows_while_meili_is_down(db_url: str, dead_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="John", family="Smith")
        conn.commit()
        with conn.transaction():
            sync_patients(conn, ["p1"], sinks=[OutboxSink(conn)])
    drainer = MeiliDrainer(db_url, MeiliSink(make_client(dead_url, None, 0.2), "patients"))
    try:
        with pytest.raises(MeiliUnavailable) as err:
            drainer.drain_once()
        assert err.value.failure.reason == "connection"
        assert drainer.flush(0.5) is False
    finally:
        drainer.stop()
    assert _outbox(db_url) == ["p1"]


def test_drained_documents_are_the_projections(db_url: str) -> None:
    """What the drainer sends equals the document built from the source; absent = delete."""
    with psycopg.connect(db_url) as conn:
        insert_patient(
            conn, "p1", clinic_id="Clinic-A", given="José", family="O'Brien", mrn="00412"
        )
        conn.commit()
        with conn.transaction():
            sync_patients(conn, ["p1"])
        docs, _ = load_documents(conn, ["p1"], schema="public", region="US")
        payload, deleted = projection_payload(conn, ["p1", "gone"])
    assert deleted == ["gone"]
    assert payload == [to_meili(docs[0])]


def test_a_new_or_reshaped_index_gets_every_patient_and_counts_as_behind(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        for pid in ("p1", "p2"):
            insert_patient(conn, pid, given="John", family="Smith")
        conn.commit()
        with conn.transaction():
            sync_patients(conn, ["p1", "p2"])
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        conn.execute(
            "insert into patient_search.state (key, value) values ('indexer', %s), ('meili', %s)",
            (Jsonb({"last_batch_at": now}), Jsonb({"last_write_at": now})),
        )
        requeue_all(conn)
        conn.commit()
    assert sorted(_outbox(db_url)) == ["p1", "p2"]
    with ConnectionPool(db_url, min_size=1, max_size=2) as pool:
        assert LagProbe(pool_state_reader(pool), max_lag_s=30).lagging()


class RefusingSink(MeiliSink):
    """Our sink with Meilisearch's side replaced: a task refusing any batch holding "bad"
    (what Meilisearch reports for an invalid document), recording what was written."""

    def __init__(self) -> None:
        super().__init__(make_client("http://127.0.0.1:9", None, 0.1), "patients")
        self.written: list[str] = []

    def ensure_index(self) -> bool:
        return False

    def write_payload(self, payload: Any, deleted_ids: Any) -> None:
        ids = [d["patient"]["id"] for d in payload]
        if "bad" in ids:
            error = {"code": "invalid_document_fields", "type": "invalid_request"}
            raise MeiliTaskFailed(7, "failed", error)
        self.written += ids


def _drained_into_refusing_sink(db_url: str, ids: list[str]) -> RefusingSink:
    """Ann Lees with these ids, queued in the outbox, then one drain: every id is handled."""
    with psycopg.connect(db_url) as conn:
        for pid in ids:
            insert_patient(conn, pid, given="Ann", family="Lee")
        conn.commit()
        with conn.transaction():
            sync_patients(conn, ids, sinks=[OutboxSink(conn)])
    sink = RefusingSink()
    drainer = MeiliDrainer(db_url, sink)
    try:
        assert drainer.drain_once() == len(ids)
    finally:
        drainer.stop()
    return sink


def test_only_the_refused_document_is_set_aside(db_url: str) -> None:
    sink = _drained_into_refusing_sink(db_url, ["a1", "bad", "c3"])
    assert sorted(sink.written) == ["a1", "c3"]
    assert _outbox(db_url) == []
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select source, kind, reason, patient_id from patient_search.dead_letters"
        ).fetchall()
    # Ids and reason only: no name, phone or birth date reaches the dead letters.
    assert rows == [
        ("meilisearch", "document", "document rejected: invalid_document_fields", "bad")
    ]


def test_an_id_meilisearch_cannot_hold_is_set_aside(db_url: str) -> None:
    long_id = "é" * 400  # 800 bytes: over Meilisearch's 511-byte id limit even encoded
    sink = _drained_into_refusing_sink(db_url, ["a1", long_id])
    assert sink.written == ["a1"] and _outbox(db_url) == []
    with psycopg.connect(db_url) as conn:
        row = conn.execute("select patient_id, reason from patient_search.dead_letters").fetchone()
    assert row == (long_id, "document rejected: id too long for meilisearch")


def test_replay_queues_for_meilisearch_too(db_url: str, dead_url: str) -> None:
    """Other writers of the projection (deadletters replay, check --repair) go through
    make_sinks: Meilisearch gets the same patients, through the outbox."""
    from core.settings import Settings
    from indexer import deadletters
    from indexer.events import DeadLetter
    from indexer.replay import replay

    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="John", family="Smith")
        deadletters.record(
            conn, [DeadLetter("logical", "0/1", "document rejected: X", "p1", "document")]
        )
        conn.commit()
    settings = Settings(database_url=db_url, meili_url=dead_url)
    assert replay(db_url, settings).patients == 1
    assert _outbox(db_url) == ["p1"]
