"""Meilisearch logic that needs no server: settings, ids, document shape, filters, searches."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.documents import PatientDocument, build_document
from engines.base import CandidateQuery, NameToken
from engines.meili_settings import (
    ENCODED_PREFIX,
    FILTERABLE_ATTRIBUTES,
    IDENTIFIER_ATTRIBUTES,
    MAX_PASSES,
    SEARCHABLE_ATTRIBUTES,
    InvalidDocumentId,
    UnsafeFilterValue,
    build_passes,
    clinic_filter,
    clinic_key,
    decode_id,
    encode_id,
    index_settings,
    query_words,
    quote,
    settings_mismatches,
    term_key,
    to_meili,
)
from search_api.plan import name_token

SAFE = re.compile(r"[A-Za-z0-9_-]+")


# -- ids ------------------------------------------------------------------------


@given(st.text(max_size=300))
def test_id_round_trip_on_arbitrary_strings(value: str) -> None:
    try:
        key = encode_id(value)
    except InvalidDocumentId:
        assert len(value.encode("utf-8", "surrogatepass")) > 300
        return
    assert SAFE.fullmatch(key)
    assert len(key.encode()) <= 511
    assert decode_id(key) == value


@given(st.text(alphabet="abcXYZ019-_", min_size=1, max_size=50))
def test_safe_ids_stay_readable(value: str) -> None:
    if not value.startswith(ENCODED_PREFIX):
        assert encode_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "b32_abc", "a b", "p/1", "ünï", "x" * 511 + "y", "p:1", "日本", "a\x00b"]
)
def test_ids_needing_encoding(value: str) -> None:
    try:
        key = encode_id(value)
    except InvalidDocumentId:
        assert len(value) > 300
        return
    assert key.startswith(ENCODED_PREFIX)
    assert SAFE.fullmatch(key)
    assert decode_id(key) == value


def test_distinct_ids_get_distinct_keys() -> None:
    values = ["p1", "b32_p1", "B32_p1", "b32_P1", encode_id("p 1"), "p 1", "P1"]
    assert len({encode_id(v) for v in values}) == len(values)


@pytest.mark.parametrize("value", ["B32_abc", "b32_ABC", "B32_"])
def test_prefix_in_any_case_is_encoded(value: str) -> None:
    """A raw id that merely looks like an encoded one, in any case, is encoded too."""
    key = encode_id(value)
    assert key != value and key.startswith(ENCODED_PREFIX)
    assert decode_id(key) == value


def test_too_long_id_is_rejected() -> None:
    with pytest.raises(InvalidDocumentId):
        encode_id("é" * 400)


# -- filters --------------------------------------------------------------------


def _unquote_all(expr: str) -> list[str]:
    """The string literals of a filter, read the way Meilisearch's grammar reads them."""
    out, i = [], 0
    while i < len(expr):
        if expr[i] == '"':
            i += 1
            buf = []
            while expr[i] != '"':
                if expr[i] == "\\":
                    i += 1
                buf.append(expr[i])
                i += 1
            out.append("".join(buf))
        i += 1
    return out


@given(st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_characters="\x7f")))
def test_quote_is_one_literal_holding_the_value(value: str) -> None:
    quoted = quote(value)
    assert quoted.startswith('"') and quoted.endswith('"')
    assert _unquote_all(quoted) == [value]


@pytest.mark.parametrize("value", ["a\nb", "\x00", "x\r", "\x1b[0m", "\x7f"])
def test_quote_refuses_control_characters(value: str) -> None:
    with pytest.raises(UnsafeFilterValue):
        quote(value)


INJECTIONS = [
    'clinic-a" OR clinic_id EXISTS OR clinic_id = "x',
    'a"]) OR (active = false',
    "a\\",
    'a\\" OR 1=1',
    "clinic-a OR clinic_id EXISTS",
    "] OR active = true",
    "",
    "clinic-a",
]


@pytest.mark.parametrize("clinic", INJECTIONS)
def test_clinic_filter_never_widens(clinic: str) -> None:
    expr = clinic_filter([clinic, "clinic-b"])
    literals = _unquote_all(expr)
    assert sorted(literals) == sorted({clinic_key(clinic), clinic_key("clinic-b")})
    assert all(SAFE.fullmatch(v) for v in literals)
    # Nothing but the one IN condition: no operator outside the quotes.
    outside = re.sub(r'"[^"]*"', '""', expr)
    assert re.fullmatch(r'clinic IN \[""(, "")*\]', outside)


