"""Per-clinic counts of name words and dates: kept by reindex and by every CDC write."""

from __future__ import annotations

import psycopg
import pytest

from core import term_counts
from core.schema import migrate
from core.settings import Settings
from indexer import reindex as rx
from indexer.sync import sync_patients
from tests.factories import insert_patient, patient, seed


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("select term, count from patient_search.term_counts").fetchall()
    return {r[0]: r[1] for r in rows}


def _expected(conn: psycopg.Connection) -> dict[str, int]:
    saved = _counts(conn)
    conn.execute("savepoint s")
    term_counts.refresh(conn, table="patients")
    expected = _counts(conn)
    conn.execute("rollback to savepoint s")
    assert _counts(conn) == saved
    return expected


@pytest.fixture
def clinics(db_url: str) -> str:
    """12 patients in clinic-a (6 Smiths, 4 born 1985-03-14), 5 Ana Smiths in clinic-b."""
    given = ["Ana", "John", "Mary"]
    a = [
        patient(
            f"a{i}",
            given[i % 3],
            "Smith" if i % 2 else f"Rare{i}",
            "1985-03-14" if i < 4 else f"1990-01-{i + 1:02d}",
            clinic_id="clinic-a",
        )
        for i in range(12)
    ]
    b = [patient(f"b{i}", "Ana", "Smith", clinic_id="clinic-b") for i in range(5)]
    seed(db_url, a + b, Settings(), keys=lambda _: None)
    return db_url


def key(clinic: str, term: str) -> str:
    return term_counts.key(clinic, term)


def test_reindex_counts_words_dates_and_patients_per_clinic(clinics: str) -> None:
    with psycopg.connect(clinics) as conn:
        counts = _counts(conn)
    assert counts[key("clinic-a", "#")] == 12
    assert counts[key("clinic-b", "#")] == 5
    assert counts[key("clinic-a", "n:smith")] == 6
    assert counts[key("clinic-b", "n:smith")] == 5  # never mixed across clinics
    assert counts[key("clinic-a", "n:ana")] == 4
    assert counts[key("clinic-a", "dob:1985-03-14")] == 4
    assert counts[key("clinic-a", "n:rare0")] == 1
    assert not any(":" in t and t.split("\x1f")[1].startswith(("p:", "k:")) for t in counts)


def test_cdc_writes_keep_the_counts_exact(clinics: str) -> None:
    with psycopg.connect(clinics) as conn:
        # a new patient, a renamed one, a moved date, a deleted one
        insert_patient(conn, "a100", clinic_id="clinic-a", given="Zed", family="Smith")
        conn.execute("update patients set family_name = 'Jones' where id = 'a1'")
        conn.execute("update patients set birth_date = '2001-02-03' where id = 'a0'")
        conn.execute("delete from patients where id = 'a2'")
        sync_patients(conn, ["a100", "a1", "a0", "a2"])
        counts = _counts(conn)
        assert counts == _expected(conn)
        assert counts[key("clinic-a", "#")] == 12
        assert counts[key("clinic-a", "n:smith")] == 6  # +a100, -a1
        assert counts[key("clinic-a", "n:jones")] == 1
        assert counts[key("clinic-a", "dob:1985-03-14")] == 2  # a0 moved, a2 deleted
        assert key("clinic-a", "n:rare2") not in counts  # nobody holds it any more
        # the same change applied twice (at-least-once delivery) counts once
        sync_patients(conn, ["a100", "a1"])
        assert _counts(conn) == counts


def test_one_clinic_reindex_recounts_only_that_clinic(clinics: str) -> None:
    with psycopg.connect(clinics) as conn:
        insert_patient(conn, "b100", clinic_id="clinic-b", given="Ana", family="Smith")
        conn.commit()  # not synced: only the clinic-b rebuild sees it
    rx.reindex(clinics, Settings(), clinic_id="clinic-b", progress=False)
    with psycopg.connect(clinics) as conn:
        counts = _counts(conn)
        assert counts == _expected(conn)
    assert counts[key("clinic-b", "#")] == 6
    assert counts[key("clinic-a", "#")] == 12


def test_migration_fills_counts_from_an_existing_projection(clinics: str) -> None:
    with psycopg.connect(clinics) as conn:
        before = _counts(conn)
        conn.execute("drop table patient_search.term_counts")
        conn.execute("delete from patient_search.schema_migrations where version = 40")
        conn.commit()
        assert 40 in migrate(conn)
        assert _counts(conn) == before


def test_the_engine_reads_word_counts_and_clinic_sizes_from_its_dictionary(clinics: str) -> None:
    """The API's counts (PostgresEngine.term_counts) equal the table's, though only the
    dates asked for are read from it: words and clinic sizes come from the word
    dictionary, as evidence asks for them."""
    from core.database import open_pool
    from engines.pg_search import PostgresEngine

    names = [
        key("clinic-a", "#"),
        key("clinic-b", "#"),
        key("clinic-a", "n:smith"),
        key("clinic-b", "n:ana"),
        key("clinic-a", "n:nobody"),
    ]
    born = key("clinic-a", "dob:1985-03-14")
    wanted = [*names, born]
    pool = open_pool(clinics, Settings(pool_min_size=1, pool_max_size=2))
    try:
        engine = PostgresEngine(pool)
        with psycopg.connect(clinics) as conn:
            table = term_counts.lookup(conn, wanted)
            counts = engine.term_counts([born])  # loads the dictionary when not yet loaded
            assert {k: counts.get(k, 0) for k in wanted} == {k: table.get(k, 0) for k in wanted}
            conn.execute(
                "delete from patient_search.term_counts where term not like %s", ("%dob:%",)
            )
            conn.commit()  # only dates are left in the table: the rest is the dictionary's
        counts = engine.term_counts([born])
        assert {k: counts.get(k, -1) for k in wanted} == {
            key("clinic-a", "#"): 12,
            key("clinic-b", "#"): 5,
            key("clinic-a", "n:smith"): 6,
            key("clinic-b", "n:ana"): 5,
            key("clinic-a", "n:nobody"): -1,  # nobody holds it: the default
            born: 4,
        }
        # A date not read up front counts no one (a search without a typed date).
        assert engine.term_counts([]).get(born, -1) == -1
    finally:
        pool.close()
