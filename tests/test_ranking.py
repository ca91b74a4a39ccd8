"""The re-ranker on hand-made candidates: the order the issue asks for, tier by tier."""

from __future__ import annotations

import datetime as dt
from typing import Any

from core import term_counts
from core.documents import build_document
from engines.base import Candidate
from search_api.plan import SearchInput, build_plan
from search_api.ranking import (
    Ranked,
    date_keys,
    grade_of,
    match_date,
    match_probabilities,
    rank,
)


def candidate(id: str, given: str, family: str, born: str, **extra: Any) -> Candidate:
    row: dict[str, Any] = {
        "id": id,
        "clinic_id": "c",
        "given_name": given,
        "middle_name": None,
        "family_name": family,
        "birth_date": dt.date.fromisoformat(born),
        "mrn": extra.get("mrn"),
        "active": extra.get("active", True),
        "updated_at": extra.get("updated_at"),
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


def rank_for(q: str, pool: list[Candidate], freq: dict[str, int] | None = None) -> list[Ranked]:
    """The pool ranked for a search-box string typed at clinic "c"."""
    return rank(build_plan(SearchInput(q=q), ["c"]).rank, pool, freq)


def order(q: str) -> list[str]:
    return [r.candidate.id for r in rank_for(q, POOL)]


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
    ranked = rank_for("ann lee 1985-04-03", pool)
    assert [r.candidate.id for r in ranked] == ["swapped", "right", "other"]
    assert "birth_date" in ranked[1].matched
    assert ranked[0].score > ranked[1].score > ranked[2].score


def test_given_and_family_swapped_still_match() -> None:
    top = rank_for("smith john", POOL)[0]
    assert top.candidate.id.startswith("exact")
    assert top.match == "exact"


def test_last_first_prefers_roles_as_typed() -> None:
    pool = [
        candidate("a", "Lee", "Ann", "1980-01-01"),
        candidate("b", "Ann", "Lee", "1980-01-01"),
    ]
    assert [r.candidate.id for r in rank_for("Lee, Ann", pool)] == ["b", "a"]


def test_scores_in_unit_interval_and_match_kinds() -> None:
    ranked = rank_for("jon smyth", POOL)
    assert all(0.0 <= r.score <= 1.0 for r in ranked)
    kinds = {r.candidate.id: r.match for r in ranked}
    assert kinds["phonetic"] == "exact"  # "jon smyth" is exactly Jon Smyth
    assert kinds["exact_dob"] == "phonetic"
    assert kinds["nickname"] in ("phonetic", "fuzzy")


def test_unrelated_candidates_are_dropped() -> None:
    assert rank_for("xavier quigley", POOL) == []


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
    assert rank_for("smith jo", pool)[0].candidate.id == "johnathan"


# -- evidence, bands, ties and grades (issue 12) -------------------------------------------


def counts(clinic_size: int, **holders: int) -> dict[str, int]:
    """Term counts as core.term_counts keeps them: name words (n_smith=300) and dates."""
    out = {term_counts.key("c", "#"): clinic_size}
    for name, n in holders.items():
        kind, _, value = name.partition("_")
        term = f"n:{value}" if kind == "n" else f"dob:{value.replace('_', '-')}"
        out[term_counts.key("c", term)] = n
    return out


def test_a_date_that_agrees_beats_a_full_name_with_a_contradicting_date() -> None:
    """The issue's example: a married name, the date typed precisely because it identifies."""
    pool = [
        candidate("ryan", "Isabella", "Ryan", "1994-06-02"),
        candidate("jessup", "Isabella", "Jessup", "1933-12-04"),
        candidate("other", "Mary", "Jessup", "1950-01-01"),
    ]
    ranked = rank_for("isabella ryan 12/4/1933", pool)
    assert [r.candidate.id for r in ranked][:2] == ["jessup", "ryan"]
    assert ranked[0].score > ranked[1].score


def test_one_digit_off_or_swapped_date_with_a_name_word_still_beats_a_contradiction() -> None:
    pool = [
        candidate("namesake", "Isabella", "Ryan", "1994-06-02"),
        candidate("digit", "Isabella", "Jessup", "1933-12-14"),
    ]
    assert rank_for("isabella ryan 12/4/1933", pool)[0].candidate.id == "digit"


def test_exact_name_and_exact_date_stay_first_whatever_the_frequencies() -> None:
    pool = [
        candidate("exact", "John", "Smith", "1985-03-14"),
        candidate("rare", "Xavier", "Smith", "1985-03-14"),
    ]
    many = counts(5000, n_john=400, n_smith=300, dob_1985_03_14=2, n_xavier=1)
    assert rank_for("john smith 3/14/1985", pool, many)[0].candidate.id == "exact"


def test_agreement_on_a_rare_name_is_stronger_evidence_than_on_a_common_one() -> None:
    pool = [
        candidate("common", "John", "Smith", "1985-03-14"),
        candidate("rare", "Ezekiel", "Quartermaine", "1985-03-14"),
    ]
    # the typed family name matches neither exactly; each agrees on one word and the date
    freq = counts(5000, n_john=400, n_smith=300, n_ezekiel=3, n_quartermaine=1)
    ranked = rank_for("john quartermaine 3/14/1985", pool, freq)
    assert ranked[0].candidate.id == "rare"
    assert ranked[0].weight > ranked[1].weight


def test_exact_date_without_any_name_agreement_is_on_the_page_but_low() -> None:
    pool = [
        candidate("born_that_day", "Peyton", "Cupo", "1995-07-10"),
        candidate("namesake", "Imogen", "Clarke", "1970-01-01"),
    ]
    ids = [
        r.candidate.id
        for r in rank_for("clarke, imogen 7/10/1995", pool, counts(2000, dob_1995_07_10=1))
    ]
    assert ids == ["namesake", "born_that_day"]


def test_namesakes_active_first_then_most_recently_updated() -> None:
    pool = [
        candidate("a_old", "Ann", "Lee", "1980-01-01", updated_at=dt.datetime(2020, 1, 1)),
        candidate("b_inactive", "Ann", "Lee", "1980-01-01", active=False),
        candidate("c_new", "Ann", "Lee", "1980-01-01", updated_at=dt.datetime(2024, 5, 1)),
    ]
    plan = build_plan(SearchInput(q="ann lee", include_inactive=True), ["c"])
    assert [r.candidate.id for r in rank(plan.rank, pool)] == ["c_new", "a_old", "b_inactive"]


def test_grades_follow_the_evidence_and_the_competition() -> None:
    unique = [candidate("only", "Ezekiel", "Quartermaine", "1985-03-14")]
    plan = build_plan(SearchInput(q="ezekiel quartermaine 1985-03-14"), ["c"])
    freq = counts(5000, n_ezekiel=3, n_quartermaine=1, dob_1985_03_14=2)
    assert rank(plan.rank, unique, freq)[0].grade == "certain"
    # two patients with the same common name and no date: neither is certain
    twins = [
        candidate("one", "John", "Smith", "1985-03-14"),
        candidate("two", "John", "Smith", "1990-01-01"),
    ]
    plan = build_plan(SearchInput(q="john smith"), ["c"])
    grades = [r.grade for r in rank(plan.rank, twins, counts(5000, n_john=400, n_smith=300))]
    assert "certain" not in grades
    assert grade_of(0.999) == "certain" and grade_of(0.7) == "probable"
    assert grade_of(0.1) == "possible"
    probabilities = match_probabilities([10.0, 10.0, -3.0])
    assert probabilities[0] == probabilities[1] < 0.5
    assert 0.0 < sum(probabilities) < 1.0  # the rest is "someone else"


def test_identifiers_stay_first_and_certain_when_nothing_contradicts_them() -> None:
    ranked = rank(build_plan(SearchInput(q="MRN 00412"), ["c"]).rank, POOL)
    assert [(r.candidate.id, r.grade) for r in ranked] == [("mrn", "certain")]
    # an MRN typed with another patient's name: still first, but no longer certain
    ranked = rank(build_plan(SearchInput(q="john smith mrn 00412"), ["c"]).rank, POOL)
    assert ranked[0].candidate.id == "mrn"
    assert ranked[0].grade != "certain"


def test_swapped_day_and_month_only_count_in_the_same_year() -> None:
    plan = build_plan(SearchInput(q="ann lee 1985-04-03"), ["c"])
    assert match_date(plan.rank, "1985-03-04") == ("near", 0.6)
    assert match_date(plan.rank, "1960-03-04")[0] == "mismatch"


def test_a_name_alone_is_never_certain() -> None:
    only = [candidate("only", "Ezekiel", "Quartermaine", "1985-03-14")]
    (result,) = rank_for("ezekiel quartermaine", only, counts(5000, n_ezekiel=1, n_quartermaine=1))
    assert result.probability >= 0.99 and result.grade == "probable"


def test_ranking_leaves_nothing_behind_for_the_cycle_collector() -> None:
    """What a search works out is forgotten with it (ranking.NameMemo): name matches
    kept for the life of the process made every search leave objects the collector
    walked again and again, in pauses that stopped the worker (issue 11)."""
    import gc

    givens = ["Ann", "Bea", "Cal", "Dov", "Eli", "Fay", "Gus", "Hal", "Ida", "Jon"]
    families = ["Abe", "Bly", "Cox", "Day", "Eng", "Fox", "Gil", "Hay", "Ivy", "Joy"]

    def pool(parity: int) -> list[Candidate]:
        return [
            candidate(f"{g}{f}", g, f, "1990-01-01")
            for i, g in enumerate(givens)
            for j, f in enumerate(families)
            if (i + j) % 2 == parity
        ]

    rank_for("jon joy", pool(0))  # every word seen once: word-level caches hold them
    fresh = pool(1)  # the same words, in records not ranked before
    gc.collect()
    before = len(gc.get_objects())
    ranked = rank_for("jon ivy", fresh)
    assert ranked and ranked[0].candidate.id == "JonIvy"
    del ranked
    gc.collect()
    assert len(gc.get_objects()) - before < 20


def test_date_keys_are_the_candidates_dates_once_each_and_only_for_a_typed_date() -> None:
    """Only dates are read up front for evidence: names come from the word dictionary."""
    pool = [
        candidate("a", "Ann", "Lee", "1985-03-14"),
        candidate("b", "Bo", "Lee", "1985-03-14"),
        candidate("c", "Cy", "Lee", "1990-01-02"),
    ]
    dated = build_plan(SearchInput(q="lee 3/14/1985"), ["c"]).rank
    assert date_keys(dated, pool) == [
        term_counts.key("c", "dob:1985-03-14"),
        term_counts.key("c", "dob:1990-01-02"),
    ]
    assert date_keys(build_plan(SearchInput(q="ann lee"), ["c"]).rank, pool) == []
