"""The in-process word dictionary: loaded at start-up, the one prefix and typo expansion path."""

from __future__ import annotations

import time

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


def test_completions_by_frequency_and_typos_within_budget() -> None:
    words = WordDictionary(lambda: list(WORDS))
    words.load()
    prefixes, typos = words.expand([name_token("smi"), name_token("sahh"), name_token("loez")])
    assert prefixes["smi"] == {"n:smith", "n:smithers"}
    assert typos["sahh"] == {"n:shah"}  # a swap is one slip
    assert typos["loez"] == {"n:lopez"}  # "lee" is two edits away: over the budget
    _, typos = words.expand([name_token("sancez")])
    assert typos["sancez"] == {"n:sanchez", "n:sanches"}


def test_a_failed_start_up_load_expands_nothing_then_recovers() -> None:
    """The database down at start-up: no expansions (never an error), then a background retry."""
    available = False

    def load() -> list[tuple[str, int]]:
        if not available:
            raise OSError("database unavailable")
        return list(WORDS)

    words = WordDictionary(load)
    words.load()
    assert words.expand([name_token("smi")]) == ({"smi": set()}, {"smi": set()})
    available = True
    deadline = time.monotonic() + 5
    while "n:smith" not in words.expand([name_token("smi")])[0]["smi"]:
        assert time.monotonic() < deadline, "never reloaded"
        time.sleep(0.01)


def test_refreshes_in_the_background() -> None:
    rows = [("smith", 1)]
    words = WordDictionary(lambda: list(rows), max_age_s=0.05)
    words.load()
    rows.append(("smithson", 2))
    time.sleep(0.1)
    words.expand([name_token("smi")])  # notices the age, reloads off the caller's thread
    deadline = time.monotonic() + 5
    while "n:smithson" not in words.expand([name_token("smi")])[0]["smi"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
