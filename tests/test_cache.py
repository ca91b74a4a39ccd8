"""The answer cache: served again within its time, dropped as soon as the indexer changes a
patient of that clinic (LISTEN/NOTIFY), in process or shared through Redis."""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.settings import Settings
from indexer.reindex import reindex
from indexer.sync import sync_patients
from search_api.app import create_app
from tests.factories import insert_patient, wait_until


@pytest.fixture
def seeded(db_url: str) -> tuple[str, str]:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "a1", given="Ann", family="Smith", phones=["555-010-2233"])
        insert_patient(conn, "b1", clinic_id="clinic-b", given="Bob", family="Smith")
        insert_patient(conn, "a2", given="Carl", family="Jones")
        key = create_key(conn, ["clinic-a"])
        conn.commit()
    reindex(db_url, Settings(), progress=False)
    return db_url, key


def search(client: TestClient, q: str) -> tuple[str | None, list[str]]:
    response = client.post("/v1/patients/search", json={"q": q})
    assert response.status_code == 200, response.text
    return response.headers.get("x-cache"), [
        r["patient"]["given_name"] for r in response.json()["results"]
    ]


def wait_live(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while not client.get("/cache").json()["live"]:
        assert time.monotonic() < deadline, "invalidation listener never connected"
        time.sleep(0.05)


def check_cache(client: TestClient, url: str) -> None:
    wait_live(client)
    assert search(client, "smith") == (None, ["Ann"])
    assert search(client, "smith") == ("hit", ["Ann"])
    assert client.get("/v1/patients/a1").headers.get("x-cache") is None
    assert client.get("/v1/patients/a1").headers.get("x-cache") == "hit"
    with psycopg.connect(url) as conn:  # another clinic changes: this clinic's answers stay
        conn.execute("update patients set given_name = 'Robert' where id = 'b1'")
        sync_patients(conn, ["b1"])
        conn.commit()
    time.sleep(0.3)
    assert search(client, "smith") == ("hit", ["Ann"])
    with psycopg.connect(url) as conn:  # another patient of this clinic changes
        conn.execute("update patients set given_name = 'Carla' where id = 'a2'")
        sync_patients(conn, ["a2"])
        conn.commit()
    wait_until(
        lambda: search(client, "smith")[0] is None, "the clinic's change never reached the cache"
    )
    # ... which leaves the read of a1 cached: it shows a1 alone.
    assert client.get("/v1/patients/a1").headers.get("x-cache") == "hit"
    with psycopg.connect(url) as conn:  # the indexer changes a patient of this clinic
        conn.execute("update patients set given_name = 'Anna' where id = 'a1'")
        sync_patients(conn, ["a1"])
        conn.commit()
    wait_until(lambda: search(client, "smith")[1] == ["Anna"], "the change never reached the cache")
    read = client.get("/v1/patients/a1")
    assert read.headers.get("x-cache") is None
    assert read.json()["patient"]["given_name"] == "Anna"
    stats = client.get("/cache").json()
    assert stats["kinds"]["search"]["hits"] >= 2 and stats["kinds"]["search"]["misses"] >= 2
    assert "patient_search_cache_hits_total" in client.get("/metrics").text


def test_in_process_cache_is_invalidated_by_the_indexer(seeded: tuple[str, str]) -> None:
    url, key = seeded
    app = create_app(Settings(pool_min_size=1, pool_max_size=2), url)
    with TestClient(app, headers={"X-API-Key": key}) as client:
        check_cache(client, url)


def test_a_clinic_rebuilt_drops_its_patient_reads(seeded: tuple[str, str]) -> None:
    url, key = seeded
    app = create_app(Settings(pool_min_size=1, pool_max_size=2), url)
    with TestClient(app, headers={"X-API-Key": key}) as client:
        wait_live(client)
        client.get("/v1/patients/a1")
        assert client.get("/v1/patients/a1").headers.get("x-cache") == "hit"
        with psycopg.connect(url) as conn:  # changed behind the indexer's back
            conn.execute("update patients set given_name = 'Anne' where id = 'a1'")
            conn.commit()
        reindex(url, Settings(), clinic_id="clinic-a", progress=False)
        wait_until(
            lambda: client.get("/v1/patients/a1").headers.get("x-cache") is None,
            "the rebuild never reached the cache",
        )
        assert client.get("/v1/patients/a1").json()["patient"]["given_name"] == "Anne"


def test_booking_lookups_keep_found_answers_until_a_lockout(seeded: tuple[str, str]) -> None:
    """A lookup that found someone is kept; a miss never is (the lockout counts each),
    and a lock drops the key's kept answers in every process (its NOTIFY)."""
    url, key = seeded
    with psycopg.connect(url) as conn:
        insert_patient(
            conn,
            "a9",
            given="Ida",
            family="Lane",
            birth_date="1985-03-14",
            phones=["555-010-9999"],
            mrn="00912",
        )
        other = create_key(conn, ["clinic-a"])
        conn.commit()
    reindex(url, Settings(), clinic_id="clinic-a", progress=False)
    app = create_app(Settings(pool_min_size=1, pool_max_size=2), url)

    def lookup(body: dict[str, str], as_key: str = key) -> tuple[str | None, list[str]]:
        r = client.post("/v1/patients/lookup", json=body, headers={"X-API-Key": as_key})
        assert r.status_code == 200, r.text
        return r.headers.get("x-cache"), [m["id"] for m in r.json()["results"]]

    right = {"phone": "555-010-9999", "birthdate": "1985-03-14"}
    with TestClient(app) as client:
        wait_live(client)
        assert lookup(right) == (None, ["a9"])
        assert lookup(right) == ("hit", ["a9"])
        assert lookup(right, other) == (None, ["a9"])
        for day in range(1, 6):  # five misses: never kept, each counted
            wrong = {**right, "birthdate": f"1985-03-{day:02d}"}
            assert lookup(wrong) == (None, [])
        wait_until(lambda: lookup(right) == (None, []), "the lockout never reached the cache")
        assert lookup({"mrn": "00912", "birthdate": "1985-03-14"}) == (None, ["a9"])
        assert lookup(right, other) == ("hit", ["a9"])  # another key's answers stay
        stats = client.get("/cache").json()["kinds"]["lookup"]
        assert stats["hits"] >= 2


def test_cache_off_serves_nothing_twice(seeded: tuple[str, str]) -> None:
    url, key = seeded
    app = create_app(Settings(pool_min_size=1, pool_max_size=2, cache_enabled=False), url)
    with TestClient(app, headers={"X-API-Key": key}) as client:
        assert search(client, "smith") == (None, ["Ann"])
        assert search(client, "smith") == (None, ["Ann"])
        assert client.get("/cache").json() == {"enabled": False}


def test_shared_cache_in_redis(seeded: tuple[str, str], redis_url: str) -> None:
    url, key = seeded
    settings = Settings(pool_min_size=1, pool_max_size=2, redis_url=redis_url)
    with TestClient(create_app(settings, url), headers={"X-API-Key": key}) as client:
        check_cache(client, url)
        assert client.get("/cache").json()["store"] == "RedisStore"
    # Another process (here: another app) sees what the first stored.
    with TestClient(create_app(settings, url), headers={"X-API-Key": key}) as other:
        wait_live(other)
        search(other, "anna")
        assert search(other, "anna")[0] == "hit"


def test_redis_away_is_a_miss_not_a_failure() -> None:
    from search_api.cache import AnswerCache, RedisStore

    cache = AnswerCache(RedisStore("redis://127.0.0.1:1/0"), ttl_s={"search": 10.0})
    cache.live = True
    cache.invalidate(["clinic-a"])  # logged, not raised
    slot = cache.slot("search", ["clinic-a"], {"q": "smith"})
    assert slot.hit is None
    slot.put("search", b"{}")  # stores nothing, raises nothing


def test_patient_notifications_fit_a_payload_and_name_every_patient() -> None:
    from engines.pg_projection import PATIENTS_CHANNEL, patient_payloads
    from search_api.cache import EVERY_PATIENT, changed_names, patient_generation

    ids = [f"patient-{n:06d}-ü" for n in range(2_000)]
    payloads = patient_payloads(ids)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8_000 for p in payloads)
    named = [n for p in payloads for n in changed_names(PATIENTS_CHANNEL, p)]
    assert named == [patient_generation(i) for i in ids]
    assert patient_payloads(["x" * 9_000]) == ['"*"']
    assert changed_names(PATIENTS_CHANNEL, '"*"') == [EVERY_PATIENT]
    assert changed_names(PATIENTS_CHANNEL, "not json") == ["*"]  # everything, not nothing


def test_a_forgotten_generation_is_never_reused() -> None:
    """A name is forgotten once its entries have expired; bumped again, it must not take
    a value an older entry was stored under."""
    from search_api.cache import LocalStore

    store = LocalStore(forget_after_s=0.05)
    store.bump(["patient:a1"])
    (_, first) = store.generations(["patient:a1"])
    time.sleep(0.06)
    store.bump(["patient:b9"])  # forgets patient:a1
    assert store.generations(["patient:a1"]) == (0, 0)
    store.bump(["patient:a1"])
    (_, again) = store.generations(["patient:a1"])
    assert again not in (0, first)
    time.sleep(0.06)
    store.bump(["clinic-a"])
    assert store.generations(["patient:a1", "patient:b9"]) == (0, 0, 0)
