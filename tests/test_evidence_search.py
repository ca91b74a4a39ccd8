"""Evidence-weighted search end to end on PostgreSQL: retrieval, term counts, order, grade."""

from __future__ import annotations

import dataclasses
import gc

import psycopg
import psycopg.sql
import pytest

from core.settings import Settings
from engines import pg_search
from engines.base import Candidate
from engines.pg_search import CandidateSearch, find_candidates, words_of
from engines.word_dictionary import WordDictionary
from indexer import reindex as rx
from search_api.plan import SearchInput
from search_api.service import plan_for, search_ranked
from tests.factories import insert_patient


@pytest.fixture
def clinic(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "ryan", given="Isabella", family="Ryan", birth_date="1994-06-02")
        insert_patient(conn, "jessup", given="Isabella", family="Jessup", birth_date="1933-12-04")
        insert_patient(conn, "cupo", given="Peyton", family="Cupo", birth_date="1995-07-10")
        insert_patient(conn, "clarke", given="Imogen", family="Clarke", birth_date="1970-01-01")
        for i in range(30):  # a common name, so agreeing on it tells little
            insert_patient(
                conn,
                f"smith{i}",
                given="John",
                family="Smith",
                birth_date=f"19{50 + i}-{i % 12 + 1:02d}-{i % 27 + 1:02d}",
            )
        insert_patient(
            conn, "xavier", given="Xavier", family="Quartermaine", birth_date="1960-05-05"
        )
        insert_patient(conn, "other-clinic", clinic_id="clinic-b", given="Peyton", family="Cupo")
    rx.reindex(db_url, Settings(), progress=False)
    return db_url


def _dictionary(url: str) -> WordDictionary:
    """The API's word dictionary of this database (engines.pg_search.words_of)."""

    def load() -> list[tuple[str, str, int]]:
        with psycopg.connect(url) as conn:
            return words_of(conn)

    return WordDictionary(load).load_now()


def ranked(url: str, q: str) -> list[tuple[str, str]]:
    words = _dictionary(url)
    with psycopg.connect(url) as conn:
        found = search_ranked(
            conn, q, ["clinic-a"], settings=Settings(database_url=url), words=words
        )
    return [(r.candidate.id, r.grade) for r in found]


def test_the_typed_date_wins_over_a_namesake_with_another_date(clinic: str) -> None:
    assert [i for i, _ in ranked(clinic, "isabella ryan 12/4/1933")][:2] == ["jessup", "ryan"]


def test_a_patient_born_that_day_is_on_the_page_when_no_name_agrees(clinic: str) -> None:
    ids = [i for i, _ in ranked(clinic, "clarke, imogen 7/10/1995")]
    assert ids[0] == "clarke"  # the full name, with another date, first
    assert "cupo" in ids and "other-clinic" not in ids


def test_a_short_page_is_filled_with_one_word_matches(clinic: str) -> None:
    # "tylah" matches nobody: the patients called Quartermaine still come
    assert [i for i, _ in ranked(clinic, "tylah quartermaine")] == ["xavier"]


def test_grades_certain_for_a_rare_exact_match_and_never_for_a_crowd(clinic: str) -> None:
    assert ranked(clinic, "xavier quartermaine 5/5/1960")[0] == ("xavier", "certain")
    grades = {g for _, g in ranked(clinic, "john smith")}
    assert grades == {"possible"}
    assert ranked(clinic, "john smith 6/6/1955")[0] == ("smith5", "certain")


def _passes(url: str, q: str) -> tuple[list[str], list[str]]:
    """The candidates' ids and the passes that ran, in order."""
    settings = Settings(database_url=url)
    plan = plan_for(SearchInput(q=q), ["clinic-a"], settings)
    ran: list[str] = []
    with psycopg.connect(url) as conn, conn.transaction():
        found = find_candidates(
            conn, plan.candidates, observe=lambda kind, s: ran.append(kind), words=_dictionary(url)
        )
    return [c.id for c in found], ran


