"""The synthetic population: deterministic, well-formed, and as messy as real records."""

from __future__ import annotations

import re
from itertools import islice

import phonenumbers
import psycopg
import pytest

from patient_search import names_data
from patient_search.synthetic import (
    PATIENT_COLUMNS,
    ContactRow,
    PatientRow,
    accented,
    generate,
    load,
)

SAMPLE = 5_000


@pytest.fixture(scope="module")
def sample() -> list[tuple[PatientRow, list[ContactRow]]]:
    return list(generate(SAMPLE, clinics=3, seed=0))


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = list(generate(500, clinics=3, seed=42))
    assert first == list(generate(500, clinics=3, seed=42))
    assert first != list(generate(500, clinics=3, seed=43))


def test_a_prefix_of_a_larger_run_is_the_smaller_run() -> None:
    assert list(generate(300, seed=5)) == list(islice(generate(1_000, seed=5), 300))


def test_shape(sample: list[tuple[PatientRow, list[ContactRow]]]) -> None:
    patients = [p for p, _ in sample]
    contacts = [c for _, cs in sample for c in cs]
    assert len(patients) == SAMPLE
    assert len({p.id for p in patients}) == SAMPLE
    assert all(re.fullmatch(r"p\d{7}", p.id) for p in patients)
    assert {p.clinic_id for p in patients} == {"clinic-1", "clinic-2", "clinic-3"}
    assert len({c.id for c in contacts}) == len(contacts)
    ids = {p.id for p in patients}
    for p, cs in sample:
        assert all(c.patient_id == p.id for c in cs)
        assert sum(c.kind == "phone" for c in cs) <= 3
        assert sum(c.kind == "email" for c in cs) <= 2
    assert all(c.patient_id in ids for c in contacts)
    assert {c.kind for c in contacts} == {"phone", "email"}
    assert {p.sex for p in patients} >= {"female", "male", "other", "unknown", None}
    years = [p.birth_date.year for p in patients if p.birth_date]
    assert min(years) >= 1930 and max(years) <= 2025
    assert 0.85 < sum(p.active for p in patients) / SAMPLE < 0.98
    mrns = [(p.clinic_id, p.mrn) for p in patients]
    assert len(set(mrns)) == SAMPLE  # unique within each clinic
    assert PatientRow._fields == PATIENT_COLUMNS


def test_mrn_formats_differ_by_clinic(sample: list[tuple[PatientRow, list[ContactRow]]]) -> None:
    by_clinic = {p.clinic_id: p.mrn for p, _ in sample}
    assert re.fullmatch(r"\d{6}", by_clinic["clinic-1"] or "")
    assert re.fullmatch(r"A-\d{6}", by_clinic["clinic-2"] or "")
    assert re.fullmatch(r"SJ\d{7}", by_clinic["clinic-3"] or "")


def test_names_are_realistically_messy(sample: list[tuple[PatientRow, list[ContactRow]]]) -> None:
    patients = [p for p, _ in sample]
    given = [p.given_name or "" for p in patients]
    family = [p.family_name or "" for p in patients]
    every = given + family

    def has(pred: object) -> int:
        return sum(1 for name in every if pred(name))  # type: ignore[operator]

    assert has(lambda n: any(ord(ch) > 127 and ch not in "’" for ch in n)) > 50  # accents
    assert has(lambda n: "-" in n) > 20  # hyphenated
    assert has(lambda n: n.split(" ")[0] in ("de", "del", "van", "von", "da", "dos")) > 3
    assert has(lambda n: "'" in n) > 5  # O'Brien
    assert has(lambda n: n.startswith("Mc")) > 5
    assert has(lambda n: n.endswith((" Jr", " Jr.", " III", " II", " Sr", " IV"))) > 10
    nicknames = {nick for nicks in names_data.NICKNAMES.values() for nick in nicks}
    assert sum(g in nicknames for g in given) > 20  # "Bill", "Peggy", "Liz" as given names
    assert sum(p.middle_name is None for p in patients) > SAMPLE // 5
    assert sum(p.middle_name is not None for p in patients) > SAMPLE // 5
    assert sum(g.isupper() and len(g) > 1 for g in given) > 20  # legacy upper-case imports


