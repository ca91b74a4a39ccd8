"""The word dictionary per clinic (issue 9, item 6): counted per patient, words leave with
their last patient, and one clinic's names never reach another clinic's expansions."""

from __future__ import annotations

from typing import Any

import psycopg

from core.schema import migrate
from core.settings import Settings
from indexer.reindex import reindex
from indexer.sync import sync_patients
from tests.factories import insert_patient


def words(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], int]:
    rows = conn.execute("select clinic_id, term, patients from patient_search.name_words")
    return {(c, t): n for c, t, n in rows}


def keys(conn: psycopg.Connection[Any], patient: str) -> set[str]:
    rows = conn.execute("select term from patient_search.name_keys where id = %s", (patient,))
    return {r[0] for r in rows}


def test_reindex_counts_patients_per_clinic(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        # More patients than one reindex batch (2,000): counts are per patient, not per batch.
        with conn.cursor() as cur:
            cur.executemany(
                "insert into patients (id, clinic_id, given_name, family_name) "
                "values (%s, %s, %s, %s)",
                [(f"p{i}", "clinic-a", "Ann", "Smith") for i in range(2500)],
            )
        insert_patient(conn, "b1", clinic_id="clinic-b", given="Jozefina", family="Smith")
        conn.commit()
    reindex(db_url, Settings(), progress=False)
    with psycopg.connect(db_url) as conn:
        got = words(conn)
    assert got[("clinic-a", "smith")] == 2500
    assert got[("clinic-a", "ann")] == 2500
    assert got[("clinic-b", "smith")] == 1
    assert ("clinic-a", "jozefina") not in got  # no oracle of another clinic's names
    with psycopg.connect(db_url) as conn:
        # Each patient's words, and its given-family pair (a key, never a counted word).
        assert keys(conn, "b1") == {"jozefina", "smith", "jozefina smith"}
        assert conn.execute("select count(*) from patient_search.name_keys").fetchone() == (7503,)
    assert not [w for _, w in got if " " in w]


def test_words_follow_updates_and_leave_with_their_last_patient(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="Jozefina", family="Kowalska")
        insert_patient(conn, "p2", given="Jozefina", family="Nowak")
        sync_patients(conn, ["p1", "p2"])
        assert words(conn)[("clinic-a", "jozefina")] == 2
        # The same patient synced twice counts once.
        sync_patients(conn, ["p1"])
        assert words(conn)[("clinic-a", "jozefina")] == 2
        conn.execute("update patients set given_name = 'Josephine' where id = 'p1'")
        sync_patients(conn, ["p1"])
        got = words(conn)
        assert got[("clinic-a", "jozefina")] == 1
        assert got[("clinic-a", "josephine")] == 1
        assert ("clinic-a", "kowalska") in got
        assert keys(conn, "p1") == {"josephine", "kowalska", "josephine kowalska"}
        assert not [w for _, w in got if " " in w]
        conn.execute("delete from patients where id in ('p1', 'p2')")
        sync_patients(conn, ["p1", "p2"])
        assert not {k for k in words(conn) if k[0] == "clinic-a"}
        assert keys(conn, "p1") == set() and keys(conn, "p2") == set()


def test_the_migration_fills_the_pairs_of_a_projection_built_before_them(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "p1", given="Mary Ann", family="Lopez Garcia")
        insert_patient(conn, "p2", given="Ann Ann", family="Smith")
        sync_patients(conn, ["p1", "p2"])
        built = {p: keys(conn, p) for p in ("p1", "p2")}
        # As a projection written before name keys held pairs: its words only.
        conn.execute("delete from patient_search.name_keys where strpos(term, ' ') > 0")
        conn.execute("delete from patient_search.schema_migrations where version = 90")
        conn.commit()
        assert not [k for p in ("p1", "p2") for k in keys(conn, p) if " " in k]
        assert 90 in migrate(conn)
        assert {p: keys(conn, p) for p in ("p1", "p2")} == built
        assert "mary garcia" in built["p1"] and "ann smith" in built["p2"]
        # Run again over pairs already there (a projection reindexed since): nothing added.
        conn.execute("delete from patient_search.schema_migrations where version = 90")
        conn.commit()
        assert 90 in migrate(conn)
        assert {p: keys(conn, p) for p in ("p1", "p2")} == built


def test_a_word_new_to_a_clinic_is_announced_when_it_commits(db_url: str) -> None:
    """The API's word dictionaries skip exact passes for words they count no one for, so
    every word new to a clinic is announced (WORDS_CHANNEL); a word the clinic already
    holds, or one that leaves, is not."""
    from engines.pg_projection import ALL_CLINICS, WORDS_CHANNEL

    def announced(listening: psycopg.Connection[Any]) -> list[str]:
        return [n.payload for n in listening.notifies(timeout=0.3) if n.channel == WORDS_CHANNEL]

    with psycopg.connect(db_url, autocommit=True) as listening:
        listening.execute(f"listen {WORDS_CHANNEL}")
        with psycopg.connect(db_url) as conn:
            insert_patient(conn, "p1", given="Jozefina", family="Nowak")
            sync_patients(conn, ["p1"])
            assert announced(listening) == []  # not before it commits
            conn.commit()
            assert announced(listening) == ["clinic-a"]
            insert_patient(conn, "p2", given="Jozefina", family="Nowak")
            sync_patients(conn, ["p2"])  # the same words: nothing new
            conn.commit()
            assert announced(listening) == []
            insert_patient(conn, "b1", clinic_id="clinic-b", given="Jozefina", family="Nowak")
            conn.execute("update patients set given_name = 'Josephine' where id = 'p1'")
            sync_patients(conn, ["b1", "p1"])
            conn.commit()
            assert sorted(announced(listening)) == ["clinic-a", "clinic-b"]
            conn.execute("delete from patients where id = 'p2'")
            sync_patients(conn, ["p2"])  # a word leaves: nothing to announce
            conn.commit()
            assert announced(listening) == []
        reindex(db_url, Settings(), progress=False)
        assert announced(listening) == [ALL_CLINICS]
        reindex(db_url, Settings(), clinic_id="clinic-b", progress=False)
        assert announced(listening) == ["clinic-b"]
