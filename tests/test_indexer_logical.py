"""Logical decoding path on real PostgreSQL: changes on both tables reach the projection."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.database import start_embedded
from core.schema import create_source_tables, migrate
from core.settings import Settings
from indexer.check import check
from indexer.runner import run
from tests.factories import execute, projection
from tests.fixtures import make_indexer_settings


def indexed(db_url: str, *source_sql: str, **overrides: Any) -> Settings:
    """Run `source_sql` on the source, then the indexer once (the first run creates the
    publication and the slot and syncs what is there); returns its settings for more runs."""
    if source_sql:
        execute(db_url, *source_sql)
    settings = make_indexer_settings(db_url, **overrides)
    assert run(settings, once=True) == 0
    return settings


def test_inserts_updates_deletes_on_both_tables(db_url: str) -> None:
    settings = indexed(db_url)
    execute(
        db_url,
        "insert into patients (id, clinic_id, mrn, given_name, family_name, birth_date) values "
        "('p1', 'c1', '00412', 'Jonathan', 'Smith', '1985-03-14'), "
        "('p2', 'c1', null, 'Maria', 'Garcia', null)",
        "insert into patient_contacts (id, patient_id, kind, value, use) values "
        "('k1', 'p1', 'phone', '(555) 010-2233', 'mobile'), "
        "('k2', 'p1', 'email', 'Jon.Smith@Example.com', null)",
    )
    assert run(settings, once=True) == 0
    docs = projection(db_url)
    assert set(docs) == {"p1", "p2"}
    p1 = docs["p1"]["patient"]
    assert p1["family_name"] == "Smith" and p1["birth_date"] == "1985-03-14"
    assert [p["value"] for p in p1["phones"]] == ["(555) 010-2233"]
    assert [e["value"] for e in p1["emails"]] == ["Jon.Smith@Example.com"]
    assert {"c1\x1fmrn:00412", "c1\x1ftel:+15550102233", "c1\x1fem:jon.smith@example.com"} <= set(
        docs["p1"]["terms"]
    )

    execute(
        db_url,
        "update patients set family_name = 'Smyth', active = false where id = 'p1'",
        "update patient_contacts set value = '555 010 9999' where id = 'k1'",
        "update patient_contacts set patient_id = 'p2' where id = 'k2'",  # contact moves
    )
    assert run(settings, once=True) == 0
    docs = projection(db_url)
    assert docs["p1"]["patient"]["family_name"] == "Smyth"
    assert docs["p1"]["active"] is False
    assert [p["value"] for p in docs["p1"]["patient"]["phones"]] == ["555 010 9999"]
    assert docs["p1"]["patient"]["emails"] == []
    assert [e["value"] for e in docs["p2"]["patient"]["emails"]] == ["Jon.Smith@Example.com"]

    execute(db_url, "delete from patient_contacts where id = 'k1'")
    assert run(settings, once=True) == 0
    assert projection(db_url)["p1"]["patient"]["phones"] == []

    execute(db_url, "insert into patients (id, clinic_id, given_name) values ('p3', 'c2', 'Al')")
    assert run(settings, once=True) == 0
    execute(db_url, "update patients set id = 'p3b' where id = 'p3'")  # primary-key change
    execute(db_url, "delete from patients where id = 'p1'")
    assert run(settings, once=True) == 0
    docs = projection(db_url)
    assert set(docs) == {"p2", "p3b"}
    assert docs["p3b"]["patient"]["given_name"] == "Al"
    # ... and the slot moved past everything written
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select count(*) from pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', %s)",
            (settings.slot_name, settings.publication_name),
        ).fetchone()
        assert row is not None and row[0] == 0
        state = conn.execute("select value from patient_search.state where key = 'indexer'")
        value = state.fetchone()
        assert value is not None and value[0]["source"] == "logical"


def test_initial_sync_and_truncate(db_url: str) -> None:
    settings = indexed(
        db_url,
        "insert into patients (id, clinic_id, given_name) "
        "select 'p' || g, 'c' || (g % 3), 'Name' || g from generate_series(1, 2500) g",
    )
    assert len(projection(db_url)) == 2500  # initial load on slot creation
    execute(
        db_url,
        "truncate patients cascade",
        "insert into patients (id, clinic_id) values ('after', 'c1')",
    )
    assert run(settings, once=True) == 0
    assert set(projection(db_url)) == {"after"}


def test_deleted_patient_never_resurrected(db_url: str) -> None:
    settings = indexed(db_url, batch_size=2)
    execute(
        db_url,
        "insert into patients (id, clinic_id, given_name) values ('p1', 'c1', 'Ann')",
        "insert into patient_contacts (id, patient_id, kind, value) values ('k1','p1','phone','1')",
    )
    for i in range(5):
        execute(db_url, f"update patients set given_name = 'Ann{i}' where id = 'p1'")
    execute(db_url, "delete from patients where id = 'p1'")
    for _ in range(3):  # replays of the same stream (slot not advanced) change nothing
        with psycopg.connect(db_url) as conn:
            from indexer.logical import LogicalSource

            source = LogicalSource(db_url, settings)
            source.open(threading.Event())
            try:
                from indexer.events import affected_patients
                from indexer.sync import sync_patients

                for batch in source.batches(2):
                    with conn.transaction():
                        ids = affected_patients(conn, batch.changes).ids
                        sync_patients(conn, ids)
                    assert "p1" not in projection(db_url)
            finally:
                source.close()
    assert run(settings, once=True) == 0
    assert projection(db_url) == {}


def test_second_indexer_cannot_take_the_slot(db_url: str) -> None:
    settings = indexed(db_url)
    stop = threading.Event()
    first = threading.Thread(target=run, args=(settings,), kwargs={"stop": stop})
    first.start()
    try:
        time.sleep(1.0)
        assert run(settings, once=True) == 3  # once mode: exits with a clear message
    finally:
        stop.set()
        first.join(10)
    assert not first.is_alive()


def test_heartbeat_advances_slot_on_quiet_database(db_url: str) -> None:
    settings = indexed(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = conn.execute(
            "select confirmed_flush_lsn from pg_replication_slots where slot_name = %s",
            (settings.slot_name,),
        ).fetchone()
        # WAL from a table outside the publication: the peek returns nothing
        conn.execute("create table unrelated (x int)")
        conn.execute("insert into unrelated select generate_series(1, 1000)")
    stop = threading.Event()
    runner = threading.Thread(target=run, args=(settings,), kwargs={"stop": stop})
    runner.start()
    try:
        deadline = time.monotonic() + 10
        with psycopg.connect(db_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                after = conn.execute(
                    "select confirmed_flush_lsn from pg_replication_slots where slot_name = %s",
                    (settings.slot_name,),
                ).fetchone()
                if after and before and after[0] > before[0]:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("slot did not advance on a quiet database")
    finally:
        stop.set()
        runner.join(10)


def test_check_reports_and_repairs_drift(db_url: str) -> None:
    indexed(
        db_url,
        "insert into patients (id, clinic_id, given_name) values "
        "('a', 'c1', 'Ann'), ('b', 'c1', 'Bob'), ('c', 'c2', 'Cy')",
    )
    with psycopg.connect(db_url) as conn:
        reports = check(conn, schema="public", region="US")
        assert [r.ok for r in reports] == [True, True]
        assert reports[0].source_checksum == reports[0].projection_checksum
        conn.execute("delete from patient_search.patients where id = 'a'")
        conn.execute(
            "update patient_search.patients "
            "set doc = jsonb_set(doc::jsonb, '{patient,given_name}', '\"X\"')::json "
            "where id = 'b'"
        )
        conn.execute(
            "insert into patient_search.patients select 'ghost', clinic_id, active, birth_date,"
            " terms, name_text, sort_key, doc, source_updated_at from patient_search.patients"
            " where id = 'c'"
        )
        conn.commit()
        reports = check(conn, schema="public", region="US", repair=True)
        c1, c2 = reports
        assert (c1.missing, c1.stale, c2.extra) == (1, 1, 1)
        assert c1.source_checksum != c1.projection_checksum
        assert check(conn, schema="public", region="US", clinic_id="c1")[0].ok
        assert all(r.ok for r in check(conn, schema="public", region="US"))


def _lose_slots(url: str) -> None:
    """Make PostgreSQL invalidate every slot behind the WAL it keeps (as a long stop of
    the indexer past max_slot_wal_keep_size does)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("alter system set max_slot_wal_keep_size = '1MB'")
        conn.execute("select pg_reload_conf()")
        try:
            time.sleep(0.3)
            conn.execute("create table wal_filler (x text)")
            for _ in range(4):
                conn.execute(
                    "insert into wal_filler select repeat('x', 100) from generate_series(1, 1000)"
                )
                conn.execute("select pg_switch_wal()")
            conn.execute("checkpoint")
        finally:
            conn.execute("alter system reset max_slot_wal_keep_size")
            conn.execute("select pg_reload_conf()")


def test_a_slot_postgresql_invalidated_is_made_anew_and_every_patient_rechecked(
    tmp_path: Path,
) -> None:
    """The change made before the slot was lost is gone from the stream; the indexer makes
    a new slot and re-checks every patient, so it still arrives. On a server of its own:
    invalidating slots is server-wide."""
    url = start_embedded(tmp_path / "server")
    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        migrate(conn)
    settings = indexed(
        url, "insert into patients (id, clinic_id, given_name) values ('p1', 'c1', 'Ann')"
    )
    execute(url, "update patients set given_name = 'Anna' where id = 'p1'")
    _lose_slots(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("select wal_status from pg_replication_slots").fetchall() == [("lost",)]
    assert run(settings, once=True) == 0
    assert projection(url)["p1"]["patient"]["given_name"] == "Anna"
    with psycopg.connect(url) as conn:
        assert conn.execute("select wal_status from pg_replication_slots").fetchall() != [("lost",)]
