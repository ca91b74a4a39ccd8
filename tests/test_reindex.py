"""Reindex: complete, consistent, never empty, and no change made meanwhile is lost."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.settings import Settings
from core.state import ReindexBusy, reindex_guard
from indexer import reindex as rx
from indexer import runner
from indexer.sync import sync_patients
from tests.factories import insert_patient, insert_patients, patient
from tests.fixtures import make_indexer_settings


def _projection(conn: psycopg.Connection) -> dict[str, dict]:
    rows = conn.execute("select id, doc->'patient' from patient_search.patients").fetchall()
    return {r[0]: r[1] for r in rows}


def _numbered(i: int) -> dict[str, Any]:
    """Patient i of `populated`: every third in clinic-b, its own family name and phone."""
    given, clinic = ["Ana", "John", "Mary"][i % 3], "clinic-a" if i % 3 else "clinic-b"
    return patient(f"p{i:04d}", given, f"Family{i}", clinic_id=clinic, phones=[f"555-010-{i:04d}"])


@pytest.fixture
def populated(db_url: str) -> str:
    insert_patients(db_url, [_numbered(i) for i in range(300)])
    return db_url


@pytest.mark.parametrize("workers", [1, 2])
def test_every_patient_once(populated: str, workers: int) -> None:
    count = rx.reindex(populated, Settings(reindex_workers=workers), progress=False)
    assert count == 300
    with psycopg.connect(populated) as conn:
        projection = _projection(conn)
        source = {r[0] for r in conn.execute("select id from patients")}
        words = conn.execute("select count(*) from patient_search.name_words").fetchone()
        owners = conn.execute("select count(*) from patient_search.contact_owner").fetchone()
    assert set(projection) == source
    assert words and words[0] >= 300  # family0 .. family299 at least
    assert owners == (300,)


def test_clinic_reindex_touches_only_that_clinic(populated: str) -> None:
    settings = Settings(reindex_workers=1)
    rx.reindex(populated, settings, progress=False)
    with psycopg.connect(populated) as conn:
        conn.execute("update patients set family_name = 'Changed'")  # no indexer running
    rx.reindex(populated, settings, clinic_id="clinic-b", progress=False)
    with psycopg.connect(populated) as conn:
        projection = _projection(conn)
    assert len(projection) == 300
    for doc in projection.values():
        expected = "Changed" if doc["clinic_id"] == "clinic-b" else doc["family_name"]
        assert doc["family_name"] == expected
    assert any(p["family_name"] != "Changed" for p in projection.values())


def test_changes_during_a_rebuild_survive_the_swap(populated: str) -> None:
    settings = Settings(reindex_workers=2)
    rx.reindex(populated, settings, progress=False)
    with psycopg.connect(populated) as conn:
        before = _projection(conn)
        conn.commit()
        with reindex_guard(populated, {"clinic_id": None}) as guard:
            filled = rx._build(populated, guard.conn, settings, None, progress=False)
            # Readers still see the whole old projection while the rebuild waits for its swap.
            assert _projection(conn) == before
            conn.commit()
            # The indexer handles changes made after the rebuild's snapshot.
            with conn.transaction():
                conn.execute("update patients set given_name = 'Renamed' where id = 'p0001'")
                conn.execute("delete from patients where id = 'p0002'")
                insert_patient(conn, "p9999", given="New", family="Patient")
                sync_patients(conn, ["p0001", "p0002", "p9999"])
            rx._swap(guard, settings, None, filled)
        after = _projection(conn)
        words = dict(conn.execute("select term, patients from patient_search.name_words"))
        touched = conn.execute("select count(*) from patient_search.reindex_touched").fetchone()
        state = conn.execute("select count(*) from patient_search.state where key = 'reindex'")
    assert after["p0001"]["given_name"] == "Renamed"
    assert "p0002" not in after
    assert after["p9999"]["family_name"] == "Patient"
    assert len(after) == 300
    assert touched == (0,)
    assert state.fetchone() == (0,)
    assert words["renamed"] == 1 and words["new"] == 1  # the words follow the swap


def test_a_second_reindex_at_the_same_time_is_refused(populated: str) -> None:
    with psycopg.connect(populated, autocommit=True) as other:
        with reindex_guard(populated, {"engine": "meilisearch"}), pytest.raises(ReindexBusy):
            rx.reindex(populated, Settings(), progress=False)
        assert other.execute("select count(*) from patient_search.state").fetchone() == (0,)


def test_a_refused_reindex_leaves_the_running_ones_slot(populated: str) -> None:
    """A second reindex refused while one runs must not remake the running one's slot:
    the changes committed between the two slots would never reach the indexer."""
    settings = make_indexer_settings(populated, reindex_workers=1)
    rx.make_source(populated, settings).prepare_for_rebuild()  # as the running one did
    slot = "select restart_lsn::text from pg_replication_slots where slot_name = %s"
    checkpoint = "select position from patient_search.checkpoints"
    with psycopg.connect(populated, autocommit=True) as conn:
        kept = conn.execute(slot, (settings.slot_name,)).fetchall()
        marks = conn.execute(checkpoint).fetchall()
        conn.execute("update patients set given_name = 'Meanwhile' where id = 'p0001'")
        with reindex_guard(populated, {"engine": "postgres"}), pytest.raises(ReindexBusy):
            rx.reindex(populated, settings, progress=False)
        assert conn.execute(slot, (settings.slot_name,)).fetchall() == kept
        assert conn.execute(checkpoint).fetchall() == marks


def test_clinic_rebuild_keeps_other_clinics_contact_owners(populated: str) -> None:
    """A patient of another clinic touched during a one-clinic rebuild keeps its contacts'
    owner rows, so a later contact delete still finds whose document to rebuild."""
    settings = Settings(reindex_workers=1)
    rx.reindex(populated, settings, progress=False)
    with psycopg.connect(populated) as conn:
        with reindex_guard(populated, {"clinic_id": "clinic-b"}) as guard:
            filled = rx._build(populated, guard.conn, settings, "clinic-b", progress=False)
            with conn.transaction():  # the indexer handles a clinic-a patient meanwhile
                conn.execute("update patients set given_name = 'Renamed' where id = 'p0001'")
                sync_patients(conn, ["p0001"])
            rx._swap(guard, settings, "clinic-b", filled)
        owners = conn.execute(
            "select count(*) from patient_search.contact_owner where patient_id = 'p0001'"
        ).fetchone()
        total = conn.execute("select count(*) from patient_search.contact_owner").fetchone()
    assert owners == (1,)
    assert total == (300,)


def test_the_indexer_after_a_full_reindex_streams_without_redoing_it(
    populated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """migrate, reindex, indexer: one build. Changes made while the reindex ran (after its
    snapshot, no indexer running) and after it are streamed, not found by a second pass."""
    settings = make_indexer_settings(populated, reindex_workers=2)
    fill = rx._fill

    def fill_then_change(job: Any, advance: Any) -> Any:
        result = fill(job, advance)  # the snapshot is taken: these changes are not in it
        with psycopg.connect(populated) as conn:
            conn.execute("update patients set given_name = 'During' where id = 'p0001'")
            conn.execute("delete from patients where id = 'p0002'")
        return result

    monkeypatch.setattr(rx, "_fill", fill_then_change)
    assert rx.reindex(populated, settings, progress=False) == 300
    with psycopg.connect(populated) as conn:
        # The reindex read its own stream up to now: the indexer starts with nothing behind.
        assert _projection(conn)["p0001"]["given_name"] == "During"
        pending = conn.execute(
            "select count(*) from pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', %s)",
            (settings.slot_name, settings.publication_name),
        ).fetchone()
        assert pending == (0,)
        insert_patient(conn, "p9999", given="After", family="Reindex")
    resyncs: list[int] = []
    monkeypatch.setattr(runner, "resync_all", lambda *a, **k: resyncs.append(1) or 0)
    assert runner.run(settings, once=True) == 0
    assert resyncs == []
    with psycopg.connect(populated) as conn:
        after = _projection(conn)
    assert after["p0001"]["given_name"] == "During"
    assert "p0002" not in after
    assert after["p9999"]["given_name"] == "After"
    assert len(after) == 300


def test_a_second_reindex_with_no_indexer_between_starts_a_new_slot(
    populated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes left unread in the slot by no running indexer are in the next rebuild's
    snapshot: that reindex makes the slot anew (so it lags by nothing) and the indexer
    then streams without a second pass. With Meilisearch configured the slot is kept:
    its changes have yet to reach Meilisearch."""
    settings = make_indexer_settings(populated, reindex_workers=1)
    rx.reindex(populated, settings, progress=False)
    with psycopg.connect(populated, autocommit=True) as conn:
        conn.execute("update patients set given_name = 'Unread' where id = 'p0001'")
        moved = (
            "select restart_lsn::text, restart_lsn > %s::pg_lsn "
            "from pg_replication_slots where slot_name = %s"
        )
        before, _ = conn.execute(moved, ("0/0", settings.slot_name)).fetchone() or ("", False)
        meili = make_indexer_settings(populated, meili_url="http://127.0.0.1:9")
        rx.make_source(populated, meili).prepare_for_rebuild()
        assert conn.execute(moved, (before, settings.slot_name)).fetchone() == (before, False)
        rx.reindex(populated, settings, progress=False)
        assert conn.execute(moved, (before, settings.slot_name)).fetchone()[1]  # type: ignore[index]
        assert _projection(conn)["p0001"]["given_name"] == "Unread"
    resyncs: list[int] = []
    monkeypatch.setattr(runner, "resync_all", lambda *a, **k: resyncs.append(1) or 0)
    assert runner.run(settings, once=True) == 0
    assert resyncs == []


def test_a_failed_reindex_leaves_the_indexer_its_initial_sync(
    populated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_indexer_settings(populated, reindex_workers=1)

    def broken(*args: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(rx, "_fill", broken)
    with pytest.raises(RuntimeError):
        rx.reindex(populated, settings, progress=False)
    monkeypatch.undo()
    assert runner.run(settings, once=True) == 0  # initial sync: the projection was empty
    with psycopg.connect(populated) as conn:
        assert len(_projection(conn)) == 300
