"""Candidate retrieval from the PostgreSQL projection.

Passes run from strict to loose and stop once the page asked for is filled:
identifiers; then, with a typed date, each name level narrowed by the date
(and the date with any one word); then the name levels alone: every word
exactly (with its nickname group), with prefix completions, with words one edit
away, and only while no one is found, with the other typo corrections and with
phonetic codes; then any one word, level by level (the levels read); and only
when nothing matched, whole-name trigram similarity. Order within the result set is decided
later by the re-ranker; a pass only has to find the right patient. Every
term is scoped to the caller's clinics inside the query.
"""

from __future__ import annotations

import collections
import datetime
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from prometheus_client import Counter
from psycopg import sql
from psycopg_pool import ConnectionPool

from core import term_counts, terms
from core.name_keys import PAIR_SEP, name_pair
from engines.base import Candidate, CandidateQuery, NameToken, SearchTimedOut
from engines.filters import NAME_FIELDS, Filter, folded_words
from engines.pg_projection import NAME_LEAD, SCOPE, WORDS_CHANNEL, array_literal, scope_terms
from engines.word_dictionary import TOTAL_WORD, Widened, WordDictionary
from normalizers.names import typo_distance

log = logging.getLogger(__name__)
# Time a whole search may take in the database (all its passes together).
DEFAULT_SEARCH_TIMEOUT_MS = 1000
SEARCH_DEADLINES = Counter(
    "patient_search_search_deadlines_total",
    "Searches cut short by their deadline (answered with what the stricter passes found)",
)


class DeadlineReached(Exception):
    """The search's time is up before its next pass."""


NICKNAME_LEAD = terms.term(terms.NICKNAME, "")  # "k:", read through its group's name words
# Set at the head of every pass, in its statement string: a string is one transaction,
# so the API's connections need none around a search (autocommit: no BEGIN and COMMIT
# round trips), and one SELECT of set_config calls costs one result where SET
# statements cost one each. Every pass must go through the terms index: with LIMIT
# and skewed name frequencies the planner otherwise bets on a sequential scan and can
# lose by seconds (measured at 1M patients); the name-key passes want the B-tree.
PASS_SETTINGS = sql.SQL(
    "select set_config('enable_seqscan', 'off', true), "
    "set_config('enable_indexscan', {indexscan}, true), "
    "set_config('pg_trgm.similarity_threshold', '0.3', true), "
    "set_config('statement_timeout', {timeout}, true); "
)

Observer = Callable[[str, float], None]
NEVER = sql.SQL("false")  # a condition that never holds (PostgresEngine.lookup's `unless`)

# Rows an ordered (loosest) pass may read before ordering them.
ORDERED_PASS_CAP = 2000
# Patients born on the typed date read when no name agrees (see names_with_date).
DOB_ALONE_ROWS = 5
# Patients born on the typed date read at most to check their names (see born_that_day).
BORN_THAT_DAY_ROWS = 2000
# Name keys read at most per clinic and word when a common name is driven by one word.
DRIVEN_ROWS = 2000
# One patient probed by id costs about as much as this many GIN postings read (measured
# at 1M: 10,000 Jennifer Johnsons, 21 ms to overlap 200,000 postings; 1,430 probes of
# James Smiths, 43 ms).
PROBE_COST = 100
# Patients holding each typed word from which a name counts as common: once a typed date
# has found it, namesakes born on other days are not looked for (see names_with_date).
COMMON_NAME = 1000
# Name levels read only while no one is found: a patient agreeing with every typed word
# within a slip is the one meant far more often than anyone two edits or a sound away
# (Febrl 1-3: the same recall at 1 and 10, the mean query 4 % faster).
LOOSE_LEVELS = ("typo", "close")
# Given-family pair keys a pass may read (both orders, every clinic).
MAX_PAIRS = 400
# Given words a page of completed pairs spreads over at least ("j smith": James, John,
# Joseph... Smith, not a page of Jacob Smiths, the first in key order).
PAIR_SPREAD = 5


class PostgresEngine:
    name = "postgres"

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        observe: Observer | None = None,
        search_timeout_ms: int = DEFAULT_SEARCH_TIMEOUT_MS,
    ) -> None:
        self.pool = pool
        self._observe = observe or (lambda kind, seconds: None)
        self.words = WordDictionary(lambda: load_words(pool), channels=(WORDS_CHANNEL,))
        self.search_timeout_ms = search_timeout_ms

    # -- reads ---------------------------------------------------------------

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        with self.pool.connection() as conn:
            if not self.words.loaded:  # the first search of this process loads it
                self.words.load_now(lambda: words_of(conn))
            return find_candidates(
                conn,
                query,
                observe=self._observe,
                words=self.words,
                timeout_ms=self.search_timeout_ms,
            )

    def term_counts(self, dates: Sequence[str]) -> DictionaryCounts:
        """Per-clinic counts of name words and dates, for evidence weights (core.term_counts).

        Name words and clinic sizes come from the in-process dictionary (the same counts,
        refreshed with it), as evidence asks; only the candidates' dates (`dates`, their
        keys) cost a round trip, and a search without a typed date asks for none.
        """
        if not self.words.loaded:  # a search answered by another engine may come first
            self.words.load_now()
        if not dates:
            return DictionaryCounts(self.words, {})
        with self.pool.connection() as conn:
            return DictionaryCounts(self.words, term_counts.lookup(conn, dates))

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "select id, doc from patient_search.patients where id = %s and clinic_id = any(%s)",
                (patient_id, list(clinic_ids)),
            ).fetchone()
        return _candidate(row) if row else None

    def lookup(
        self,
        term_sets: Sequence[Sequence[str]],
        clinic_ids: tuple[str, ...],
        *,
        unless: sql.Composable = NEVER,
    ) -> list[Candidate] | None:
        """Active patients holding every term of at least one set (booking lookups); None,
        with nothing read, when `unless` (a boolean SQL expression, such as a lockout the
        caller owns) holds. One statement: the condition is checked where the lookup
        runs, without a round trip or a connection of its own."""
        if not term_sets:
            return []
        contains = sql.SQL(" or ").join(
            sql.SQL("terms @> {}::text[]").format(scope_terms(clinic, terms))
            for terms in term_sets
            for clinic in sorted(set(clinic_ids))
        )
        # "offset 0" keeps the condition a subquery of its own, asked once.
        query = sql.SQL(
            "select g.refused, p.id, p.doc from (select {} as refused offset 0) g "
            "left join lateral (select id, doc from patient_search.patients "
            "where not g.refused and clinic_id = any({}) and active and ({}) "
            "order by id limit 10) p on true"
        ).format(unless, list(clinic_ids), contains)
        started = time.perf_counter()
        with self.pool.connection() as conn:
            rows = conn.execute(query).fetchall()
        self._observe("lookup", time.perf_counter() - started)
        if rows and rows[0][0]:
            return None
        return [_candidate(r[1:]) for r in rows if r[1] is not None]


