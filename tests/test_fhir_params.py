"""FHIR search parameters -> the service's search input (pure: no database)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.base import Candidate, CandidateQuery
from engines.filters import Filter, accepts
from search_api.failover import Router
from search_api.fhir.errors import FhirError
from search_api.fhir.params import date_filter, parse_search
from search_api.fhir.resources import fhir_id, source_id

D = dt.date


@pytest.mark.parametrize(
    ("value", "bounds", "op"),
    [
        ("1974", (D(1974, 1, 1), D(1975, 1, 1)), "range"),
        ("1974-02", (D(1974, 2, 1), D(1974, 3, 1)), "range"),
        ("2024-02", (D(2024, 2, 1), D(2024, 3, 1)), "range"),
        ("eq1974-12-31", (D(1974, 12, 31), D(1975, 1, 1)), "range"),
        ("ne1974", (D(1974, 1, 1), D(1975, 1, 1)), "not_range"),
        ("gt1974", (D(1975, 1, 1), None), "range"),
        ("sa1974-06", (D(1974, 7, 1), None), "range"),
        ("lt1974-06", (None, D(1974, 6, 1)), "range"),
        ("eb1974", (None, D(1974, 1, 1)), "range"),
        ("ge1974-06-15", (D(1974, 6, 15), None), "range"),
        ("le1974-06", (None, D(1974, 7, 1)), "range"),
        ("9999", (D(9999, 1, 1), None), "range"),
    ],
)
def test_dates_are_ranges(value: str, bounds: tuple[D | None, D | None], op: str) -> None:
    found, _ = date_filter("birthdate", value)
    assert found == Filter("birth_date", op, bounds)


def test_ap_widens_by_a_tenth_of_the_distance_from_today() -> None:
    found, _ = date_filter("birthdate", "ap2000-01-01", today=D(2010, 1, 1))
    assert found.values == (D(1999, 1, 1), D(2001, 1, 1))  # 3653 days // 10 either side


def test_only_an_eq_day_is_also_ranked() -> None:
    assert date_filter("birthdate", "1974-03-14")[1] == "1974-03-14"
    assert date_filter("birthdate", "eq1974-03-14")[1] == "1974-03-14"
    assert date_filter("birthdate", "1974-03")[1] is None
    assert date_filter("birthdate", "ge1974-03-14")[1] is None


@pytest.mark.parametrize("value", ["1974-13", "1974-02-30", "74", "1974/03/14", "zz1974", ""])
def test_bad_dates_name_the_parameter(value: str) -> None:
    with pytest.raises(FhirError) as caught:
        date_filter("birthdate", value)
    assert caught.value.status == 400 and caught.value.message.startswith("birthdate:")


def test_range_filters_hold_missing_dates_out() -> None:
    inside, _ = date_filter("birthdate", "1974")
    outside, _ = date_filter("birthdate", "ne1974")
    for f in (inside, outside):
        assert not accepts([f], {"birth_date": None})
    assert accepts([inside], {"birth_date": "1974-12-31"})
    assert not accepts([outside], {"birth_date": "1974-12-31"})


def parse(*items: tuple[str, str], strict: bool = False) -> object:
    return parse_search(list(items), strict=strict, mrn_system="urn:mrn", max_count=100)


def test_parameters_become_one_search_input() -> None:
    found = parse(
        ("family", "Smith"),
        ("given", "jo"),
        ("birthdate", "1974-03-14"),
        ("identifier", "urn:mrn|00412"),
        ("phone", "(555) 123-4567"),
        ("_count", "500"),
        ("_sort", "-birthdate,family"),
        ("_total", "accurate"),
    )
    request = found.request  # type: ignore[attr-defined]
    assert (request.family, request.given, request.birthdate) == ("Smith", "jo", "1974-03-14")
    assert (request.mrn, request.phone, request.limit) == ("00412", "(555) 123-4567", 100)
    assert request.sort == ("-birthdate", "family")
    assert request.match_all and request.exhaustive and request.include_inactive
    assert found.total  # type: ignore[attr-defined]


def test_exact_and_contains_become_filters() -> None:
    request = parse(("name:exact", "Smith"), ("family:contains", "mit")).request  # type: ignore[attr-defined]
    assert Filter("name", "exact", ("Smith",)) in request.filters
    assert Filter("family", "contains", ("mit",)) in request.filters
    assert request.name == "Smith" and request.family is None


def test_exact_and_contains_compare_as_documented() -> None:
    patient = {"given_name": "John", "middle_name": None, "family_name": "Smíth"}
    assert accepts([Filter("name", "exact", ("John Smíth",))], patient)
    assert not accepts([Filter("family", "exact", ("Smith",))], patient)
    assert accepts([Filter("family", "contains", ("MIT",))], patient)
    assert not accepts([Filter("given", "contains", ("mit",))], patient)


def test_unknown_parameters_are_ignored_unless_strict() -> None:
    found = parse(("family", "smith"), ("shoe", "42"), ("_summary", "true"))
    assert found.applied == (("family", "smith"),)  # type: ignore[attr-defined]
    with pytest.raises(FhirError):
        parse(("family", "smith"), ("shoe", "42"), strict=True)


def test_other_identifier_systems_match_nothing() -> None:
    assert parse(("identifier", "urn:other|00412")).impossible  # type: ignore[attr-defined]
    assert parse(("identifier", "|00412")).impossible  # type: ignore[attr-defined]
    assert parse(("_id", "not an id!")).impossible  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "source", ["p1", "a.b-c", "weird id/1", "x.41", "é", "0\n", "pat_" + "é" * 21, "x" * 64]
)
def test_ids_round_trip_as_fhir_ids(source: str) -> None:
    assert source_id(fhir_id(source)) == source
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", fhir_id(source))


@given(st.text(min_size=1, max_size=46).filter(lambda s: len(s.encode("utf-8")) <= 46))
def test_any_source_id_of_up_to_46_bytes_is_a_fhir_id(source: str) -> None:
    encoded = fhir_id(source)
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", encoded)
    assert source_id(encoded) == source


class _Engine:
    """Counts calls: which engine a filtered query goes to is the point, not the answer."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        self.calls += 1
        return []

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None:
        return None


def test_filtered_queries_go_to_postgres_which_applies_the_filters() -> None:
    postgres, meili = _Engine("postgres"), _Engine("meili")
    router = Router(postgres, meili)
    try:
        plain = router.candidates(CandidateQuery(clinic_ids=("a",)))
        filtered = router.candidates(
            CandidateQuery(clinic_ids=("a",), filters=(Filter("active", "in", (True,)),))
        )
    finally:
        router.close()
    assert (plain.engine, filtered.engine, filtered.degraded) == ("meili", "postgres", False)
    assert (meili.calls, postgres.calls) == (1, 1)
