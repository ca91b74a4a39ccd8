"""The name-word dictionary held in each API process, for prefix and typo expansion.

Expanding a typed word against the dictionary in SQL cost 2-5 ms of database
time per name search at 1M patients, the largest share of a search's database
work. The dictionary is small (one row per clinic and distinct name word, table
`name_words`), changes only when a word comes or goes, and a word that is a few
seconds late only delays prefix or typo matches of that word, never an exact
match. So each process keeps a copy and refreshes it in the background every
`max_age_s`.

Words are kept per clinic with their patient counts: a clinic's completions and
corrections come from its own patients only, so another clinic's frequent names
never push this clinic's patient out of reach, and no expansion tells one
clinic which names another clinic holds.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from core import terms
from engines.base import NameToken
from normalizers.names import nickname_group, typo_budget

log = logging.getLogger(__name__)

Loader = Callable[[], list[tuple[str, str, int]]]  # (clinic, word, patients)
# The loader's row for a clinic's number of patients: no name word is empty.
TOTAL_WORD = ""
# Per typed word, the (clinic, dictionary word) pairs it may stand for.
Widened = dict[str, set[tuple[str, str]]]
Expansions = tuple[Widened, Widened]  # (completions, typos)
# The same as name terms (`n:word`), for an engine that filters clinics itself (Meilisearch).
TermExpansions = tuple[dict[str, set[str]], dict[str, set[str]]]

PREFIX_LIMIT = 25
TYPO_LIMIT = 8
# Reloads that follow announcements of new words are at least this far apart.
REANNOUNCED_GAP_S = 1.0


class _Snapshot:
    """One clinic's words, and what searches work out from them."""

    def __init__(self, frequency: dict[str, int]) -> None:
        self.frequency = frequency  # TOTAL_WORD included: patients() answers it
        self.words = sorted(word for word in frequency if word != TOTAL_WORD)
        self.by_initial_length: dict[tuple[str, int], list[str]] = {}
        for word in self.words:
            self.by_initial_length.setdefault((word[:1], len(word)), []).append(word)
        # Typed words repeat (as-you-type, common names): expansions are kept per
        # snapshot, as tuples, which the cycle collector stops tracking (lists it walks
        # at every collection until the snapshot goes).
        self._seen: dict[tuple[str, bool], tuple[str, ...]] = {}
        # Built with the snapshot, on the refreshing thread: built on first use, it cost
        # the search that came first after each refresh 13-45 ms (8,000 words, census).
        index: dict[str, list[str]] = {}
        for word in self.words:
            for name in nickname_group(word):
                index.setdefault(name, []).append(word)
        self._by_nickname = {
            name: heapq.nsmallest(PREFIX_LIMIT, found, key=lambda w: (-self.frequency[w], w))
            for name, found in index.items()
        }

    def nicknamed(self, member: str) -> list[str]:
        """Words whose nickname group holds `member` (the words a document's `k:member`
        term comes from), most frequent first."""
        return self._by_nickname.get(member, [])

    def expansions(self, token: str, *, typos: bool) -> tuple[str, ...]:
        key = (token, typos)
        hit = self._seen.get(key)
        if hit is None:
            if len(self._seen) > 50_000:
                self._seen.clear()
            found = self.typos(token) if typos else self.completions(token)
            hit = self._seen[key] = tuple(found)
        return hit

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
    """Every clinic's words, reloaded every `max_age_s`, and as soon as the writer
    announces a word new to a clinic on one of `channels` (heard through the process's
    listener, core.listener)."""

    def __init__(
        self, load: Loader, *, max_age_s: float = 30.0, channels: Sequence[str] = ()
    ) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self.channels = tuple(channels)
        self._snapshot: dict[str, _Snapshot] | None = None
        self._loaded_at = 0.0
        self._refreshing = threading.Lock()
        # Announcements of new words (and listener reconnections) heard, and how many
        # had been heard when the last load began: equal, no word is missing.
        self._heard = 0
        self._loaded_through = -1
        self._following = False

    def expand(self, tokens: Sequence[NameToken], clinics: Sequence[str]) -> Expansions:
        """Per typed word, its completions and near spellings in each of `clinics`.

        Until the first load has finished, nothing is expanded (exact and phonetic
        matches still work); the load starts at the first call.
        """
        return self.widen(tokens, clinics, typos=False), self.widen(tokens, clinics, typos=True)

    def widen(self, tokens: Sequence[NameToken], clinics: Sequence[str], *, typos: bool) -> Widened:
        """One half of `expand`: the completions, or the near spellings. A search asks
        for the near spellings only when the completions did not find enough, which most
        as-you-type searches do (their typo expansions were a tenth of their engine CPU)."""
        snapshots = self._current()
        found: Widened = {t.text: set() for t in tokens}
        wanted = [t.text for t in tokens if (len(t.text) >= 3 if typos else t.prefix and t.text)]
        for clinic in clinics:
            snapshot = snapshots.get(clinic)
            if snapshot is None:
                continue
            for text in wanted:
                found[text].update((clinic, w) for w in snapshot.expansions(text, typos=typos))
        return found

    def expand_terms(self, tokens: Sequence[NameToken], clinics: Sequence[str]) -> TermExpansions:
        """`expand` as name terms, still drawn from the clinics asked only."""
        prefixes, typos = self.expand(tokens, clinics)
        return (
            {t: {terms.name(w) for _, w in pairs} for t, pairs in prefixes.items()},
            {t: {terms.name(w) for _, w in pairs} for t, pairs in typos.items()},
        )

    def patients(self, clinic: str, word: str) -> int | None:
        """Patients of the clinic holding this name word (0: none), as of the last load;
        None until the clinic's words are loaded. The same count as core.term_counts
        keeps for the word, read without a round trip."""
        snapshot = self._current().get(clinic)
        if snapshot is None:
            return None
        return snapshot.frequency.get(word, 0)

    def held(self, keys: Iterable[tuple[str, str]]) -> int:
        """Patients holding these (clinic, word) keys, summed: `patients` for many keys
        with one look at the snapshot (a search asks it of hundreds of completions)."""
        snapshots = self._current()
        total = 0
        for clinic, word in keys:
            snapshot = snapshots.get(clinic)
            if snapshot is not None:
                total += snapshot.frequency.get(word, 0)
        return total

    def nicknamed(self, clinic: str, member: str) -> list[str]:
        """The clinic's words of the nickname group of `member` (see _Snapshot.nicknamed)."""
        snapshot = self._current().get(clinic)
        return [] if snapshot is None else snapshot.nicknamed(member)

    @property
    def complete(self) -> bool:
        """Every word a patient holds is in the dictionary: the listener is up, and no
        new word was announced since the last load began. A word it counts no patient
        for then has no exact match, and the exact pass for it can be skipped. At most
        a notice late: a patient committed an instant before the search may be missed,
        as one committed an instant after it would be."""
        return self._following and self._loaded_through == self._heard

    def heard(self, channel: str, payload: str) -> None:
        """A word came to a clinic (payload: the clinic): incomplete until reloaded."""
        self._heard += 1
        self._refresh_in_background()

    def follow(self, live: bool) -> None:
        """The listener is up (announcements may have been missed: reload) or lost
        (incomplete until it is up again and has reloaded)."""
        self._following = live
        if live:
            self._heard += 1
            self._refresh_in_background()

    @property
    def ready(self) -> bool:
        """Loaded at least once (starts loading in the background when not)."""
        if self._snapshot is None:
            self._refresh_in_background()
        return self._snapshot is not None

    def load(self) -> None:
        """Load now, on the caller's thread (start-up). A failure is logged; the first
        search loads it then."""
        try:
            self._reload()
        except Exception as exc:
            log.warning("word dictionary not loaded", extra={"error": type(exc).__name__})

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None

    def load_now(self, load: Loader | None = None) -> WordDictionary:
        """Load on the caller's thread (first search, benchmarks, tests), with `load`
        instead of the usual loader when given (a connection the caller holds)."""
        self._reload(load)
        return self

    def _current(self) -> dict[str, _Snapshot]:
        if time.monotonic() - self._loaded_at > self._max_age_s:
            self._refresh_in_background()
        return self._snapshot or {}

    def _refresh_in_background(self) -> None:
        """Never on the caller's thread: the caller may be holding a pooled connection."""
        if self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._reload_and_release, daemon=True).start()

    def _reload_and_release(self) -> None:
        """Reloads until no announcement came during the last load; a burst of them (a
        bulk load) costs one reload per REANNOUNCED_GAP_S, not one per new word."""
        try:
            self._reload()
            while self._loaded_through != self._heard:
                time.sleep(REANNOUNCED_GAP_S)
                self._reload()
        except Exception as exc:  # keep serving the previous copy; retried after max_age_s
            log.warning("word dictionary refresh failed", extra={"error": type(exc).__name__})
            return
        finally:
            self._refreshing.release()
        if self._loaded_through != self._heard:
            self._refresh_in_background()  # announced between the last check and the release

    def _reload(self, load: Loader | None = None) -> None:
        """A clinic whose words and counts are as they were keeps its snapshot, with the
        expansions its searches worked out: a refresh every `max_age_s` rebuilds only
        the clinics that changed."""
        started, heard = time.monotonic(), self._heard
        per_clinic: dict[str, dict[str, int]] = {}
        for clinic, word, patients in (load or self._load)():
            per_clinic.setdefault(clinic, {})[word] = patients
        before = self._snapshot or {}
        snapshots: dict[str, _Snapshot] = {}
        for clinic, frequency in per_clinic.items():
            kept = before.get(clinic)
            if kept is None or kept.frequency != frequency:
                kept = _Snapshot(frequency)
            snapshots[clinic] = kept
        self._snapshot = snapshots
        self._loaded_at = time.monotonic()
        self._loaded_through = heard
        rebuilt = sum(snapshots[c] is not before.get(c) for c in snapshots)
        log.debug(
            "word dictionary loaded",
            extra={
                "clinics": len(per_clinic),
                "rebuilt": rebuilt,
                "ms": (time.monotonic() - started) * 1e3,
            },
        )
