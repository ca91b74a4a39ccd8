"""The in-process word dictionary: per clinic, by patient frequency, refreshed; and the API
reaches a clinic's rare name however many common ones another clinic holds (issue 9, item 6)."""

from __future__ import annotations

import time

import psycopg
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.settings import Settings
from engines.word_dictionary import WordDictionary
from indexer.reindex import reindex
from search_api.app import create_app
from search_api.plan import name_token
from tests.factories import insert_patient

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
    deadline = time.monotonic() + 5
    while not words.ready:
        assert time.monotonic() < deadline, "dictionary never loaded"
        time.sleep(0.01)


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
