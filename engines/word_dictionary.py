"""The name-word dictionary held in each API process, for prefix and typo expansion.

Expanding a typed word against the dictionary in SQL cost 2-5 ms of database
time per name search at 1M patients, the largest share of a search's database
work. The dictionary is small (one row per distinct name word), changes only
when a new word is indexed, and a word that is a few seconds late only delays
prefix or typo matches of that new word, never an exact match. So each process
loads a copy at start-up (`load`) and refreshes it in the background every
`max_age_s`. This is the only expansion path; until a first load succeeds (the
database was down at start-up), names match exactly, by nickname and by sound.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from core import terms
from engines.base import NameToken
from normalizers.names import typo_budget

log = logging.getLogger(__name__)

Loader = Callable[[], list[tuple[str, int]]]
Expansions = tuple[dict[str, set[str]], dict[str, set[str]]]

PREFIX_LIMIT = 25
TYPO_LIMIT = 8


class _Snapshot:
    def __init__(self, rows: list[tuple[str, int]]) -> None:
        self.words = sorted(word for word, _ in rows)
        self.frequency = dict(rows)
        self.by_initial_length: dict[tuple[str, int], list[str]] = {}
        for word in self.words:
            self.by_initial_length.setdefault((word[:1], len(word)), []).append(word)

    def completions(self, token: str) -> list[str]:
        start = bisect.bisect_left(self.words, token)
        end = bisect.bisect_left(self.words, token + chr(0x10FFFF))
        found = (w for w in self.words[start:end] if w != token)
        return heapq.nsmallest(PREFIX_LIMIT, found, key=lambda w: (-self.frequency[w], w))

    def typos(self, token: str) -> list[str]:
        """Words within the typo budget that share the first letter and about the length.

        A slip in the first letter is not looked for (scanning every word of that
        length costs several ms); phonetic codes and whole-name similarity catch
        most of those, and two words spelling one ("mc donald") are joined by the plan.
        """
        budget = typo_budget(token)
        pool = [
            w
            for n in range(len(token) - budget, len(token) + budget + 1)
            for w in self.by_initial_length.get((token[:1], n), ())
            if w != token
        ]
        matches = process.extract(
            token,
            pool,
            scorer=DamerauLevenshtein.distance,
            score_cutoff=budget,
            limit=None,
        )
        ranked = sorted(matches, key=lambda m: (m[1], -self.frequency[m[0]], m[0]))
        return [word for word, _, _ in ranked[:TYPO_LIMIT]]


class WordDictionary:
    def __init__(self, load: Loader, *, max_age_s: float = 30.0) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._snapshot = _Snapshot([])
        self._loaded_at = 0.0
        self._refreshing = threading.Lock()

    def load(self) -> None:
        """Load now, on the caller's thread (start-up). A failure is logged and the empty
        copy kept; the next expansion retries in the background."""
        with self._refreshing:
            self._reload_logged()

    def expand(self, tokens: Sequence[NameToken]) -> Expansions:
        """Per typed word: (dictionary completions, typo corrections) as name terms."""
        snapshot = self._current()
        prefixes: dict[str, set[str]] = {t.text: set() for t in tokens}
        typos: dict[str, set[str]] = {t.text: set() for t in tokens}
        for t in tokens:
            if t.prefix and t.text:
                prefixes[t.text].update(terms.name(w) for w in snapshot.completions(t.text))
            if len(t.text) >= 3:
                typos[t.text].update(terms.name(w) for w in snapshot.typos(t.text))
        return prefixes, typos

    def _current(self) -> _Snapshot:
        if time.monotonic() - self._loaded_at > self._max_age_s:
            self._refresh_in_background()
        return self._snapshot

    def _refresh_in_background(self) -> None:
        """Never on the caller's thread: the caller may be holding a pooled connection."""
        if self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._reload_and_release, daemon=True).start()

    def _reload_and_release(self) -> None:
        try:
            self._reload_logged()
        finally:
            self._refreshing.release()

    def _reload_logged(self) -> None:
        try:
            self._reload()
        except Exception as exc:  # keep serving the previous copy
            log.warning("word dictionary refresh failed", extra={"error": type(exc).__name__})

    def _reload(self) -> None:
        started = time.monotonic()
        self._snapshot = _Snapshot(self._load())
        self._loaded_at = time.monotonic()
        log.debug(
            "word dictionary loaded",
            extra={"words": len(self._snapshot.words), "ms": (time.monotonic() - started) * 1e3},
        )