def test_clinic_filter_needs_a_clinic() -> None:
    with pytest.raises(UnsafeFilterValue):
        clinic_filter([])


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_clinic_filter_round_trips_every_clinic(clinics: list[str]) -> None:
    literals = _unquote_all(clinic_filter(clinics))
    assert sorted(literals) == sorted({clinic_key(c) for c in clinics})


def _meili_facet_value(value: str) -> str:
    """What Meilisearch compares for a facet string (milli normalize_facet: trim, lowercase),
    cut at its 468-byte facet key limit."""
    return value.strip().lower().encode()[:468].decode("utf-8", "ignore")


@given(st.text(min_size=1), st.text(min_size=1))
def test_clinic_keys_are_case_proof(a: str, b: str) -> None:
    """Two clinics whose ids differ only in case, spaces or beyond 468 bytes never share a
    key once Meilisearch normalizes it: each key is already its own normal form."""
    for clinic in (a, b):
        key = clinic_key(clinic)
        assert _meili_facet_value(key) == key
    if a != b:
        assert clinic_key(a) != clinic_key(b)


def test_clinics_differing_only_in_case() -> None:
    assert clinic_key("CLINIC-A") != clinic_key("clinic-a")
    assert clinic_key("x" * 500 + "1") != clinic_key("x" * 500 + "2")
    doc = to_meili(_doc(clinic_id="CLINIC-A"))
    assert doc["clinic"] == clinic_key("CLINIC-A")
    assert _unquote_all(clinic_filter(["clinic-a"])) != [doc["clinic"]]


# -- settings -------------------------------------------------------------------


def test_settings_shape() -> None:
    s = index_settings(budget_ms=200)
    assert s["searchableAttributes"][:2] == ["family", "given"]
    assert s["searchableAttributes"][-1] == "phon"
    rules = s["rankingRules"]
    assert "exactness" in rules and rules.index("exactness") < rules.index("proximity")
    typo = s["typoTolerance"]
    assert typo["disableOnNumbers"] is True
    assert set(IDENTIFIER_ATTRIBUTES) <= set(typo["disableOnAttributes"])
    assert set(typo["disableOnAttributes"]) <= set(SEARCHABLE_ATTRIBUTES)
    assert {"clinic", "active", "keys"} == set(s["filterableAttributes"])
    assert {"-", "'"} <= set(s["separatorTokens"])
    assert s["pagination"]["maxTotalHits"] >= 100  # Settings.max_limit default
    assert s["synonyms"] == {}  # nicknames come from the normalizers, not a second list
    # Meilisearch runs a multi-search's passes one after another, each up to the cutoff:
    # together they must fit the budget with room for the round trip.
    assert s["searchCutoffMs"] == 25
    assert s["searchCutoffMs"] * MAX_PASSES <= 0.75 * 200


def test_settings_mismatches() -> None:
    wanted = index_settings()
    assert settings_mismatches(wanted, wanted) == []
    live = {**wanted, "filterableAttributes": list(reversed(FILTERABLE_ATTRIBUTES))}
    assert settings_mismatches(wanted, live) == []  # a set: order does not matter
    live = {**wanted, "searchableAttributes": list(reversed(SEARCHABLE_ATTRIBUTES))}
    assert settings_mismatches(wanted, live) == ["searchableAttributes"]  # priority order
    live = {**wanted, "typoTolerance": {**wanted["typoTolerance"], "disableOnNumbers": False}}
    assert settings_mismatches(wanted, live) == ["typoTolerance.disableOnNumbers"]
    assert "rankingRules" in settings_mismatches(wanted, {})


# -- documents ------------------------------------------------------------------