def test_curly_apostrophes_and_split_mc_in_a_larger_run() -> None:
    family = [p.family_name or "" for p, _ in generate(20_000, clinics=5, seed=0)]
    assert sum("’" in f for f in family) > 3  # O’Brien pasted from a word processor
    assert sum(f.startswith("Mc ") for f in family) > 3  # Mc Donald


def test_frequency_skew(sample: list[tuple[PatientRow, list[ContactRow]]]) -> None:
    counts: dict[str, int] = {}
    for p, _ in sample:
        counts[p.family_name or ""] = counts.get(p.family_name or "", 0) + 1
    top = sorted(counts, key=counts.__getitem__, reverse=True)[:10]
    assert "Smith" in top
    assert counts.get("Garcia", 0) + counts.get("García", 0) > 20
    assert len(counts) > 500  # and a long tail


def test_near_duplicates(sample: list[tuple[PatientRow, list[ContactRow]]]) -> None:
    patients = [p for p, _ in sample]
    by_name: dict[tuple[str, str, str], set[object]] = {}
    by_dob: dict[tuple[str, str, object], set[str]] = {}
    for p in patients:
        by_name.setdefault((p.clinic_id, p.given_name or "", p.family_name or ""), set()).add(
            p.birth_date
        )
        by_dob.setdefault((p.clinic_id, p.family_name or "", p.birth_date), set()).add(
            p.given_name or ""
        )
    namesakes = sum(1 for dobs in by_name.values() if len(dobs) > 1)
    twins = sum(1 for names in by_dob.values() if len(names) > 1)
    assert namesakes > 20
    assert twins > 5


def test_phones_parse_and_emails_are_reserved(
    sample: list[tuple[PatientRow, list[ContactRow]]],
) -> None:
    contacts = [c for _, cs in sample for c in cs]
    phones = [c.value for c in contacts if c.kind == "phone"]
    styles = {re.sub(r"\d", "9", v.split(" x")[0]) for v in phones}
    assert len(styles) >= 8
    for value in phones[:500]:
        number = phonenumbers.parse(value, "US")
        assert phonenumbers.is_possible_number(number), value
        assert phonenumbers.national_significant_number(number)[3:6] == "555"
    emails = [c.value for c in contacts if c.kind == "email"]
    assert emails and all(re.fullmatch(r"[\w.]+@[\w.]*example\.(com|net|org)", e) for e in emails)


def test_accented() -> None:
    assert accented("Jose Luis") == "José Luis"
    assert accented("Garcia-Lopez") == "García-López"
    assert accented("Smith") == "Smith"


def test_load_writes_exactly_n_rows(db_url: str) -> None:
    n = 1_234
    expected_contacts = sum(len(cs) for _, cs in generate(n, clinics=2, seed=3))
    with psycopg.connect(db_url) as conn:
        assert load(conn, n, clinics=2, seed=3, batch=500) == n
        conn.commit()
        row = conn.execute("select count(*), count(distinct clinic_id) from patients").fetchone()
        assert row == (n, 2)
        row = conn.execute("select count(*) from patient_contacts").fetchone()
        assert row == (expected_contacts,)
        first = conn.execute(
            "select id, clinic_id, given_name, family_name, birth_date, active "
            "from patients order by id limit 1"
        ).fetchone()
    p = next(generate(1, clinics=2, seed=3))[0]
    assert first == (p.id, p.clinic_id, p.given_name, p.family_name, p.birth_date, p.active)


def test_load_error_surfaces_and_does_not_hang(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        load(conn, 10, seed=1)
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            load(conn, 200, seed=1, batch=50)  # same ids again
        conn.rollback()
