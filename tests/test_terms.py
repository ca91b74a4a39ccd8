"""Index terms have one owner (core.terms): what a document stores is what a query asks for."""

from __future__ import annotations

import datetime as dt

import pytest

from core import terms
from core.documents import build_document
from core.settings import Settings
from search_api.plan import SearchInput, build_plan, name_token
from search_api.service import lookup_terms

ROW = {
    "id": "p1",
    "clinic_id": "c",
    "mrn": "MRN 00412",
    "given_name": "Jonathan",
    "middle_name": None,
    "family_name": "Smyth",
    "birth_date": dt.date(1985, 3, 14),
    "active": True,
}
CONTACTS = [
    {"id": "c1", "kind": "phone", "value": "(555) 010-2233", "use": "mobile"},
    {"id": "c2", "kind": "email", "value": "Jon.Smyth@Example.com", "use": None},
]


def test_every_kind_round_trips() -> None:
    for kind in terms.KINDS:
        assert terms.parse(terms.term(kind, "a:b")) == (kind, "a:b")
    for bad in ("smith", "x:1", ":1"):
        with pytest.raises(ValueError):
            terms.parse(bad)


def test_values_of_one_kind() -> None:
    stored = [terms.name("smith"), terms.name("jo"), terms.phonetic("smith")[0], "n"]
    assert terms.values(stored, terms.NAME) == ["jo", "smith"]


def test_phone_ending_picks_seven_or_four_digits() -> None:
    assert terms.phone_ending("5550102233") == "t7:0102233"
    assert terms.phone_ending("2233") == "t4:2233"


def test_document_terms_all_parse() -> None:
    doc = build_document(ROW, CONTACTS)
    kinds = {terms.parse(t)[0] for t in doc.terms}
    assert kinds == set(terms.KINDS)


def test_query_terms_are_what_the_document_stores() -> None:
    """The writer and the reader spell every kind the same way (and code sounds the same way)."""
    doc = build_document(ROW, CONTACTS)
    stored = set(doc.terms)
    plan = build_plan(
        SearchInput(q="smyth jonathan 3/14/1985 (555) 010-2233 jon.smyth@example.com mrn 00412"),
        ["c"],
    ).candidates
    for token in plan.names:
        assert token.alternatives[0] in stored
        assert token.phonetic and set(token.phonetic) <= stored
    assert set(plan.strong_terms) <= stored
    assert set(plan.dob_terms) <= stored
    ending = build_plan(SearchInput(q="010-2233"), ["c"]).candidates.weak_terms
    assert ending and set(ending) <= stored
    booking = lookup_terms(
        birthdate="1985-03-14", phone="555 010 2233", mrn="00412", settings=Settings()
    )
    assert booking and all(set(pair) <= stored for pair in booking)


def test_typed_word_asks_with_its_primary_code_only() -> None:
    token = name_token("smith")
    assert token.phonetic == (terms.phonetic("smith")[0],)
    assert name_token("jo").phonetic == ()
