"""The re-ranker on hand-made candidates: the order the issue asks for, tier by tier."""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.documents import build_document
from engines.base import Candidate
from search_api.plan import SearchInput, build_plan
from search_api.ranking import rank


def candidate(id: str, given: str, family: str, born: str, **extra: Any) -> Candidate:
    row = {
        "id": id,
        "clinic_id": "c",
        "given_name": given,
        "middle_name": None,
        "family_name": family,
        "birth_date": dt.date.fromisoformat(born),
        "mrn": extra.get("mrn"),
        "active": True,
    }
    contacts = [
        {"id": f"{id}-{i}", "kind": "phone", "value": v, "use": None}
        for i, v in enumerate(extra.get("phones", []))
    ]
    doc = build_document(row, contacts)
    return Candidate(id=id, patient=doc.patient, match=doc.match)


POOL = [
    candidate("mrn", "Zed", "Zulu", "2000-01-01", mrn="00412"),
    candidate("exact_dob", "John", "Smith", "1985-03-14"),
    candidate("exact_other_dob", "John", "Smith", "1970-01-01"),
    candidate("prefix", "Johnathan", "Smithers", "1990-02-02"),
    candidate("nickname", "Jack", "Smith", "1991-02-02"),
    candidate("phonetic", "Jon", "Smyth", "1992-02-02"),
    candidate("fuzzy", "Johm", "Smiht", "1993-02-02"),
    candidate("close_name_dob", "Jon", "Smyth", "1985-03-14"),
]


def order(q: str) -> list[str]:
    plan = build_plan(SearchInput(q=q), ["c"])
    return [r.candidate.id for r in rank(plan.rank, POOL)]


def test_identifier_beats_everything() -> None:
    assert order("john smith 3/14/1985 mrn 00412")[0] == "mrn"


def test_exact_name_and_dob_then_close_name_with_dob_then_namesake() -> None:
    ids = order("john smith 3/14/1985")
    assert ids[0] == "exact_dob"
    assert ids.index("close_name_dob") < ids.index("exact_other_dob")


def test_exact_then_prefix_then_phonetic_then_fuzzy() -> None:
    ids = order("john smith")
    assert set(ids[:2]) == {"exact_dob", "exact_other_dob"}
    assert ids.index("exact_other_dob") < ids.index("prefix") < ids.index("phonetic")
    assert ids.index("phonetic") < ids.index("fuzzy")


def test_swapped_day_month_still_matches_lower() -> None:
    pool = [
        candidate("right", "Ann", "Lee", "1985-03-04"),
        candidate("swapped", "Ann", "Lee", "1985-04-03"),
        candidate("other", "Ann", "Lee", "1960-07-07"),
    ]
    plan = build_plan(SearchInput(q="ann lee 1985-04-03"), ["c"])
    ranked = rank(plan.rank, pool)
    assert [r.candidate.id for r in ranked] == ["swapped", "right", "other"]
    assert "birth_date" in ranked[1].matched
    assert ranked[0].score > ranked[1].score > ranked[2].score


def test_given_and_family_swapped_still_match() -> None:
    plan = build_plan(SearchInput(q="smith john"), ["c"])
    top = rank(plan.rank, POOL)[0]
    assert top.candidate.id.startswith("exact")
    assert top.match == "exact"


def test_last_first_prefers_roles_as_typed() -> None:
    pool = [
        candidate("a", "Lee", "Ann", "1980-01-01"),
        candidate("b", "Ann", "Lee", "1980-01-01"),
    ]
    plan = build_plan(SearchInput(q="Lee, Ann"), ["c"])
    assert [r.candidate.id for r in rank(plan.rank, pool)] == ["b", "a"]


def test_scores_in_unit_interval_and_match_kinds() -> None:
    plan = build_plan(SearchInput(q="jon smyth"), ["c"])
    ranked = rank(plan.rank, POOL)
    assert all(0.0 <= r.score <= 1.0 for r in ranked)
    kinds = {r.candidate.id: r.match for r in ranked}
    assert kinds["phonetic"] == "exact"  # "jon smyth" is exactly Jon Smyth
    assert kinds["exact_dob"] == "phonetic"
    assert kinds["nickname"] in ("phonetic", "fuzzy")


def test_unrelated_candidates_are_dropped() -> None:
    plan = build_plan(SearchInput(q="xavier quigley"), ["c"])
    assert rank(plan.rank, POOL) == []


def test_two_typed_words_spelling_one_stored_word_match_exactly() -> None:
    pool = [
        candidate("mc", "Erin", "McDonald", "2013-05-01"),
        candidate("double", "Erin", "Peterson-McDonald", "1974-08-10"),
        candidate("other", "Erin", "Donaldson", "1980-01-01"),
    ]
    plan = build_plan(SearchInput(q="erin mc donald"), ["c"])
    ranked = rank(plan.rank, pool)
    assert [r.candidate.id for r in ranked][:2] == ["mc", "double"]
    assert ranked[0].match == "exact"
    assert "n:mcdonald" in plan.candidates.names[1].alternatives


def test_as_you_type_completion_beats_a_nickname() -> None:
    pool = [
        candidate("hannah", "Hannah", "Smith", "2015-02-04"),
        candidate("johnathan", "Johnathan", "Smith", "1980-01-01"),
    ]
    plan = build_plan(SearchInput(q="smith jo"), ["c"])
    assert rank(plan.rank, pool)[0].candidate.id == "johnathan"
