"""The in-process word dictionary: the same expansions the SQL path gives, refreshed."""

from __future__ import annotations

import time

import psycopg

from engines.base import NameToken
from engines.pg_search import expand_tokens
from engines.word_dictionary import WordDictionary
from search_api.plan import name_token

WORDS = [
    ("smith", 50),
    ("smithers", 5),
    ("smyth", 3),
    ("shah", 4),
    ("lopez", 9),
    ("lee", 20),
    ("louis", 2),
    ("luis", 7),
    ("sanchez", 8),
    ("sanches", 1),
    ("garcia", 30),
    ("garza", 6),
]


def wait_ready(words: WordDictionary) -> None:
    deadline = time.monotonic() + 5
    while not words.ready:
        assert time.monotonic() < deadline, "dictionary never loaded"
        time.sleep(0.01)


def test_completions_by_frequency_and_typos_within_budget() -> None:
    words = WordDictionary(lambda: list(WORDS))
    wait_ready(words)
    prefixes, typos = words.expand([name_token("smi"), name_token("sahh"), name_token("loez")])
    assert prefixes["smi"] == {"n:smith", "n:smithers"}
    assert typos["sahh"] == {"n:shah"}  # a swap is one slip
    assert typos["loez"] == {"n:lopez"}  # "lee" is two edits away: over the budget
    _, typos = words.expand([name_token("sancez")])
    assert typos["sancez"] == {"n:sanchez", "n:sanches"}


def test_agrees_with_the_sql_expansion(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into patient_search.name_dictionary (term, frequency) values (%s, %s)",
                WORDS,
            )
        tokens: list[NameToken] = [name_token(t) for t in ("smi", "sahh", "loez", "garcai", "lu")]
        with conn.transaction():
            sql_prefixes, sql_typos = expand_tokens(conn, tokens)
    words = WordDictionary(lambda: list(WORDS))
    wait_ready(words)
    prefixes, typos = words.expand(tokens)
    assert prefixes == sql_prefixes
    assert typos == sql_typos


def test_refreshes_in_the_background() -> None:
    rows = [("smith", 1)]
    words = WordDictionary(lambda: list(rows), max_age_s=0.05)
    wait_ready(words)
    rows.append(("smithson", 2))
    time.sleep(0.1)
    words.expand([name_token("smi")])  # notices the age, reloads off the caller's thread
    deadline = time.monotonic() + 5
    while "n:smithson" not in words.expand([name_token("smi")])[0]["smi"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