def _doc(**row: Any) -> PatientDocument:
    base: dict[str, Any] = {
        "id": "p/1 ü",
        "clinic_id": 'clinic "a"',
        "mrn": "MRN 00412",
        "given_name": "William",
        "middle_name": None,
        "family_name": "O'Brien-Smith",
        "birth_date": dt.date(1985, 3, 14),
        "sex": "male",
        "postal_code": "12345",
        "active": True,
    }
    base.update(row)
    contacts: list[dict[str, Any]] = [
        {"id": "c1", "kind": "phone", "value": "(555) 010-2233", "use": "mobile"},
        {"id": "c2", "kind": "email", "value": "Bill.OBrien@Example.com", "use": None},
    ]
    return build_document(base, contacts)


def test_document_shape() -> None:
    doc = _doc()
    m = to_meili(doc)
    assert decode_id(m["pk"]) == "p/1 ü"
    assert m["clinic"] == clinic_key('clinic "a"') and "clinic_id" not in m
    assert m["active"] is True
    assert m["patient"] == doc.patient and m["match"] == doc.match
    assert m["dob"] == "1985-03-14"
    assert m["phone"] == doc.match["phones"] and m["phone"]
    assert m["last4"] == ["2233"]
    assert m["email"] == doc.match["emails"]
    assert m["mrn"] == doc.match["mrn"]
    # Nickname groups and phonetic codes are the projection's own terms.
    assert m["nick"] == sorted(t[2:] for t in doc.terms if t.startswith("k:"))
    assert m["phon"] == sorted(t[2:] for t in doc.terms if t.startswith("p:"))
    assert m["keys"] == sorted({term_key(t) for t in doc.terms})
    assert set(m) >= set(SEARCHABLE_ATTRIBUTES) | set(FILTERABLE_ATTRIBUTES)


def test_nicknames_come_from_the_same_normalizers() -> None:
    """A query for "bill" carries a term that a William document holds (same k: group)."""
    m = to_meili(_doc())
    token = name_token("bill")
    assert any(term_key(t) in m["keys"] for t in token.alternatives if t.startswith("k:"))
    smyth = name_token("smyth")  # sounds like smith
    assert any(term_key(t) in m["keys"] for t in smyth.phonetic)


# -- searches -------------------------------------------------------------------


def _query(**kw: object) -> CandidateQuery:
    return CandidateQuery(clinic_ids=("clinic-a", 'evil" OR active = false'), **kw)  # type: ignore[arg-type]


def test_every_pass_is_clinic_filtered() -> None:
    q = _query(
        strong_terms=("mrn:00412",),
        weak_terms=("t4:2233",),
        names=(name_token("jon"), name_token("smyth")),
        dob_terms=("dob:1985-03-14",),
        dob_near_terms=("dob:1985-04-13",),
        name_text="jon smyth",
        limit=20,
    )
    passes = build_passes(q, "patients")
    assert passes[0].kind == "narrow"  # identifier and date-narrowed passes, merged
    kinds = [p.kind for p in passes]
    assert kinds == ["narrow", "name", "fuzzy_dob", "phonetic", "fuzzy", "fuzzy_any_name"]
    assert len(passes) <= MAX_PASSES
    cf = clinic_filter(q.clinic_ids)
    for p in passes:
        assert p.body["indexUid"] == "patients"
        assert p.body["limit"] == 20
        assert p.body["filter"].startswith(cf + " AND active = true")
        assert '"' not in p.body["q"]
        for literal in _unquote_all(p.body["filter"]):
            assert SAFE.fullmatch(literal)


def test_a_year_typed_with_the_name_narrows_first_then_the_namesakes_come() -> None:
    """ "john smith 1980": the narrow pass holds the name with the phone ending or any day
    of 1980; the name pass that follows holds the name alone (its namesakes), where a
    phone ending alone narrows the name pass itself."""
    names = (name_token("john"), name_token("smith"))
    year = _query(names=names, weak_terms=("t4:1980",), birth_years=(1980,), limit=20)
    passes = {p.kind: p.body["filter"] for p in build_passes(year, "patients")}
    assert list(passes)[:2] == ["narrow", "name"]
    for day in ("1980-01-01", "1980-02-29", "1980-12-31"):
        assert term_key(f"dob:{day}") in passes["narrow"]
    assert term_key("dob:1981-01-01") not in passes["narrow"]
    assert term_key("t4:1980") in passes["narrow"] and term_key("t4:1980") not in passes["name"]
    ending = _query(names=names, weak_terms=("t4:2233",), limit=20)
    passes = {p.kind: p.body["filter"] for p in build_passes(ending, "patients")}
    assert "narrow" not in passes and term_key("t4:2233") in passes["name"]


