"""The in-process word dictionary: per clinic, by patient frequency, refreshed; and the API
reaches a clinic's rare name however many common ones another clinic holds (issue 9, item 6)."""

from __future__ import annotations

import time

import psycopg
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.settings import Settings
from engines.base import NameToken
from engines.word_dictionary import Widened, WordDictionary
from indexer.reindex import reindex
from search_api.app import create_app
from search_api.plan import name_token
from tests.factories import insert_patient, wait_until

WORDS = [
    ("a", "smith", 50),
    ("a", "smithers", 5),
    ("a", "smyth", 3),
    ("a", "shah", 4),
    ("a", "lopez", 9),
    ("a", "lee", 20),
    ("a", "sanchez", 8),
    ("a", "sanches", 1),
    ("b", "smitty", 90),
    ("b", "lopes", 30),
]


def wait_ready(words: WordDictionary) -> None:
    wait_until(lambda: words.ready, "dictionary never loaded")


def wait_complete(words: WordDictionary) -> None:
    wait_until(lambda: words.complete, "dictionary never complete")


def indexed_words(db_url: str, patients: list[dict[str, str]]) -> WordDictionary:
    """These patients (insert_patient's fields) indexed, and a dictionary loaded from the
    projection; not following the listener, so not complete yet."""
    from engines.pg_search import words_of

    with psycopg.connect(db_url) as conn:
        for patient in patients:
            insert_patient(conn, **patient)
        conn.commit()
    reindex(db_url, Settings(), progress=False)

    def load() -> list[tuple[str, str, int]]:
        with psycopg.connect(db_url) as conn:
            return words_of(conn)

    return WordDictionary(load).load_now()


def test_completions_and_typos_come_from_the_clinics_asked_only() -> None:
    words = WordDictionary(lambda: list(WORDS)).load_now()
    tokens = [name_token("smi"), name_token("sahh"), name_token("loez")]
    prefixes, typos = words.expand(tokens, ["a"])
    assert prefixes["smi"] == {("a", "smith"), ("a", "smithers")}
    assert typos["sahh"] == {("a", "shah")}  # a swap is one slip
    assert typos["loez"] == {("a", "lopez")}  # clinic b's "lopes" is not asked
    _, typos = words.expand([name_token("sancez")], ["a"])
    assert typos["sancez"] == {("a", "sanchez"), ("a", "sanches")}
    prefixes, _ = words.expand([name_token("smi")], ["a", "b"])
    assert ("b", "smitty") in prefixes["smi"] and ("a", "smith") in prefixes["smi"]


def test_near_spellings_are_asked_for_only_past_the_completions() -> None:
    """The ladder asks the dictionary for completions after the exact level and for near
    spellings only after the completions: most as-you-type searches stop before."""
    from engines.pg_search import _name_levels, scope_all

    words = WordDictionary(lambda: list(WORDS)).load_now()
    asked: list[bool] = []

    def widen(tokens: list[NameToken], typos: bool) -> Widened:
        asked.append(typos)
        return words.widen(tokens, ["a"], typos=typos)

    tokens = [name_token("smi")]
    ladder = _name_levels(widen, tokens, lambda terms: scope_all(["a"], terms))
    assert next(ladder)[0] == "exact" and asked == []
    level, completed = next(ladder)
    assert level == "completed" and asked == [False]
    assert any(t.endswith("n:smithers") for t in completed[0])
    next(ladder)  # a looser level: now the near spellings
    assert asked == [False, True]
    assert words.widen(tokens, ["a"], typos=True) == words.expand(tokens, ["a"])[1]


