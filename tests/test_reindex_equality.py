"""A reindex builds exactly what the indexer's incremental writes build (issue 11).

The reindex takes its own fast paths (COPY lines spelled by hand, name keys copied
beside the documents, counts from the word dictionary); the incremental path
(`sync_patients`) is the reference. Every table the read side uses must come out
equal, row for row, including for awkward values: quotes, backslashes, tabs and
newlines, accents, foreign and broken phone numbers, missing fields.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from core.state import reindex_guard
from indexer import reindex as rx
from indexer.sync import sync_patients
from tests.factories import insert_patient

TABLES = {
    "patients": "select id, clinic_id, active, birth_date, terms, name_text, sort_key, "
    "doc, source_updated_at from patient_search.patients order by id",
    "name_keys": "select clinic_id, term, id from patient_search.name_keys order by 1, 2, 3",
    "name_words": "select clinic_id, term, patients from patient_search.name_words order by 1, 2",
    "term_counts": "select term, count from patient_search.term_counts order by 1",
    "contact_owner": "select contact_id, patient_id from patient_search.contact_owner order by 1",
}

GIVEN = ["John", "Mary", "José", "Zoë", "Jean-Luc", "Bill", 'Quo"te', "Back\\slash", "Tab\tby"]
FAMILY = ["Smith", "O'Brien", "de la Cruz", "Nguyễn Thị", "Smith-Jones", "Łukasz", "New\nLine"]
PHONES = [
    "(555) 010-2233",
    "555.010.2234",
    "+1 212 555 0199",
    "+44 20 7946 0958",
    "00 33 1 23 45 67 89",
    "212-555-0100 ext 12",
    "12",
    "call me",
    "٠٥٥٥٠١٠٢٢٣٣",
]
EMAILS = ["Ann@Example.COM", "x@bücher.de", "not an address", "a\\b@example.org", " q@x.io "]
CLINICS = ["clinic-a", "clinic-b", 'cl"in\\ic\tc']


def _people(count: int) -> list[dict[str, Any]]:
    pick = random.Random(11)
    people = []
    for i in range(count):
        people.append(
            dict(
                id=f"p{i:05d}",
                clinic_id=CLINICS[i % len(CLINICS)],
                given=pick.choice([*GIVEN, None]),
                middle=pick.choice([None, None, "Ann", "Dr"]),
                family=pick.choice([*FAMILY, None]),
                birth_date=pick.choice(
                    [None, dt.date(1985, 3, 14), dt.date(999, 1, 2), dt.date(1950 + i % 60, 1, 1)]
                ),
                mrn=pick.choice([None, f"MRN {i:05d}", f"ab-{i}", f"{i:06d}"]),
                sex=pick.choice([None, "female", "male"]),
                postal_code=pick.choice([None, "02139"]),
                active=i % 7 != 0,
                phones=pick.sample(PHONES, pick.randint(0, 3)),
                emails=pick.sample(EMAILS, pick.randint(0, 2)),
            )
        )
    return people


def _tables(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: conn.execute(query).fetchall() for name, query in TABLES.items()}  # type: ignore[arg-type]


def _sync_all(conn: psycopg.Connection[Any]) -> None:
    ids = [r[0] for r in conn.execute("select id from patients order by id")]
    for start in range(0, len(ids), 500):
        with conn.transaction():
            sync_patients(conn, ids[start : start + 500])


def _assert_same(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> None:
    for name in TABLES:
        assert len(got[name]) == len(want[name]), name
        for row, expected in zip(got[name], want[name], strict=True):
            assert row == expected, name


@pytest.fixture
def people(db_url: str) -> str:
    # More than one fill batch (2,000) in each of two partitions.
    with psycopg.connect(db_url) as conn:
        for person in _people(4500):
            insert_patient(conn, **person)
    return db_url


def test_reindex_builds_what_the_incremental_writes_build(people: str) -> None:
    with psycopg.connect(people) as conn:
        _sync_all(conn)
        incremental = _tables(conn)
        conn.commit()
    assert len(incremental["patients"]) == 4500
    assert incremental["name_keys"] and incremental["term_counts"]
    rx.reindex(people, Settings(reindex_workers=2), progress=False)
    with psycopg.connect(people) as conn:
        _assert_same(_tables(conn), incremental)
    rx.reindex(people, Settings(reindex_workers=1), clinic_id=CLINICS[2], progress=False)
    with psycopg.connect(people) as conn:
        _assert_same(_tables(conn), incremental)


def test_changes_caught_up_in_the_swap_match_the_incremental_writes(people: str) -> None:
    settings = Settings(reindex_workers=2)
    with psycopg.connect(people) as conn:
        with reindex_guard(people, {"clinic_id": None}) as guard:
            filled = rx._build(people, guard.conn, settings, None, progress=False)
            with conn.transaction():  # after the snapshot: the indexer's business
                conn.execute("update patients set given_name = 'Renamed' where id = 'p00001'")
                conn.execute("update patients set clinic_id = 'clinic-b' where id = 'p00002'")
                conn.execute("delete from patients where id = 'p00003'")
                conn.execute("delete from patient_contacts where patient_id = 'p00004'")
                insert_patient(conn, "p99999", given="New", family="Smith", phones=["555-010-9999"])
                sync_patients(conn, ["p00001", "p00002", "p00003", "p00004", "p99999"])
            rx._swap(guard, settings, None, filled)
        swapped = _tables(conn)
        conn.commit()
        _sync_all(conn)  # rewrites every document from the source: the reference
        _assert_same(_tables(conn), swapped)
    assert ("clinic-b", "renamed", "p00001") in swapped["name_keys"]
