"""Kafka path: Debezium-shaped events on a real broker (Tansu) drive the projection."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from indexer.debezium import UNAVAILABLE, decode_record
from indexer.runner import run
from tests.factories import Workload, assert_projection_matches_source, execute, projection
from tests.fixtures import env_for, kill_9_until, make_indexer_settings, start_indexer

# ---------------------------------------------------------------- pure decoding


def _value(op: str, table: str, before: Any, after: Any, *, wrapped: bool = False) -> bytes:
    payload = {
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "schema": "public", "table": table, "ts_ms": 1000},
        "op": op,
        "ts_ms": 1001,
    }
    body: Any = {"schema": {"type": "struct"}, "payload": payload} if wrapped else payload
    return json.dumps(body).encode()


def _key(row_id: str, *, wrapped: bool = False) -> bytes:
    body: Any = {"id": row_id}
    return json.dumps({"schema": {}, "payload": body} if wrapped else body).encode()


def test_hostile_events_become_dead_letters_without_data() -> None:
    topic = "clinic.public.patients"
    deep = b'{"op": "c", "after": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    wrong_op = json.dumps({"op": 7, "after": {"id": "p1", "given_name": "Ann"}}).encode()
    for value, reason in ((deep, "JSON nested too deep"), (wrong_op, "op is not a string")):
        got = decode_record(topic, 0, 1, _key("p1"), value)
        assert got.dead is not None and got.dead.reason == reason
        assert "Ann" not in repr(got.dead)
    for ts in (1e300, -5, 10**30):
        body = json.loads(_value("c", "patients", None, {"id": "p1"}))
        body["source"]["ts_ms"] = body["ts_ms"] = ts
        got = decode_record(topic, 0, 2, _key("p1"), json.dumps(body).encode())
        assert got.change is not None and got.change.commit_ts is None


@pytest.mark.parametrize("wrapped", [False, True])
def test_decode_create_update_delete(wrapped: bool) -> None:
    topic = "clinic.public.patients"
    row = {"id": "p1", "given_name": "Ann", "clinic_id": "c1"}
    got = decode_record(
        topic, 0, 5, _key("p1"), _value("c", "patients", None, row, wrapped=wrapped)
    )
    assert got.change is not None and got.change.patient_ids == {"p1"}
    assert got.change.position == "clinic.public.patients:0:5"
    assert got.change.new == {"id": "p1"}  # row values are not kept
    assert got.change.commit_ts == 1.0
    got = decode_record(topic, 0, 6, _key("p1"), _value("d", "patients", {"id": "p1"}, None))
    assert got.change is not None and got.change.op == "delete"
    got = decode_record(topic, 0, 7, _key("p1", wrapped=wrapped), None)  # tombstone
    assert got.change is not None and got.change.old == {"id": "p1"}


def test_decode_contacts_placeholder_and_pk_change() -> None:
    topic = "clinic.public.patient_contacts"
    after = {"id": "k1", "patient_id": "p2", "value": UNAVAILABLE}
    before = {"id": "k1", "patient_id": "p1"}
    got = decode_record(topic, 1, 1, _key("k1"), _value("u", "patient_contacts", before, after))
    assert got.change is not None
    assert got.change.patient_ids == {"p1", "p2"} and got.change.contact_ids == {"k1"}
    # delete with REPLICA IDENTITY DEFAULT: before has the key only (others null/placeholder)
    before = {"id": "k1", "patient_id": UNAVAILABLE}
    got = decode_record(topic, 1, 2, _key("k1"), _value("d", "patient_contacts", before, None))
    assert got.change is not None and got.change.patient_ids == set()
    assert got.change.contact_ids == {"k1"}


def test_decode_skips_and_dead_letters() -> None:
    hb = decode_record("__debezium-heartbeat.clinic", 0, 1, b'{"serverName":"x"}', b'{"ts_ms":1}')
    assert hb.ignored == "heartbeat"
    other = decode_record("clinic.public.visits", 0, 1, _key("v"), _value("c", "visits", None, {}))
    assert other.ignored == "table"
    trunc = decode_record("clinic.public.patients", 0, 1, None, _value("t", "patients", None, None))
    assert trunc.change is not None and trunc.change.op == "truncate"
    for value in (b"{not json", b"[1, 2]", b'{"op": "x"}', _value("c", "patients", None, None)):
        got = decode_record("clinic.public.patients", 0, 9, _key("p1"), value)
        assert got.dead is not None and got.dead.position == "clinic.public.patients:0:9"
    assert decode_record("clinic.public.patients", 0, 9, None, None).dead is not None
    assert decode_record("clinic.public.patients", 0, 9, b"\xff", b"{}").dead is not None


# ---------------------------------------------------------------- with the broker


class Stream:
    """Produces Debezium-shaped events for what a test changed in the source."""

    def __init__(self, bootstrap: str) -> None:
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic

        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.topics = [f"{self.prefix}.public.{t}" for t in ("patients", "patient_contacts")]
        self.heartbeat = f"__debezium-heartbeat.{self.prefix}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        # The heartbeat topic too, as Debezium makes it before any indexer reads: created
        # mid-test (auto-created by a metadata request or a first send), it changed the
        # subscription and rebalanced the group during a test's resync.
        admin.create_topics(
            [
                *(NewTopic(t, num_partitions=2, replication_factor=1) for t in self.topics),
                NewTopic(self.heartbeat, num_partitions=1, replication_factor=1),
            ]
        )
        admin.close()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.rng = random.Random(3)

    def settings(self, db_url: str, bootstrap: str, **extra: Any) -> Settings:
        topics = [*self.topics, self.heartbeat]
        return make_indexer_settings(
            db_url,
            kafka_bootstrap_servers=bootstrap,
            kafka_topics=",".join(topics),
            kafka_group_id=f"g-{self.prefix}",
            kafka_max_poll_interval_ms=5000,
            kafka_session_timeout_ms=6000,
            kafka_heartbeat_interval_ms=1000,
            **extra,
        )

    def send(self, table: str, op: str, before: Any, after: Any, *, tombstone: bool = True) -> None:
        topic = f"{self.prefix}.public.{table}"
        row_id = (after or before)["id"]
        wrapped = self.rng.random() < 0.5
        self.producer.send(
            topic, key=_key(row_id), value=_value(op, table, before, after, wrapped=wrapped)
        )
        if op == "d" and tombstone:
            self.producer.send(topic, key=_key(row_id), value=None)

    def raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.producer.send(topic, key=key, value=value)

    def flush(self) -> None:
        self.producer.flush(10)


@pytest.mark.kafka
def test_kafka_events_reach_projection_and_bad_ones_dead_letter(
    db_url: str, kafka_bootstrap: str
) -> None:
    stream = Stream(kafka_bootstrap)
    settings = stream.settings(db_url, kafka_bootstrap)
    execute(
        db_url,
        "insert into patients (id, clinic_id, given_name, family_name) values "
        "('p1', 'c1', 'Ann', 'Lee'), ('p2', 'c1', 'Bob', 'Ray')",
        "insert into patient_contacts (id, patient_id, kind, value) values "
        "('k1', 'p1', 'phone', '555-010-2233'), ('k2', 'p2', 'email', 'bob@example.com')",
    )
    # snapshot reads, a duplicate, events out of order
    stream.send("patient_contacts", "r", None, {"id": "k2", "patient_id": "p2"})
    stream.send("patients", "r", None, {"id": "p1"})
    stream.send("patients", "r", None, {"id": "p2"})
    stream.send("patients", "r", None, {"id": "p1"})
    stream.send("patient_contacts", "r", None, {"id": "k1", "patient_id": "p1"})
    stream.raw(stream.topics[0], _key("p9"), b"{garbage")
    stream.raw(stream.topics[1], None, b'{"op": "c", "after": {"kind": "phone"}}')
    stream.raw(stream.heartbeat, b'{"serverName":"x"}', b'{"ts_ms": 1}')
    # hostile events: deep nesting, an op that is not a string, an absurd commit time
    deep = b'{"op": "c", "after": {"id": "Ann Lee", "x": ' + b"[" * 100_000 + b"]" * 100_000
    stream.raw(stream.topics[0], _key("p1"), deep + b"}}")
    wrong_op = {"op": ["c"], "after": {"id": "p1", "given_name": "Ann"}, "source": {}}
    stream.raw(stream.topics[0], _key("p1"), json.dumps(wrong_op).encode())
    absurd = json.loads(_value("u", "patients", None, {"id": "p2"}))
    absurd["source"]["ts_ms"] = 1e300
    stream.raw(stream.topics[0], _key("p2"), json.dumps(absurd).encode())
    stream.flush()
    assert run(settings, once=True) == 0
    docs = projection(db_url)
    assert set(docs) == {"p1", "p2"}
    assert [p["value"] for p in docs["p1"]["patient"]["phones"]] == ["555-010-2233"]
    with psycopg.connect(db_url) as conn:
        dead = conn.execute(
            "select source, position, reason, patient_id, kind from patient_search.dead_letters "
            "order by id"
        ).fetchall()
        everything = str(conn.execute("select * from patient_search.dead_letters").fetchall())
    assert len(dead) == 4 and all(d[0] == "kafka" and d[4] == "event" for d in dead)
    assert {d[1].rsplit(":", 2)[0] for d in dead} == set(stream.topics)
    assert {"JSON nested too deep", "op is not a string"} <= {d[2] for d in dead}
    assert "Ann" not in everything and "phone" not in everything  # no event data kept

    # delete p2 (its contact cascades), then a late duplicate create must not resurrect it
    execute(db_url, "delete from patients where id = 'p2'")
    stream.send("patient_contacts", "d", {"id": "k2", "patient_id": None}, None)
    stream.send("patients", "d", {"id": "p2"}, None)
    stream.send("patients", "c", None, {"id": "p2"})  # late, duplicated delivery
    # contact moved p1 -> nobody else; key-only tombstone for a contact
    execute(db_url, "delete from patient_contacts where id = 'k1'")
    stream.raw(stream.topics[1], _key("k1"), None)
    stream.flush()
    assert run(settings, once=True) == 0
    docs = projection(db_url)
    assert set(docs) == {"p1"}
    assert docs["p1"]["patient"]["phones"] == []
    with psycopg.connect(db_url) as conn:
        state = conn.execute("select value from patient_search.state where key = 'indexer'")
        row = state.fetchone()
        assert row is not None and row[0]["source"] == "kafka"


@pytest.mark.kafka
def test_kafka_kill_9_with_duplicates_and_reordering(db_url: str, kafka_bootstrap: str) -> None:
    stream = Stream(kafka_bootstrap)
    settings = stream.settings(db_url, kafka_bootstrap, batch_size=50, indexer_retry_max_s=1.0)
    env = env_for(settings)
    work = Workload(seed=11, patients=200)
    done = threading.Event()
    malformed = 0

    def producer() -> None:
        nonlocal malformed
        rng = random.Random(5)
        with psycopg.connect(db_url, autocommit=True) as conn:
            pending: list[tuple[str, str, Any, Any]] = []
            for i in range(2500):
                work.apply(conn, 1)  # committed first, then "captured", like Debezium
                pending.extend(work.events)
                work.events.clear()
                if len(pending) >= rng.randint(1, 8):
                    rng.shuffle(pending)  # reordered deliveries inside a window
                    for table, op, before, after in pending:
                        stream.send(table, op, before, after, tombstone=rng.random() < 0.7)
                        if rng.random() < 0.1:  # duplicated delivery
                            stream.send(table, op, before, after, tombstone=False)
                    pending.clear()
                if i % 250 == 0:
                    stream.raw(stream.topics[i % 2], _key("x"), b"\x00not-json")
                    malformed += 1
                time.sleep(0.001)
            for table, op, before, after in pending:
                stream.send(table, op, before, after)
        stream.flush()
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    try:  # joining the group takes a few seconds
        kill_9_until(done, env, at_least=3, alive_s=(3.0, 6.0), seed=13)
    finally:
        thread.join(120)
    final = start_indexer(env, "--once")
    _, err = final.communicate(timeout=180)
    assert final.returncode == 0, err.decode()[-2000:]
    assert_projection_matches_source(db_url)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select count(distinct position), count(*) from patient_search.dead_letters"
        ).fetchone()
    assert row is not None and row[0] == malformed and row[1] == malformed


@pytest.mark.kafka
def test_a_slow_truncate_resync_keeps_the_group_and_runs_once(
    db_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resync longer than max_poll_interval_ms must not get the consumer evicted (the
    truncate would then be replayed, resynced again, and so on)."""
    from indexer import runner

    stream = Stream(kafka_bootstrap)
    settings = stream.settings(db_url, kafka_bootstrap)  # max poll interval 5 s
    execute(
        db_url,
        "insert into patients (id, clinic_id, given_name) "
        "select 'p' || g, 'c1', 'Ann' from generate_series(1, 40) g",
    )
    stream.raw(stream.topics[0], None, _value("t", "patients", None, None))
    stream.flush()
    sync = runner.sync_isolating
    resyncs: list[int] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.8)  # 8 pages: about 7 s, longer than the 5 s poll interval
        return sync(*args, **kwargs)

    real_resync = runner.resync_all

    def counted(*args: Any, **kwargs: Any) -> int:
        resyncs.append(1)
        return real_resync(*args, **kwargs)

    monkeypatch.setattr(runner, "_RESYNC_CHUNK", 5)
    monkeypatch.setattr(runner, "sync_isolating", slow)
    monkeypatch.setattr(runner, "resync_all", counted)
    assert run(settings, once=True) == 0
    assert resyncs == [1]
    assert len(projection(db_url)) == 40
    monkeypatch.setattr(runner, "sync_isolating", sync)
    assert run(settings, once=True) == 0  # the truncate's offset was committed
    assert resyncs == [1]


@pytest.mark.kafka
def test_a_new_consumer_group_on_an_existing_projection_resyncs_and_says_so(
    db_url: str, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = Stream(kafka_bootstrap)
    settings = stream.settings(db_url, kafka_bootstrap)
    execute(db_url, "insert into patients (id, clinic_id, given_name) values ('p1', 'c1', 'Al')")
    stream.send("patients", "c", None, {"id": "p1"})
    stream.flush()
    assert run(settings, once=True) == 0
    # A patient the stream never carried (its event is lost to the new group).
    execute(db_url, "insert into patients (id, clinic_id, given_name) values ('p2', 'c1', 'Bo')")
    other = settings.model_copy(update={"kafka_group_id": f"{settings.kafka_group_id}-new"})
    with caplog.at_level("WARNING", logger="indexer.kafka_source"):
        assert run(other, once=True) == 0
    assert set(projection(db_url)) == {"p1", "p2"}
    assert any("new consumer group" in r.getMessage() for r in caplog.records)