def test_a_common_name_found_by_its_date_reads_no_namesake_born_another_day(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty John Smiths: with the name common, the date's answer is the page; the
    passes without the date (long posting lists at scale) do not run."""
    with psycopg.connect(clinic) as conn:  # a misspelled namesake born the same day
        insert_patient(conn, "smyth", given="Jon", family="Smyth", birth_date="1955-06-06")
    rx.reindex(clinic, Settings(), progress=False)
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    ids, ran = _passes(clinic, "john smith 06/06/1955")
    assert sorted(ids) == ["smith5", "smyth"] and ran == ["born_that_day"]
    monkeypatch.setattr(pg_search, "COMMON_NAME", 1000)  # uncommon: namesakes fill the page
    ids, ran = _passes(clinic, "john smith 06/06/1955")
    assert {"smith5", "smyth"} < set(ids) and len(ids) > 10
    assert ran[0] == "born_that_day" and "exact" in ran


def test_four_digits_with_a_name_read_as_a_year_of_birth_or_a_phone_ending(clinic: str) -> None:
    """ "john smith 1955": the John Smith born in 1955 first, his namesakes after him. Read
    as a phone ending only, the number hid every John Smith behind John Rios, whose phone
    ends in 1940: one typed word and the number. A number no John Smith agrees with still
    leaves them on the page, above him."""
    with psycopg.connect(clinic) as conn:
        insert_patient(conn, "rios", given="John", family="Rios", phones=["555-010-1940"])
    rx.reindex(clinic, Settings(), progress=False)
    smiths = {f"smith{i}" for i in range(30)}
    ids = [i for i, _ in ranked(clinic, "john smith 1955")]
    assert ids[0] == "smith5" and len(ids) >= 10 and set(ids) <= smiths
    ids = [i for i, _ in ranked(clinic, "john smith 1940")]  # nobody born in 1940
    assert len(ids) >= 10 and set(ids[:10]) <= smiths
    ids = [i for i, _ in ranked(clinic, "rios 1940")]  # the phone ending still agrees
    assert ids == ["rios"]


def test_a_crowd_is_read_through_the_name_keys_and_finds_the_same_patients(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty John Smiths made a crowd (COMMON_NAME 20): one word is read through the
    B-tree of name keys, two words are driven by one word's keys, and both find what the
    GIN overlap finds."""
    gin = {q: _passes(clinic, q) for q in ("smith", "jon smyth")}
    assert "exact_keyed" not in gin["smith"][1] and "slip_driven" not in gin["jon smyth"][1]
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    monkeypatch.setattr(pg_search, "PROBE_COST", 0)  # a probe as cheap as a posting
    ids, ran = _passes(clinic, "smith")
    assert ran == ["exact_keyed"] and len(ids) == 30
    assert set(ids) == set(gin["smith"][0])
    ids, ran = _passes(clinic, "jon smyth")
    assert "slip_driven" in ran and set(ids) == set(gin["jon smyth"][0])  # smyth: one edit
    assert {f"smith{i}" for i in range(30)} <= set(ids)


def test_a_crowd_held_by_nickname_only_is_read_through_its_group_s_name_keys(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody here is called Jack, but thirty Johns answer "jack" by nickname: a crowd the
    name keys hold under "john". Read by key, one word and two words find what the GIN
    overlap finds, and a family name of the group (Jackson) is not taken for a nickname."""
    with psycopg.connect(clinic) as conn:
        insert_patient(conn, "jackson", given="Mary", family="Jackson")
    rx.reindex(clinic, Settings(), progress=False)
    gin = {q: _passes(clinic, q) for q in ("jack", "jack smith")}
    assert "exact_keyed" not in gin["jack"][1]
    assert {f"smith{i}" for i in range(30)} <= set(gin["jack"][0])
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    monkeypatch.setattr(pg_search, "PROBE_COST", 0)
    ids, ran = _passes(clinic, "jack")
    assert ran[0] == "exact_keyed" and "jackson" not in ids[:30]
    assert {f"smith{i}" for i in range(30)} <= set(ids)
    assert set(ids) == set(gin["jack"][0])
    ids, ran = _passes(clinic, "jack smith")  # the group's pairs: john smith
    assert ran[0] == "exact_pair" and set(ids) == set(gin["jack smith"][0])


def test_a_two_word_crowd_is_read_by_its_given_family_pairs(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of the thirty John Smiths, typed in either order or within a slip, is read
    by the name key "john smith" alone; Ann John Smith holds both words but not as that
    pair. A projection built before pairs existed reads such a page through the driven
    pass."""
    with psycopg.connect(clinic) as conn:  # holds both words, but not as given-family
        insert_patient(conn, "mid", given="Ann", middle="John", family="Smith")
    rx.reindex(clinic, Settings(), progress=False)
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    monkeypatch.setattr(pg_search, "PROBE_COST", 0)
    smiths = {f"smith{i}" for i in range(30)}
    for q, level in (("john smith", "exact"), ("smith john", "exact"), ("jonh smiht", "slip")):
        ids, ran = _page_passes(clinic, q, 10)
        assert ran == [*([] if level == "exact" else ["exact"]), f"{level}_pair"]
        assert len(ids) == 10 and set(ids) <= smiths
    with psycopg.connect(clinic) as conn:  # as a projection built before pairs
        conn.execute("delete from patient_search.name_keys where strpos(term, ' ') > 0")
    ids, ran = _page_passes(clinic, "john smith", 10)  # no pair completes "smith" either
    assert ran == ["exact_pair", "completed_pair", "exact_driven"] and len(ids) == 10
    assert set(ids) <= smiths | {"mid"}


def test_a_two_word_crowd_of_too_many_pairs_is_driven_instead(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pairs are counted before they are spelled. "john smith" makes eight: each word
    is read through two keys (itself and the words run together, "johnsmith"), paired in
    either order. Up to MAX_PAIRS they are read; past it, the four ranges of pairs
    completing a typed word are (one per key), and past those the crowd is driven."""
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    monkeypatch.setattr(pg_search, "PROBE_COST", 0)
    smiths = {f"smith{i}" for i in range(30)}
    for cap, passes in ((8, ["exact_pair"]), (7, ["completed_pair"]), (3, ["exact_driven"])):
        monkeypatch.setattr(pg_search, "MAX_PAIRS", cap)
        ids, ran = _page_passes(clinic, "john smith", 10)
        assert ran == passes, cap
        assert len(ids) == 10 and set(ids) <= smiths


def test_a_crowd_typed_as_you_type_is_read_by_pair_ranges(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "john s", "j smith", "smi jo": two words, one still being typed, of a crowd. The
    completed level reads the given-family pairs whose family word starts with one typed
    word (either order), not the posting lists of every completion: a page of Smiths. Ann
    John Smith holds both words but not as that pair; below the crowd size the GIN
    overlap reads the level and finds her too."""
    with psycopg.connect(clinic) as conn:
        insert_patient(conn, "mid", given="Ann", middle="John", family="Smith")
        insert_patient(conn, "jsmithers", given="Jane", family="Smithers")  # "j smith" too
    rx.reindex(clinic, Settings(), progress=False)
    smiths = {f"smith{i}" for i in range(30)}
    gin = {q: _page_passes(clinic, q, 50) for q in ("john s", "j smith", "smi jo")}
    assert "completed_pair" not in gin["john s"][1] and "mid" in gin["john s"][0]
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    for q in ("john s", "j smith", "smi jo"):
        ids, ran = _page_passes(clinic, q, 10)
        assert ran[0] == "exact" and set(ran[1:]) == {"completed_pair"}, q
        assert len(ids) >= 10 and set(ids) <= smiths | {"jsmithers"} and set(ids) <= set(gin[q][0])


def test_a_page_of_completed_pairs_holds_several_given_names(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "j smith": the thirty John Smiths, the commonest J, come first, but a few rows of
    each other J name are read with them (James, Jack), not a page of one name; a short
    page is then read deeper through the same ranges."""
    with psycopg.connect(clinic) as conn:
        for i in range(12):
            insert_patient(conn, f"james{i}", given="James", family="Smith")
            insert_patient(conn, f"jack{i}", given="Jack", family="Smithson")
    rx.reindex(clinic, Settings(), progress=False)
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    ids, ran = _page_passes(clinic, "j smith", 20)
    assert ran == ["exact", "completed_pair", "completed_pair"]
    given = {i.rstrip("0123456789") for i in ids}
    assert {"smith", "james", "jack"} <= given and len(ids) >= 20


def test_a_crowd_typed_as_you_type_reads_the_pair_ranges_before_driving_the_crowd(
    clinic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "jennifer jon" while typing Jones: both words are crowds as typed (jon by its
    nickname group: the thirty Johns), but no Jennifer is a Jon. The pairs completing
    "jon" are read at the exact level, before probing the Jennifers one by one for a Jon."""
    with psycopg.connect(clinic) as conn:
        for i in range(25):
            insert_patient(conn, f"jones{i}", given="Jennifer", family="Jones")
    rx.reindex(clinic, Settings(), progress=False)
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    monkeypatch.setattr(pg_search, "PROBE_COST", 0)
    ids, ran = _page_passes(clinic, "jennifer jon", 10)
    assert ran == ["exact_pair", "completed_pair"]
    assert len(ids) == 10 and {i[:5] for i in ids} == {"jones"}


def _page_passes(url: str, q: str, page: int) -> tuple[list[str], list[str]]:
    """As _passes, for a candidate window of `page` rows."""
    plan = plan_for(SearchInput(q=q), ["clinic-a"], Settings(database_url=url))
    query = dataclasses.replace(plan.candidates, limit=page, enough=page)
    ran: list[str] = []
    with psycopg.connect(url) as conn, conn.transaction():
        found = find_candidates(
            conn, query, observe=lambda kind, s: ran.append(kind), words=_dictionary(url)
        )
    return [c.id for c in found], ran


def test_the_any_word_pass_reads_no_crowd(clinic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody is called John Quartermaine: the last resort reads patients holding any
    one of the words, but not an arbitrary page of the thirty Johns once they count
    as a crowd; Xavier Quartermaine, a married name's kind of match, is still found."""
    ids, ran = _passes(clinic, "john quartermaine")
    assert "any_name" in ran and "xavier" in ids and "smith0" in ids
    monkeypatch.setattr(pg_search, "COMMON_NAME", 20)
    ids, ran = _passes(clinic, "john quartermaine")
    assert "any_name" in ran and ids == ["xavier"]
    ids, ran = _passes(clinic, "isabella john")
    assert "any_name" in ran and {"ryan", "jessup"} == set(ids)
    monkeypatch.setattr(pg_search, "COMMON_NAME", 2)  # every word a crowd: no such pass
    ids, ran = _passes(clinic, "isabella john")
    assert "any_name" not in ran and ran[-1] == "trigram"  # nothing found: the last resort


def test_one_edit_away_is_read_before_the_other_typos(clinic: str) -> None:
    """A slip (one edit, as telling as a sound-alike) has a level of its own: when its
    matches fill the page, the wider typo expansions are not read; a word two edits
    away is still found at the typo level."""
    ids, ran = _passes(clinic, "jhon smiht")
    assert ran[:2] == ["exact", "slip"] and "typo" not in ran
    assert {f"smith{i}" for i in range(30)} <= set(ids)
    ids, ran = _passes(clinic, "peyton cpuoo")  # no word one edit away: no slip pass
    assert ran[:2] == ["exact", "typo"] and ids[0] == "cupo"


def test_a_level_that_adds_nothing_is_not_read_again(clinic: str) -> None:
    """A misspelled last word has no completions: its completed level is its exact level,
    not read twice (nor its "any one word" pass). A word that does complete still has
    its completed level read after the exact one."""
    _, ran = _passes(clinic, "isabella rayn")
    assert "completed" not in ran and ran.count("exact") == 1
    _, ran = _passes(clinic, "isabella ry")
    assert ran[:2] == ["exact", "completed"]


def test_a_name_found_within_a_slip_reads_no_wider_typo_or_sound(clinic: str) -> None:
    """Isabella Ryan typed with a slip is found at the slip level: wider typos and
    sound-alikes of the whole name are not read to fill the page; either word alone still
    is (Isabella Jessup), for a name part entered all differently. With no one found by
    the slip level, the typo level runs."""
    ids, ran = _passes(clinic, "isabella rayn")
    assert ids[0] == "ryan" and "jessup" in ids
    assert ran[:2] == ["exact", "slip"] and set(ran[2:]) == {"any_name"}
    ids, ran = _passes(clinic, "isabella jesupp")  # two edits: found at the typo level
    assert ids[0] == "jessup" and "typo" in ran and "close" not in ran


def test_a_name_and_date_found_word_for_word_reads_only_the_namesakes(clinic: str) -> None:
    """Isabella Ryan, born that day, typed as stored: the page is her and her namesakes
    born on other days (possible duplicates), not looser spellings of the name. Typed
    with a slip, the looser levels still run: the one found may not be the one meant."""
    ids, ran = _passes(clinic, "isabella ryan 06/02/1994")
    assert ids[0] == "ryan" and ran == ["born_that_day", "exact"]
    ids, ran = _passes(clinic, "isabela ryan 06/02/1994")
    assert ids[0] == "ryan" and ran[0] == "born_that_day" and "slip" in ran


def test_a_text_array_literal_holds_every_value_as_given(db_url: str) -> None:
    """Terms carry the clinic separator and any character a clinic id or name may hold."""
    values = ["plain", 'c-1\x1fn:o"brien', "back\\slash", "a,b", "{braces}", " spaced ", "NULL", ""]
    with psycopg.connect(db_url) as conn:
        stmt = psycopg.sql.SQL("select {} = %s::text[], cardinality({})").format(
            pg_search.text_array(values), pg_search.text_array(values)
        )
        assert conn.execute(stmt, (values,)).fetchone() == (True, len(values))
        empty = psycopg.sql.SQL("select cardinality({})").format(pg_search.text_array([]))
        assert conn.execute(empty).fetchone() == (0,)


def test_a_search_is_freed_without_the_cycle_collector(clinic: str) -> None:
    """A search and its candidates are freed by reference counting the moment it
    returns. A search holding itself through a suspended generator was a cycle: every
    candidate waited for the cycle collector, which under load then ran every few
    searches and took a fifth of the API's CPU (issue 11)."""
    words = _dictionary(clinic)
    settings = Settings(database_url=clinic)
    queries = ("is", "isabela rian", "john smith 3/4/1952", "quartermane", "12/4/1933")

    def alive() -> list[object]:
        return [o for o in gc.get_objects() if isinstance(o, CandidateSearch | Candidate)]

    with psycopg.connect(clinic) as conn:
        gc.collect()
        before = alive()  # other tests' objects, held so that no new one takes their id
        known = {id(o) for o in before}
        gc.disable()
        try:
            for q in queries:
                assert search_ranked(conn, q, ["clinic-a"], settings=settings, words=words)
            left = [type(o).__name__ for o in alive() if id(o) not in known]
        finally:
            gc.enable()
    assert left == []