def test_refreshes_in_the_background() -> None:
    rows = [("a", "smith", 1)]
    words = WordDictionary(lambda: list(rows), max_age_s=0.05)
    wait_ready(words)
    rows.append(("a", "smithson", 2))
    time.sleep(0.1)
    words.expand([name_token("smi")], ["a"])  # notices the age, reloads off the caller's thread
    deadline = time.monotonic() + 5
    while ("a", "smithson") not in words.expand([name_token("smi")], ["a"])[0]["smi"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_rare_name_is_reached_whatever_another_clinic_holds(db_url: str) -> None:
    """'jo' in a clinic whose only jo- name is Jozefina, while another clinic has 30
    common jo- names: a global top 25 left her out of reach."""
    common = [f"Jo{chr(97 + i)}{chr(97 + j)}" for i in range(6) for j in range(5)]
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "a1", clinic_id="clinic-a", given="Jozefina", family="Nowak")
        n = 0
        for name in common:
            for _ in range(3):
                n += 1
                insert_patient(conn, f"b{n}", clinic_id="clinic-b", given=name, family="Lee")
        key = create_key(conn, ["clinic-a"])
        conn.commit()
    reindex(db_url, Settings(), progress=False)
    with TestClient(create_app(Settings(pool_min_size=1, pool_max_size=2), db_url)) as client:
        deadline = time.monotonic() + 5
        while True:  # the dictionary loads in the background at the first search
            got = client.post(
                "/v1/patients/search", json={"q": "jo"}, headers={"X-API-Key": key}
            ).json()
            if got["results"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert [r["id"] for r in got["results"]] == ["a1"]


def test_the_expansions_kept_for_typed_words_leave_the_collector_nothing_to_walk() -> None:
    """Kept until the next refresh, they are tuples of words: after one collection the
    cycle collector no longer tracks them (lists it would walk at every collection
    until the snapshot goes; issue 11, sixteenth pass)."""
    import gc

    words = WordDictionary(lambda: WORDS).load_now()
    words.expand([name_token("smi", prefix=True), name_token("lopex")], ["a", "b"])
    snapshot = words._current()["a"]
    kept = list(snapshot._seen.values())
    assert kept and all(isinstance(found, tuple) for found in kept)
    assert any("smithers" in found for found in kept)
    gc.collect()
    assert not any(gc.is_tracked(found) for found in kept)


def test_a_refresh_rebuilds_only_the_clinics_whose_words_changed() -> None:
    """Refreshed every 30 s, the dictionary kept rebuilding every clinic, and the first
    search after each refresh built the nickname index again (13-45 ms of a request's
    time at 8,000 words). A clinic whose words and counts are unchanged keeps its
    snapshot and what its searches worked out; a changed clinic gets the new words, its
    nickname index already built."""
    rows = [*WORDS, ("b", "kate", 4)]
    words = WordDictionary(lambda: list(rows)).load_now()
    words.expand([name_token("smi", prefix=True)], ["a", "b"])
    before = dict(words._current())
    rows.append(("b", "katherine", 2))  # a new word in clinic b only
    words.load_now()
    after = words._current()
    assert after["a"] is before["a"] and after["a"]._seen  # unchanged: kept, with its expansions
    assert after["b"] is not before["b"]
    assert words.nicknamed("b", "katherine") == ["kate", "katherine"]
    rows[-1] = ("b", "katherine", 3)  # a count changed: rebuilt as well
    words.load_now()
    assert words._current()["b"] is not after["b"] and words.patients("b", "katherine") == 3


def test_complete_only_while_following_and_reloaded_since_the_last_new_word() -> None:
    """Complete is what lets a search skip the exact pass of a word counted for no one:
    it must be false whenever a word may be missing (not following the announcements,
    or one announced and not reloaded yet)."""
    rows = [("a", "smith", 1)]
    words = WordDictionary(lambda: list(rows)).load_now()
    assert not words.complete  # loaded, but no announcement would be heard
    words.follow(True)  # reconnected: reloads (announcements may have been missed)
    wait_complete(words)
    rows.append(("a", "zebulon", 1))
    words.heard("words", "a")
    assert not words.complete or words.patients("a", "zebulon") == 1
    wait_complete(words)
    assert words.patients("a", "zebulon") == 1  # reloaded on the announcement, not by age
    words.follow(False)
    assert not words.complete


def test_a_complete_dictionary_skips_the_exact_pass_of_a_word_no_one_holds(db_url: str) -> None:
    """A typo is held by no one in 99 % of the census typo searches: with a complete
    dictionary that exact pass is skipped, with the same candidates. A patient who gets
    the word is found by the exact pass again as soon as the word is announced, ahead
    of the crowd the looser level reads an arbitrary page of."""
    from engines.pg_search import find_candidates
    from indexer.sync import sync_patients
    from search_api.plan import SearchInput, build_plan

    johns = [{"id": f"a{n}", "given": "John", "family": "Smith"} for n in range(80)]
    jonh = {"id": "b1", "clinic_id": "clinic-b", "given": "Jonh", "family": "Smith"}
    words = indexed_words(db_url, [*johns, jonh])

    def search(words: WordDictionary) -> tuple[list[str], list[str]]:
        kinds: list[str] = []
        plan = build_plan(SearchInput(q="jonh smith"), ["clinic-a"])
        with psycopg.connect(db_url, autocommit=True) as conn:
            found = find_candidates(
                conn, plan.candidates, observe=lambda kind, _: kinds.append(kind), words=words
            )
        return [c.id for c in found], kinds

    ids, kinds = search(words)
    assert kinds[0] == "exact" and len(ids) == 50  # clinic-b's Jonh counts for no one here
    words.follow(True)
    wait_complete(words)
    skipped, kinds = search(words)
    assert "exact" not in kinds and skipped == ids
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "a-jonh", given="Jonh", family="Smith")
        sync_patients(conn, ["a-jonh"])
        conn.commit()
    words.heard("patient_search_words", "clinic-a")  # as the listener hears it
    ids, kinds = search(words)
    assert kinds[0] == "exact" and ids[0] == "a-jonh"