def test_inactive_only_when_asked() -> None:
    q = CandidateQuery(clinic_ids=("c",), include_inactive=True, dob_terms=("dob:2000-01-01",))
    (p,) = build_passes(q, "patients")
    assert p.kind == "dob" and "active" not in p.body["filter"]


def test_fulltext_passes_search_names_only() -> None:
    q = CandidateQuery(clinic_ids=("c",), names=(NameToken("smyth", ("n:smyth",)),))
    fuzzy = [p for p in build_passes(q, "patients") if p.body["q"]]
    assert fuzzy and all(
        set(p.body["attributesToSearchOn"]) <= {"family", "given", "middle", "name_keys", "nick"}
        for p in fuzzy
    )


def test_query_words_have_no_operators() -> None:
    assert query_words(['"smith', "-jones", "o'brien", "a-b"]) == "smith jones o'brien a-b"
    assert query_words(["", '""', "--"]) == ""


_TERM_SETS = {
    "strong_terms": ("mrn:00412",),
    "weak_terms": ("t4:2233",),
    "dob_terms": ("dob:1985-03-14",),
    "dob_near_terms": ("dob:1985-04-13",),
    "birth_years": (1980,),
}


@pytest.mark.parametrize("names", [(), ("jon",), ("jon", "smyth"), ("a", "b", "c", "d")])
@pytest.mark.parametrize("present", range(1 << len(_TERM_SETS)))
def test_passes_fit_the_budget(names: tuple[str, ...], present: int) -> None:
    """Whatever the query holds, at most MAX_PASSES searches, each filter well formed."""
    fields = {k: v for i, (k, v) in enumerate(_TERM_SETS.items()) if present >> i & 1}
    q = CandidateQuery(clinic_ids=("c",), names=tuple(name_token(n) for n in names), **fields)  # type: ignore[arg-type]
    passes = build_passes(q, "patients")
    assert len(passes) <= MAX_PASSES
    assert len({p.kind for p in passes}) == len(passes)
    for p in passes:
        outside = re.sub(r'"[^"]*"', '""', p.body["filter"])
        assert outside.count("(") == outside.count(")")
        assert outside.startswith('clinic IN [""]')


def test_narrow_pass_holds_every_strict_condition() -> None:
    q = _query(
        strong_terms=("mrn:00412",),
        names=(name_token("jon"),),
        dob_terms=("dob:1985-03-14",),
    )
    narrow = build_passes(q, "patients")[0].body["filter"]
    outside = re.sub(r'"[^"]*"', '""', narrow)
    # identifier OR (name AND date) OR (sound AND date) OR (date AND any name)
    assert outside.count(" OR ") == 3
    assert term_key("mrn:00412") in _unquote_all(narrow)
    assert term_key("dob:1985-03-14") in _unquote_all(narrow)


def test_dictionary_expansions_widen_the_loose_passes() -> None:
    """ "jo smith": Meilisearch completes only the last word; the dictionary's completions
    of "jo" (the terms PostgreSQL's passes use) make the first one count as typed."""
    q = CandidateQuery(clinic_ids=("c",), names=(name_token("jo"), name_token("smith")))
    expansions = ({"jo": {"n:john", "n:joseph"}, "smith": set()}, {"jo": set(), "smith": set()})
    plain = {p.kind: p.body["filter"] for p in build_passes(q, "patients")}
    wide = {p.kind: p.body["filter"] for p in build_passes(q, "patients", expansions)}
    assert plain.keys() == wide.keys()  # no extra pass: the same budget
    assert term_key("n:john") in _unquote_all(wide["phonetic"])
    assert term_key("n:john") not in _unquote_all(plain["phonetic"])
    assert term_key("n:john") not in _unquote_all(wide["name"])  # the exact pass stays exact
    typo = ({"smyht": set()}, {"smyht": {"n:smith", "n:smyth"}})
    q = CandidateQuery(clinic_ids=("c",), names=(name_token("smyht"),))
    phonetic = {p.kind: p for p in build_passes(q, "patients", typo)}["phonetic"]
    assert term_key("n:smith") in _unquote_all(phonetic.body["filter"])