class DictionaryCounts:
    """Term counts by core.term_counts key, answered as evidence asks (search_api.ranking's
    Counts): a name word's and a clinic's size from the word dictionary, a date's from
    those read up front. Spelling every candidate's keys, to parse them back for the
    dictionary, cost 90-140 us of a name search in process; evidence asks for a handful."""

    def __init__(self, words: WordDictionary, dates: dict[str, int]) -> None:
        self.words = words
        self.known = dates

    def get(self, key: str, default: int, /) -> int:
        if (count := self.known.get(key)) is None:
            count = self.known[key] = self._count(key)
        return count or default

    def _count(self, key: str) -> int:
        """0 for a date not read up front, as for a term nobody holds. A name word, the
        key evidence asks most, is split once."""
        if (name := _name_key(key)) is not None:  # a count key is the clinic-scoped term
            return self.words.patients(*name) or 0
        clinic, _, term = key.partition(term_counts.SEP)
        return (self.words.patients(clinic, TOTAL_WORD) or 0) if term == term_counts.TOTAL else 0


def load_words(pool: ConnectionPool) -> list[tuple[str, str, int]]:
    with pool.connection() as conn:
        return words_of(conn)


def words_of(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    """Every clinic's name words with their patient counts (table name_words), and each
    clinic's number of patients as the empty word (core.term_counts' total row)."""
    rows = conn.execute(
        "select clinic_id, term, patients from patient_search.name_words "
        "union all select c.clinic_id, %(total)s, t.count "
        "from (select distinct clinic_id from patient_search.name_words) c "
        "join patient_search.term_counts t on t.term = c.clinic_id || %(suffix)s",
        {"total": TOTAL_WORD, "suffix": term_counts.SEP + term_counts.TOTAL},
    )
    return [(r[0], r[1], r[2]) for r in rows]


def text_array(values: Iterable[str]) -> sql.Composable:
    """A text[] literal spelled in one pass: psycopg's list dumper (Python, per element) was
    a sixth of a typo search's engine CPU, where a pass's arrays hold up to hundreds of
    clinic-scoped terms."""
    return sql.SQL("{}::text[]").format(sql.Literal(array_literal(list(values))))


def _candidate(row: tuple[Any, ...]) -> Candidate:
    doc = row[1]
    return Candidate(id=row[0], patient=doc["patient"], match=doc["match"])


Scoper = Callable[[Iterable[str]], list[str]]
# A name level: its name and the clinic-scoped terms that count per typed word.
Level = tuple[str, list[tuple[str, ...]]]


def _scoped_value(scoped: str, lead: str) -> tuple[str, str] | None:
    """(clinic, value) of a scoped term of the kind `lead` starts; None for another kind."""
    clinic, _, term = scoped.partition(SCOPE)
    return (clinic, term[len(lead) :]) if term.startswith(lead) else None


def _name_key(scoped: str) -> tuple[str, str] | None:
    """(clinic, word) of a scoped name-word term; None for any other kind of term."""
    return _scoped_value(scoped, NAME_LEAD)


def no_expansion(tokens: Sequence[NameToken], clinics: Sequence[str], *, typos: bool) -> Widened:
    return {t.text: set() for t in tokens}


def scope_all(clinics: Sequence[str], terms: Iterable[str]) -> list[str]:
    """These terms in each of these clinics."""
    wanted = sorted(set(terms))
    return [t for c in clinics for t in scope_terms(c, wanted)]


def _scoped_words(pairs: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """(clinic, word) pairs from one clinic's dictionary: that clinic's term only."""
    return tuple(
        sorted(t for clinic, word in pairs for t in scope_terms(clinic, [terms.name(word)]))
    )


def _name_levels(
    expand: Callable[[Sequence[NameToken], bool], Widened],
    names: Sequence[NameToken],
    scoped: Scoper,
) -> Iterator[Level]:
    """Per name word, the scoped terms that count at each level, strict to loose.

    exact: the word and its nickname group; completed: plus prefix completions;
    slip: plus words one edit away (the ranker's "slip", as telling as a sound-alike);
    typo: plus the other typo corrections; close: plus the phonetic code. The dictionary is
    only asked when the exact level did not find enough (for near spellings, when the
    completions did not either), and each clinic's
    expansions are scoped to that clinic alone. Each level is its own unordered
    pass: a row found at a stricter level is already on the page before a looser
    one is read, which orders them as well as sorting the loose level's matches
    did, without reading thousands of rows of a common sound to sort them. A level
    that adds nothing to the one before is not a level: a word misspelled as typed
    has no completions, and reading its exact level again cost a typo search a
    statement (and a second "any one word" pass among the last resorts).
    """
    exact = [tuple(scoped(t.alternatives)) for t in names]
    yield "exact", exact
    prefixes = expand(names, False)
    completed = [(*e, *_scoped_words(prefixes[t.text])) for e, t in zip(exact, names, strict=True)]
    if completed != exact:
        yield "completed", completed
    fuzzy = expand(names, True)  # only once the completions did not find enough
    slip = [
        (*c, *_scoped_words(p for p in fuzzy[t.text] if typo_distance(t.text, p[1]) == 1))
        for c, t in zip(completed, names, strict=True)
    ]
    if slip != completed:
        yield "slip", slip
    typo = [(*c, *_scoped_words(fuzzy[t.text])) for c, t in zip(completed, names, strict=True)]
    if typo != slip:
        yield "typo", typo
    yield "close", [(*c, *scoped(t.phonetic)) for c, t in zip(typo, names, strict=True)]


def find_candidates(
    conn: psycopg.Connection[Any],
    query: CandidateQuery,
    *,
    observe: Observer,
    words: WordDictionary | None = None,
    timeout_ms: int = DEFAULT_SEARCH_TIMEOUT_MS,
) -> list[Candidate]:
    """Candidates for the re-ranker, from the strictest pass that finds enough.

    `words` is the process's word dictionary: typo and prefix expansions, and how
    common each typed word is. Without it, words match exactly and phonetically.

    No name pass is ordered: each level is homogeneous enough for the re-ranker to
    order, stricter levels run first, and an unordered LIMIT stops reading early
    even when a common name matches thousands. Their order is still
    deterministic for the same projection, which keeps pagination stable.
    """
    return CandidateSearch(conn, query, observe=observe, words=words, timeout_ms=timeout_ms).run()


class CandidateSearch:
    """One search's passes over the projection, strict to loose, filling `found`.

    `run` reads top to bottom: identifiers; names (narrowed by a typed date first,
    then alone, level by level); last resorts when nothing matched; or, without a
    name, the date and phone ending alone. Each pass adds rows not yet found and
    is skipped once the page is full.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        query: CandidateQuery,
        *,
        observe: Observer,
        words: WordDictionary | None = None,
        timeout_ms: int = DEFAULT_SEARCH_TIMEOUT_MS,
    ) -> None:
        self.conn = conn
        self.words = words
        self.query = query
        self.observe = observe
        self.timeout_ms = timeout_ms
        # One deadline for the whole search, however many passes it takes.
        self.deadline = time.monotonic() + timeout_ms / 1000
        self.clinics = sorted(set(query.clinic_ids))
        widen = words.widen if words is not None else no_expansion
        self.found: dict[str, Candidate] = {}
        self.holders: dict[tuple[str, ...], int] = {}  # patients holding a word's name keys
        # A word's name keys, asked for by its count, its pairs and its driven read.
        self.keys: dict[tuple[tuple[str, ...], bool], tuple[tuple[str, str], ...]] = {}
        self._absent: frozenset[str] | None = None  # see absent
        self.base: list[sql.Composable] = [
            sql.SQL("clinic_id = any({})").format(text_array(self.clinics))
        ]
        if not query.include_inactive:
            self.base.append(sql.SQL("active"))
        self.base.extend(filter_condition(f) for f in query.filters)
        # A number typed with the name narrows it, read as a phone ending or a year of birth.
        narrows = [self.overlaps(query.weak_terms)] if query.weak_terms else []
        narrows.extend(born_in(year) for year in query.birth_years)
        self.weak: list[sql.Composable] = (
            [sql.SQL("({})").format(sql.SQL(" or ").join(narrows))] if narrows else []
        )
        self.dates = [
            (kind, self.overlaps(terms))
            for kind, terms in (("dob", query.dob_terms), ("dob_near", query.dob_near_terms))
            if terms
        ]
        # Name levels reached so far, pulled lazily from the ladder: the dictionary
        # is asked only if the exact level did not find enough.
        self.levels: list[Level] = []
        # The ladder must not hold `self`: a search referring to itself through a
        # suspended generator is a cycle, left with all its candidates for the cycle
        # collector, which then runs every few searches (issue 11).
        clinics = self.clinics
        scoped = functools.partial(scope_all, clinics)
        self.ladder = _name_levels(
            lambda tokens, typos: widen(tokens, clinics, typos=typos), query.names, scoped
        )

    def run(self) -> list[Candidate]:
        try:
            self.passes()
        except (DeadlineReached, psycopg.errors.QueryCanceled):
            # What the strict passes found is still worth answering; the looser ones
            # would only have ranked below it. Nothing found is not an answer.
            SEARCH_DEADLINES.inc()
            log.warning("search deadline reached", extra={"found": len(self.found)})
            if not self.found:
                raise SearchTimedOut from None
        return list(self.found.values())

    def passes(self) -> None:
        if self.query.strong_terms:
            self.run_pass("identifier", [self.overlaps(self.query.strong_terms)])
        if self.query.names:
            if self.dates and self.names_with_date():
                if self.common_name():
                    return  # the namesakes born on other days are an arbitrary few of thousands
                if self.word_for_word():
                    # The patient meant is found; the namesakes born on other days (the
                    # exact level without the date) may be duplicates. Looser spellings
                    # would only fill the page with strangers.
                    self.level_pass(*self.levels[0])
                    return
            self.names_alone()
            if self.weak and not self.found:
                # The number agrees with no one of that name (a mistyped year or phone
                # ending): the name alone, before strangers who hold one word and the number.
                self.weak = []
                self.names_alone()
            self.last_resorts()
        else:
            self.without_name()

    # -- passes, in the order `run` tries them ---------------------------------

    def names_with_date(self) -> bool:
        """A typed date narrows the name before the name is tried without it; True
        when it found someone.

        So a crowd of namesakes never hides the patient born on that date. First
        everyone born that day whose name agrees at any level (the date drives the
        index read: a few dozen rows even at a million patients, where a common
        name's posting lists hold thousands); a misspelled namesake born that day,
        a likely duplicate, is found with the exact one. When that finds no one
        (a mistyped date, or a day too crowded to read whole), the levels are
        tried one by one with the date and then with the near dates, up to the
        first that finds someone.
        """
        before = len(self.found)
        self.levels.extend(self.ladder)  # expansions are in-process: every level at once
        if self.query.dob_terms:
            self.born_that_day(self.levels[-1][1])
        if len(self.found) == before:
            for level, words in self.levels:
                if any(self.unheld(level, words)):
                    continue
                for date_kind, date in self.dates:
                    conds = [*(self.holds(w) for w in words), date, *self.weak]
                    self.run_pass(f"{level}_{date_kind}", conds)
                    if len(self.found) > before:
                        break
                if len(self.found) > before or self.enough():
                    break
        named = len(self.found) > before
        if not named:
            # The date with any one word: a half-remembered or unusual name
            # still finds the patient born that day.
            any_date = self.overlaps([*self.query.dob_terms, *self.query.dob_near_terms])
            self.run_pass("dob_any_name", [self.any_word(), any_date])
        born = set(terms.values(self.query.dob_terms, terms.DOB))
        if not any(c.match.get("birth_date") in born for c in self.found.values()):
            # The date alone, a few rows: a patient whose name was entered all
            # differently (a married name, another person's) is still on the page
            # when few patients of the clinic were born that day.
            self.run_pass("dob_alone", [self.overlaps(self.query.dob_terms)], rows=DOB_ALONE_ROWS)
        return named

    def born_that_day(self, loosest: list[tuple[str, ...]]) -> None:
        """Patients born on the typed date whose every typed word agrees at the loosest
        level: the day's rows are read through the index (at most BORN_THAT_DAY_ROWS),
        then the name is checked on them, instead of intersecting the name's posting lists.
        """
        day = sql.SQL(" and ").join([*self.base, self.overlaps(self.query.dob_terms)])
        name = sql.SQL(" and ").join([*(self.holds(w) for w in loosest), *self.weak])
        stmt = sql.SQL(
            "select id, doc from (select id, doc, terms from patient_search.patients "
            "where {} limit {} offset 0) p where {} limit {}"
        ).format(day, sql.Literal(BORN_THAT_DAY_ROWS), name, sql.Literal(self.query.limit))
        self.execute("born_that_day", stmt)

    def common_name(self) -> bool:
        """The typed name, word for word, is a crowd (see crowd): a pass without the date
        reads long posting lists to pick an arbitrary few of it."""
        return bool(self.levels) and self.crowd(self.levels[0][1])

    def word_for_word(self) -> bool:
        """Someone found was born on the typed date and holds every typed word as typed
        (or by nickname): checked on the rows found, by primary key."""
        if not self.query.dob_terms or not self.found:
            return False
        conds = [*(self.holds(w) for w in self.levels[0][1]), self.overlaps(self.query.dob_terms)]
        stmt = sql.SQL("select 1 from patient_search.patients where id = any({}) and {} limit 1")
        row = self.conn.execute(
            stmt.format(text_array(self.found), sql.SQL(" and ").join(conds))
        ).fetchone()
        return row is not None

    def names_alone(self) -> None:
        before = len(self.found)
        for i in itertools.count():
            if self.enough():
                break
            if i == len(self.levels):
                reached = next(self.ladder, None)
                if reached is None:
                    break
                self.levels.append(reached)
            if self.levels[i][0] in LOOSE_LEVELS and self.found:
                # Found within a slip (or by date or identifier): wider typos and
                # sound-alikes of the whole name would only pad the page with strangers.
                break
            self.level_pass(*self.levels[i])
            if i == 0 and self.weak and len(self.found) > before:
                # The name as typed agrees with the number typed with it (a phone ending,
                # a year of birth): the patient meant. Namesakes without the number may
                # be duplicates; looser spellings would only be strangers.
                self.weak = []
                self.level_pass(*self.levels[0])
                break

    def level_pass(self, level: str, words: list[tuple[str, ...]]) -> None:
        """One level of the name without the date, read the cheapest way its words allow:
        by name keys for as-you-type and crowds, else the GIN overlap."""
        if any(self.unheld(level, words)):
            return
        one_word = len(words) == 1 and not self.weak
        if one_word and level == "completed":
            self.completions_pass(words[0])
        elif one_word and level == "exact" and self.crowd(words):
            self.crowd_pass(words[0])
        else:
            # Read by a word's keys, a row is still checked for the level's terms (a key of
            # the nickname group may hold the word in another field). Spelled once, for the
            # first pass that reads them: the completed pairs need none, and a completion
            # level's hundreds of terms were 4 % of an as-you-type search's engine CPU.
            conds = functools.cache(lambda: [*(self.holds(w) for w in words), *self.weak])
            driver = None if level == "close" else self.driver(words)
            if driver is not None:
                self.pair_pass(level, words, conds)
            if self.pairs_as_typed(level, words):
                self.completed_pair_pass(words)
                if self.enough():
                    return
            if driver is not None:
                self.driven_pass(level, words, driver, conds())
            else:
                self.run_pass(level, conds())

    def pairs_as_typed(self, level: str, words: list[tuple[str, ...]]) -> bool:
        """Two words of a crowd, the page not yet filled: the pairs completing one typed
        word are read before anything reads the crowd itself. At the exact level too:
        the range holds the exact pair first ("jennifer jon" before "jennifer jones"),
        where driving "jennifer jon" through 2,000 Jennifers found no Jon (65-80 ms in
        the crowded population, the as-you-type kind's slowest)."""
        return (
            level in ("exact", "completed")
            and len(words) == 2
            and self.crowd(words)
            and not self.enough()
        )

    def driver(self, words: list[tuple[str, ...]]) -> int | None:
        """The typed word to read a crowd through, or None for the GIN overlap.

        When every word of a name is common (COMMON_NAME patients at least, at this
        level), the overlap reads each word's whole posting list to keep a page of an
        equally good crowd (10,000 Jennifer Johnsons in the crowded population). The
        rarest word can lead instead, through its name keys (its nickname group's words
        included, see name_keys); the phonetic level, whose codes no name key holds, is
        never driven.
        """
        if len(words) < 2 or self.words is None:
            return None
        held = self.held(words)
        if min(held) < COMMON_NAME:
            return None
        driver = min(range(len(words)), key=lambda i: held[i])
        # The share of the driver's rows that hold every other word: the driven read
        # probes about limit / share patients, the overlap reads every posting.
        patients = self.words.held((c, TOTAL_WORD) for c in self.clinics)
        share = math.prod(min(h / max(patients, 1), 1.0) for i, h in enumerate(held) if i != driver)
        probes = self.query.limit / max(share, 1e-9)
        cheaper = probes * PROBE_COST < sum(held) and probes < DRIVEN_ROWS
        return driver if cheaper else None

    def uncrowded(self, words: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """The words a pass on any one word may read: not those a crowd holds (unless a
        phone ending alone narrows the pass). An unordered page of 15,000 Charleses is an
        arbitrary few, no likelier to hold the Charles whose family name was entered
        differently than no page at all; it cost half the census typo searches at 1M a
        pass over long posting lists and fifty more candidates to rank."""
        if self.narrowed_by_index() or self.words is None:
            return words
        return [w for w, held in zip(words, self.held(words), strict=True) if held < COMMON_NAME]

    def narrowed_by_index(self) -> bool:
        """A phone ending alone narrows the passes: the GIN index reads it with the words,
        so a pass on a common word stays cheap. A year of birth is checked on each row
        read (14 ms for "john" or "smith" born in 1980 at 1M patients)."""
        return bool(self.weak) and not self.query.birth_years

    def crowd(self, words: list[tuple[str, ...]]) -> bool:
        """Every word is held by COMMON_NAME patients at least: the GIN overlap of its
        posting lists would read a crowd to keep a page of it."""
        return self.words is not None and min(self.held(words)) >= COMMON_NAME

    def unheld(self, level: str, words: list[tuple[str, ...]]) -> list[bool]:
        """Per typed word, True when no patient of the caller's clinics holds it at this
        level, for certain: the dictionary is complete (WordDictionary.complete) and counts
        no one for its name keys. A pass needing such a word finds no one: a typo or a word
        still being typed made the exact level of 98-99 % of such searches (census, 1M) a
        statement that found no one. Phonetic codes are not counted: never for "close"."""
        if level == "close" or self.certain() is None:
            return [False] * len(words)
        return [held == 0 for held in self.held(words)]

    def certain(self) -> WordDictionary | None:
        """The dictionary when it is complete (WordDictionary.complete), so that a word it
        counts no one for is held by no one; None while it may lack a word. What unheld,
        absent and keyed_pass leave out rests on this."""
        words = self.words
        return words if words is not None and words.complete else None

    def held(self, words: list[tuple[str, ...]]) -> list[int]:
        """Per typed word, the patients holding its name keys at this level (the word
        dictionary's counts, nickname groups through their words; phonetic codes are
        not counted)."""
        if self.words is None:
            return [0] * len(words)
        return [self._holders(scoped) for scoped in words]

    def _holders(self, scoped: tuple[str, ...]) -> int:
        """Counted once per search: crowd, driver and the last resorts all ask."""
        if (count := self.holders.get(scoped)) is None:
            assert self.words is not None
            count = self.words.held(self.name_keys(scoped))
            self.holders[scoped] = count
        return count

    def name_keys(
        self, scoped: tuple[str, ...], *, nicknames: bool = True
    ) -> tuple[tuple[str, str], ...]:
        """The (clinic, name word) keys to read a typed word's scoped terms through: a
        name word is its own key; a nickname term stands for the clinic's words of that
        nickname group (kim, kimberly, kimberley for k:kimberly), so a crowd that holds
        a word only by nickname is read by key too. Worked out once per search."""
        if (found := self.keys.get((scoped, nicknames))) is not None:
            return found
        keys: dict[tuple[str, str], None] = {}
        for t in scoped:
            if (key := _name_key(t)) is not None:
                keys[key] = None
            elif nicknames and (nickname := _scoped_value(t, NICKNAME_LEAD)) is not None:
                clinic, member = nickname
                words = self.words.nicknamed(clinic, member) if self.words is not None else []
                keys.update(dict.fromkeys((clinic, w) for w in words))
        found = self.keys[(scoped, nicknames)] = tuple(keys)
        return found

    def pair_pass(
        self,
        level: str,
        words: list[tuple[str, ...]],
        conds: Callable[[], list[sql.Composable]],
    ) -> None:
        """A two-word crowd read by its given-family pairs (core.name_keys), in
        either order: O(page) keys, where the driven read probes about ten patients per
        patient kept. Each row still meets `conds` (the level's terms), so the pass reads
        a part of the level, the part the ranker puts first, and the driven read fills
        the rest of the page. A projection
        built before pairs existed holds none: the driven read then does it all."""
        if len(words) != 2:
            return
        firsts, seconds = self.name_keys(words[0]), self.name_keys(words[1])
        # Counted before they are spelled: two words' completions can make thousands.
        in_clinic = collections.Counter(clinic for clinic, _ in seconds)
        pairs = 2 * sum(in_clinic[clinic] for clinic, _ in firsts)
        if not pairs or pairs > MAX_PAIRS:  # past it, completions: the driven read is cheaper
            return
        keys = [
            (clinic, pair)
            for clinic, a in firsts
            for other, b in seconds
            if other == clinic
            for pair in (name_pair(a, b), name_pair(b, a))
        ]
        self.keyed_pass(f"{level}_pair", exactly(keys), self.query.limit, conds())

    def completed_pair_pass(self, words: list[tuple[str, ...]]) -> None:
        """Two typed words as you type them ("mary j", "j smith", "mic joh"): the given-family
        pairs whose family word starts with one typed word, the given word being any key of
        the other (the word, its nickname group, its completions), in either order: a
        B-tree range per key, O(page). Overlapping the completions' posting lists in the
        GIN index, or probing a common given name's patients for a family initial, read
        thousands of rows (20-35 ms at 1M patients for "Michael L"). The typed order is
        read first. A row needs no check of the level's terms: its key is the patient's own
        given word (one of the level's keys) and family word, which starts with the typed
        one, a completion even past the dictionary's most frequent ones (checked, a range
        read in key order kept few of its first rows: "amanda mack" is not among the 25
        commonest M names)."""
        ranges: list[tuple[str, str, str]] = []
        rows: list[int] = []
        tokens = self.query.names
        # The typed word's own ranges may fill the page ("mary j": Mary Jackson, Mary
        # James...); each other key gives a few rows, so that a page of completions holds
        # several of them ("j smith": James, John, Joseph... Smith).
        own = -(-self.query.limit // len(self.clinics))
        other = max(2, -(-own // PAIR_SPREAD))
        for given, family in ((0, 1), (1, 0)):
            if tokens[family].prefix:
                typed = tokens[given].text
                keys = self.by_frequency(self.name_keys(words[given]), typed)
                ranges.extend(pair_ranges(keys, tokens[family].text))
                rows.extend(own if word == typed else other for _, word in keys)
        if ranges and len(ranges) <= MAX_PAIRS:
            before = len(self.found)
            self.keyed_pass("completed_pair", ranges, rows, self.weak)
            if before < len(self.found) and not self.enough() and other < own:
                # Few keys hold such pairs (a small clinic): read them deeper, still O(page),
                # before the level's read of the whole crowd.
                self.keyed_pass("completed_pair", ranges, own, self.weak)

    def by_frequency(self, keys: Sequence[tuple[str, str]], typed: str) -> list[tuple[str, str]]:
        """(clinic, word) keys: the typed word's first, then the words most patients of
        the caller's clinics hold, then alphabetically; each word across the clinics
        before the next, so that a page filled by the first keys is not one clinic's."""
        held: dict[str, int] = dict.fromkeys((word for _, word in keys), 0)
        if self.words is not None:
            for clinic, word in keys:
                held[word] += self.words.patients(clinic, word) or 0
        return sorted(keys, key=lambda k: (k[1] != typed, -held[k[1]], k[1], k[0]))

    def driven_pass(
        self, level: str, words: list[tuple[str, ...]], driver: int, conds: list[sql.Composable]
    ) -> None:
        """A common name read through its driving word's name keys, keeping the patients
        that hold the other words too (`conds`): O(page / share) probes instead of every
        posting."""
        keys = exactly(self.name_keys(words[driver]))
        self.keyed_pass(f"{level}_driven", keys, DRIVEN_ROWS, conds)

    def completions_pass(self, scoped: tuple[str, ...]) -> None:
        """One typed word and its completions (as-you-type): read a few patients per word
        from the B-tree of name keys, most frequent words first, instead of overlapping
        every completion's posting list in the GIN index (a 2-letter prefix matched a
        tenth of a clinic there). Reads O(page) entries whatever the population. The
        word itself and its nickname group were read at the exact level."""
        keys = self.name_keys(scoped, nicknames=False)
        if keys:
            per_key = max(2, -(-self.query.limit // len(keys)))
            self.keyed_pass("completed", exactly(keys), per_key, [])

    def crowd_pass(self, scoped: tuple[str, ...]) -> None:
        """One typed word that a crowd holds, by name or nickname: its matches are all
        equally good, so any key may fill the page, the typed word's own first. A key
        of the nickname group may hold the word in another field: the level's terms are
        checked on each row read."""
        if keys := self.name_keys(scoped):
            self.keyed_pass("exact_keyed", exactly(keys), self.query.limit, [self.holds(scoped)])

    def keyed_pass(
        self,
        kind: str,
        ranges: list[tuple[str, str, str]],
        per_key: int | Sequence[int],
        conds: list[sql.Composable],
    ) -> None:
        """Patients read through the B-tree of name keys, at most `per_key` (one count, or
        one per range) per (clinic, lowest key, highest key) range in key order (a name
        key is a range of one key: see `exactly`), kept when the base conditions and
        `conds` hold: the LIMIT stops the read once the page is full."""
        rows = [per_key] * len(ranges) if isinstance(per_key, int) else list(per_key)
        if (words := self.certain()) is not None:
            # Left out after the decisions that count keys: a range of nobody's word reads
            # nothing, at the cost of a B-tree descent (a typed word in the clinics that lack
            # it; two thirds of a crowded typo search's pairs).
            kept = [i for i, r in enumerate(ranges) if _someone_under(words, r)]
            ranges, rows = [ranges[i] for i in kept], [rows[i] for i in kept]
            if not ranges:
                return
        where = sql.SQL(" and ").join([*self.base, *conds])
        stmt = sql.SQL(
            "select p.id, p.doc from unnest({}, {}, {}, {}::int[]) w(key_clinic, low, high, n) "
            "cross join lateral (select k.id as key_id from patient_search.name_keys k "
            "  where k.clinic_id = w.key_clinic and k.term between w.low and w.high "
            "  limit w.n) k "
            "join patient_search.patients p on p.id = k.key_id where {} limit {}"
        ).format(
            text_array(c for c, _, _ in ranges),
            text_array(low for _, low, _ in ranges),
            text_array(high for _, _, high in ranges),
            sql.Literal("{" + ",".join(map(str, rows)) + "}"),
            where,
            sql.Literal(self.query.limit),
        )
        self.execute(kind, stmt, indexscan=True)

    def last_resorts(self) -> None:
        """When the levels did not fill the page: any one word, level by level over the
        levels read (a name part entered all differently, a married name: Febrl's
        duplicates that lost a name part are found this way); then, when nothing
        matched at all, whole-name trigram similarity."""
        if len(self.query.names) > 1:
            for level, words in self.levels:
                if self.enough():
                    break
                telling = self.uncrowded(words)
                if telling and not all(self.unheld(level, telling)):
                    any_word = self.holds(t for scoped in telling for t in scoped)
                    self.run_pass("any_name", [any_word, *self.weak])
        name_text = self.query.name_text
        if not self.found and name_text:
            self.run_pass(
                "trigram",
                [sql.SQL("name_text % {}").format(name_text)],
                order=sql.SQL("similarity(name_text, {}) desc, id").format(name_text),
            )

    def without_name(self) -> None:
        for date_kind, date in self.dates:
            self.run_pass(date_kind, [date, *self.weak])
        if not self.dates and self.weak:
            self.run_pass("phone_ending", self.weak)
        if not self.dates and not self.weak and not self.query.strong_terms and self.query.filters:
            self.run_pass("filter", [])  # the filters alone (already in the base conditions)

    # -- the pieces every pass uses --------------------------------------------

    def enough(self) -> bool:
        """The page asked for is filled: looser levels would only rank below it."""
        return len(self.found) >= min(self.query.enough, self.query.limit)

    def overlaps(self, wanted: Sequence[str]) -> sql.Composable:
        """Any of these terms, in any of the caller's clinics."""
        return self.holds(scope_all(self.clinics, wanted))

    def holds(self, scoped: Iterable[str]) -> sql.Composable:
        """Any of these terms, already scoped to their clinics, but those of `absent`: no
        row holds them, and each cost the GIN index a descent of its entry tree."""
        absent = self.absent()
        return sql.SQL("terms && {}").format(
            text_array(sorted({t for t in scoped if t not in absent}))
        )

    def absent(self) -> frozenset[str]:
        """The typed words' name and nickname terms that no patient of their clinic holds,
        for certain (a complete dictionary, as `unheld`); worked out once per search.

        A word is typed in a few clinics' spelling at most, and often in none ("johsua",
        its nickname key, "johsuadnaiels" joined with the next word), while its terms are
        spelled for every clinic of the key: of a typo search's 40 terms, 30 were such
        (census, 1M). The dictionary's expansions are its own words, held by someone."""
        if self._absent is None:
            absent: set[str] = set()
            if (words := self.certain()) is not None:
                typed = (t for token in self.query.names for t in token.alternatives)
                absent.update(t for t in scope_all(self.clinics, typed) if _nobody(words, t))
            self._absent = frozenset(absent)
        return self._absent

    def any_word(self) -> sql.Composable:
        """Any term of any typed word, at every level reached so far."""
        return self.holds(t for _, words in self.levels for scoped in words for t in scoped)

    def run_pass(
        self,
        kind: str,
        conds: list[sql.Composable],
        order: sql.Composable | None = None,
        rows: int | None = None,
    ) -> None:
        """One statement; its rows (at most `rows`) not yet found are added. Skipped once
        the page is full."""
        if len(self.found) >= self.query.limit:
            return
        limit = min(rows or self.query.limit, self.query.limit)
        where = sql.SQL(" and ").join([*self.base, *conds])
        if order is None:
            stmt = sql.SQL("select id, doc from patient_search.patients where {} limit {}").format(
                where, sql.Literal(limit)
            )
        else:
            # Ordering reads every match first; bound that work so one loose query on
            # a common sound cannot stall the pool (seen: 1 s at 1M under load).
            stmt = sql.SQL(
                "select id, doc from (select id, doc, terms, name_text "
                "from patient_search.patients where {} limit {}) p order by {} limit {}"
            ).format(where, sql.Literal(ORDERED_PASS_CAP), order, sql.Literal(limit))
        self.execute(kind, stmt)

    def execute(self, kind: str, stmt: sql.Composable, *, indexscan: bool = False) -> None:
        """Run a pass within what is left of the search's time; keep the rows not yet found."""
        if len(self.found) >= self.query.limit:
            return
        left_ms = int((self.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise DeadlineReached
        started = time.perf_counter()
        settings = PASS_SETTINGS.format(
            indexscan=sql.Literal("on" if indexscan else "off"), timeout=sql.Literal(str(left_ms))
        )
        cur = self.conn.execute(settings + stmt)
        cur.nextset()
        fetched = cur.fetchall()
        self.observe(kind, time.perf_counter() - started)
        for row in fetched:
            if row[0] not in self.found:
                self.found[row[0]] = _candidate(row)


# Above every character a name holds: name_keys.term is collated "C" (code point order),
# so a word followed by it bounds every key that starts with the word.
LAST_CHARACTER = "\U0010ffff"


def exactly(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(clinic, key) pairs as keyed_pass ranges that hold just that key."""
    return [(clinic, key, key) for clinic, key in keys]


def pair_ranges(givens: Sequence[tuple[str, str]], family: str) -> list[tuple[str, str, str]]:
    """In the order given, ranges of the given-family pairs (core.name_keys) of each
    (clinic, given word) whose family word starts with `family`."""
    ranges = []
    for clinic, given in givens:
        low = name_pair(given, family)
        ranges.append((clinic, low, low + LAST_CHARACTER))
    return ranges


def _someone_under(words: WordDictionary, key_range: tuple[str, str, str]) -> bool:
    """Some patient of the range's clinic holds the words its keys start with: a name key's
    word, or a pair's given word (and family word, for one pair; a range of pairs may hold
    a family word typed in part). A complete dictionary counts every name word."""
    clinic, low, high = key_range
    given, _, family = low.partition(PAIR_SEP)
    led_by = (given, family) if family and low == high else (given,)
    return all(words.patients(clinic, word) != 0 for word in led_by)


def _nobody(words: WordDictionary, scoped: str) -> bool:
    """No patient of the term's clinic holds it: a name word (joined keys included) the
    complete dictionary counts no one for, or a nickname key none of its words leads to."""
    if (key := _name_key(scoped)) is not None:
        return words.patients(*key) == 0
    if (nickname := _scoped_value(scoped, NICKNAME_LEAD)) is not None:
        clinic, member = nickname
        known = words.patients(clinic, TOTAL_WORD) is not None
        return known and not words.nicknamed(clinic, member)
    return False


def born_in(year: int) -> sql.Composable:
    """Patients born in that year: no index term holds a year, so each row read is checked."""
    return sql.SQL("birth_date between {} and {}").format(
        datetime.date(year, 1, 1), datetime.date(year, 12, 31)
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _patient_field(name: str) -> sql.Composable:
    return sql.SQL("(doc #>> {})").format(sql.Literal(["patient", name]))


def filter_condition(f: Filter) -> sql.Composable:
    """SQL for one filter: exact, or looser than engines.filters.accepts (re-checked there)."""
    if f.field == "birth_date":
        low, high = f.values
        inside = sql.SQL(" and ").join(
            [
                sql.SQL("birth_date >= {}").format(low) if low else sql.SQL("true"),
                sql.SQL("birth_date < {}").format(high) if high else sql.SQL("true"),
            ]
        )
        negate = sql.SQL("not ") if f.op == "not_range" else sql.SQL("")
        return sql.SQL("(birth_date is not null and {}({}))").format(negate, inside)
    if f.field in NAME_FIELDS and f.op == "exact":
        parts = [_patient_field(p) for p in NAME_FIELDS[f.field]]
        if f.field == "name":
            given, middle, family = parts
            parts.append(sql.SQL("concat_ws(' ', {}, {})").format(given, family))
            parts.append(sql.SQL("concat_ws(' ', {}, {}, {})").format(given, middle, family))
        values = list(f.values)
        return sql.SQL("({})").format(
            sql.SQL(" or ").join(sql.SQL("{} = any({})").format(p, values) for p in parts)
        )
    if f.field in NAME_FIELDS:  # contains: the trigram index answers LIKE on name_text
        likes = [f"%{_like_escape(folded_words(v))}%" for v in f.values]
        return sql.SQL("({})").format(
            sql.SQL(" or ").join(sql.SQL("name_text like {}").format(v) for v in likes)
        )
    if f.field == "active":
        return sql.SQL("active = any({})").format(list(f.values))
    if f.field == "id":
        return sql.SQL("id = any({})").format(list(f.values))
    column = _patient_field(f.field)
    if f.op == "prefix":
        likes = [f"{_like_escape(str(v).lower())}%" for v in f.values]
        return sql.SQL("lower({}) like any({})").format(column, likes)
    if f.op == "not_in":
        return sql.SQL("coalesce({}, '') <> all({})").format(column, list(f.values))
    return sql.SQL("{} = any({})").format(column, list(f.values))