def test_the_api_hears_of_a_new_word_at_once(db_url: str) -> None:
    """Through the process's listener: the word is counted within a second or so, not
    at the dictionary's next refresh (30 s)."""
    from indexer.sync import sync_patients

    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "a1", given="John", family="Smith")
        key = create_key(conn, ["clinic-a"])
        conn.commit()
    reindex(db_url, Settings(), progress=False)
    with TestClient(create_app(Settings(pool_min_size=1, pool_max_size=2), db_url)) as client:
        words = client.app.state.search.postgres.words
        wait_complete(words)
        assert "patient_search_word_dictionary_complete 1.0" in client.get("/metrics").text
        with psycopg.connect(db_url) as conn:
            insert_patient(conn, "a2", given="Zebulon", family="Quark")
            sync_patients(conn, ["a2"])
            conn.commit()
        wait_until(lambda: words.patients("clinic-a", "zebulon") == 1, "the new word unheard")
        wait_complete(words)
        got = client.post(
            "/v1/patients/search", json={"q": "zebulon quark"}, headers={"X-API-Key": key}
        ).json()
        assert [r["id"] for r in got["results"]] == ["a2"]


def test_a_lost_listener_makes_the_dictionary_incomplete_until_it_is_back(db_url: str) -> None:
    """Announcements sent while the listener is away are lost: meanwhile every exact pass
    runs, and the dictionary reloads once the listener is back."""
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "a1", given="John", family="Smith")
        conn.commit()
    reindex(db_url, Settings(), progress=False)
    with TestClient(create_app(Settings(pool_min_size=1, pool_max_size=2), db_url)) as client:
        words = client.app.state.search.postgres.words
        wait_complete(words)
        with psycopg.connect(db_url, autocommit=True) as conn:
            dropped = conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where application_name = 'patient-search-listener' "
                "and datname = current_database()"
            ).fetchall()
        assert dropped == [(True,)]  # this app's, not another test's
        wait_until(lambda: not words.complete, "the lost listener went unnoticed")
        wait_complete(words)  # reconnected within a second or so, and reloaded


def test_a_complete_dictionary_leaves_out_the_typed_terms_no_one_holds(db_url: str) -> None:
    """The GIN overlap is spelled without the typed words' terms that no patient of their
    clinic holds (each cost the index a descent for nothing), and finds the same patients:
    a word one clinic holds stays for that clinic, and a nickname key stays where one of
    its words is held."""
    from engines.pg_projection import scope_terms
    from engines.pg_search import CandidateSearch, find_candidates
    from search_api.plan import SearchInput, build_plan

    roberts = [{"id": f"a{n}", "given": "Robert", "family": "Daniels"} for n in range(3)]
    bob = {"id": "b1", "clinic_id": "clinic-b", "given": "Bob", "family": "Daniels"}
    words = indexed_words(db_url, [*roberts, bob])
    plan = build_plan(SearchInput(q="bob daniels"), ["clinic-a", "clinic-b"])

    def overlap(words: WordDictionary) -> tuple[str, list[str]]:
        with psycopg.connect(db_url, autocommit=True) as conn:
            search = CandidateSearch(conn, plan.candidates, observe=lambda *_: None, words=words)
            bob_terms = plan.candidates.names[0].alternatives
            typed = [t for c in search.clinics for t in scope_terms(c, bob_terms)]
            spelled = search.holds(typed).as_string(conn)
            found = find_candidates(conn, plan.candidates, observe=lambda *_: None, words=words)
        return spelled, sorted(c.id for c in found)

    spelled, ids = overlap(words)  # not complete: every term is spelled
    assert "clinic-a\x1fn:bob" in spelled and "clinic-a\x1fn:bobdaniels" in spelled
    words.follow(True)
    wait_complete(words)
    pruned, same = overlap(words)
    assert same == ids == ["a0", "a1", "a2", "b1"]
    assert "clinic-a\x1fn:bob" not in pruned and "clinic-b\x1fn:bob" in pruned
    assert "n:bobdaniels" not in pruned  # the two words joined: nobody's name
    # A Robert's document holds k:robert (his name's group), not k:bob; Bob's holds the
    # keys of his group, Robert's among them.
    assert "clinic-a\x1fk:robert" in pruned and "clinic-a\x1fk:bob" not in pruned
    assert all(f"clinic-b\x1fk:{n}" in pruned for n in ("bert", "bob", "bobby", "robert"))


def test_a_complete_dictionary_leaves_out_the_key_ranges_of_nobodys_words(db_url: str) -> None:
    """A name-key range led by a word no patient of its clinic holds reads nothing: the
    keyed passes leave it out (a B-tree descent each), once the dictionary is complete."""
    from engines.pg_search import LAST_CHARACTER, CandidateSearch, _someone_under
    from search_api.plan import SearchInput, build_plan

    johns = [{"id": f"a{n}", "given": "John", "family": "Smith"} for n in range(3)]
    mary = {"id": "b1", "clinic_id": "clinic-b", "given": "Mary", "family": "Jones"}
    words = indexed_words(db_url, [*johns, mary])
    plan = build_plan(SearchInput(q="john smith"), ["clinic-a", "clinic-b"])
    with psycopg.connect(db_url, autocommit=True) as conn:
        unsure = CandidateSearch(conn, plan.candidates, observe=lambda *_: None, words=words)
        assert unsure.certain() is None  # not following: a word may have come since
        words.follow(True)
        wait_complete(words)
        search = CandidateSearch(conn, plan.candidates, observe=lambda *_: None, words=words)
        certain = search.certain()
        assert certain is words  # complete: its counts of no one are certain
        assert _someone_under(certain, ("clinic-a", "john", "john"))
        assert not _someone_under(certain, ("clinic-b", "john", "john"))  # no John there
        assert _someone_under(certain, ("clinic-a", "john smith", "john smith"))
        assert not _someone_under(certain, ("clinic-a", "john smyth", "john smyth"))
        # A range of pairs: its family word may be typed in part, only the given is known.
        assert _someone_under(certain, ("clinic-a", "john smi", "john smi" + LAST_CHARACTER))
        assert _someone_under(certain, ("clinic-z", "john", "john"))  # a clinic not loaded
