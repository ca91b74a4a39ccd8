"""Candidate retrieval from the PostgreSQL projection.

Passes run from strict to loose and stop once the page asked for is filled:
identifiers; then, with a typed date, each name level narrowed by the date
(and the date with any one word); then the name levels alone: every word
exactly (with its nickname group), with prefix completions, with typo
corrections and phonetic codes; and only when nothing matched, any one word
and whole-name trigram similarity. Order within the result set is decided
later by the re-ranker; a pass only has to find the right patient. Every
term is scoped to the caller's clinics inside the query.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from core import term_counts, terms
from engines.base import Candidate, CandidateQuery, NameToken
from engines.filters import NAME_FIELDS, Filter, folded_words
from engines.pg_projection import scope_terms
from engines.word_dictionary import Expansions, WordDictionary

Observer = Callable[[str, float], None]

# Rows an ordered (loosest) pass may read before ordering them.
ORDERED_PASS_CAP = 2000
# Patients born on the typed date read when no name agrees (see names_with_date).
DOB_ALONE_ROWS = 5


class PostgresEngine:
    name = "postgres"

    def __init__(self, pool: ConnectionPool, *, observe: Observer | None = None) -> None:
        self.pool = pool
        self._observe = observe or (lambda kind, seconds: None)
        self.words = WordDictionary(lambda: load_words(pool))

    # -- reads ---------------------------------------------------------------

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        with self.pool.connection() as conn:
            return find_candidates(conn, query, observe=self._observe, expand=self.words.expand)

    def term_counts(self, keys: Sequence[str]) -> dict[str, int]:
        """Per-clinic counts of name words and dates, for evidence weights (core.term_counts)."""
        with self.pool.connection() as conn:
            return term_counts.lookup(conn, keys)

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "select id, doc from patient_search.patients where id = %s and clinic_id = any(%s)",
                (patient_id, list(clinic_ids)),
            ).fetchone()
        return _candidate(row) if row else None

    def lookup(
        self, term_sets: Sequence[Sequence[str]], clinic_ids: tuple[str, ...]
    ) -> list[Candidate]:
        """Active patients holding every term of at least one set (booking lookups)."""
        if not term_sets:
            return []
        contains = sql.SQL(" or ").join(
            sql.SQL("terms @> {}::text[]").format(scope_terms(clinic, terms))
            for terms in term_sets
            for clinic in sorted(set(clinic_ids))
        )
        query = sql.SQL(
            "select id, doc from patient_search.patients "
            "where clinic_id = any({}) and active and ({}) order by id limit 10"
        ).format(list(clinic_ids), contains)
        started = time.perf_counter()
        with self.pool.connection() as conn:
            rows = conn.execute(query).fetchall()
        self._observe("lookup", time.perf_counter() - started)
        return [_candidate(r) for r in rows]


def load_words(pool: ConnectionPool) -> list[tuple[str, int]]:
    with pool.connection() as conn:
        rows = conn.execute("select term, frequency from patient_search.name_dictionary").fetchall()
    return [(r[0], r[1]) for r in rows]


def _candidate(row: tuple[Any, ...]) -> Candidate:
    doc = row[1]
    return Candidate(id=row[0], patient=doc["patient"], match=doc["match"])


# Prefix completions and typo corrections per typed word (engines.word_dictionary).
Expander = Callable[[Sequence[NameToken]], Expansions]
Scoper = Callable[[Iterable[str]], list[str]]
# A name level: its name, the terms that count per typed word, and an order (or none).
Level = tuple[str, list[tuple[str, ...]], sql.Composable | None]


def _name_levels(expand: Expander, names: Sequence[NameToken], scoped: Scoper) -> Iterator[Level]:
    """Per name word, the terms that count at each level, strict to loose, with an order.

    exact: the word and its nickname group; completed: plus prefix completions;
    close: plus typo corrections and the phonetic code. The dictionary is only
    asked when the exact level did not find enough. Only the close level mixes
    near and far matches, so only it is ordered.
    """
    exact = [t.alternatives for t in names]
    yield "exact", exact, None
    prefixes, fuzzy = expand(names)
    completed = [(*t.alternatives, *prefixes[t.text]) for t in names]
    yield "completed", completed, None
    typos = [tuple(fuzzy[t.text]) for t in names]
    close = [(*c, *t.phonetic, *f) for c, t, f in zip(completed, names, typos, strict=True)]
    yield "close", close, _closeness(exact, completed, typos, scoped)


def _closeness(
    exact: list[tuple[str, ...]],
    completed: list[tuple[str, ...]],
    typos: list[tuple[str, ...]],
    scoped: Scoper,
) -> sql.Composable:
    """Rows matching more words more closely first: exact 3, completed 2, typo 1.

    A sound-alike code scores nothing here: one stored word's code can stand for
    two typed words at once (Luis ~ LS ~ Loez), which would float every Luis.
    """
    parts = [
        sql.SQL(
            "(case when terms && {}::text[] then 3 when terms && {}::text[] then 2 "
            "when terms && {}::text[] then 1 else 0 end)"
        ).format(scoped(e), scoped(c), scoped(f) or [""])
        for e, c, f in zip(exact, completed, typos, strict=True)
    ]
    return sql.SQL("{} desc, id").format(sql.SQL(" + ").join(parts))


def find_candidates(
    conn: psycopg.Connection[Any],
    query: CandidateQuery,
    *,
    observe: Observer,
    expand: Expander,
) -> list[Candidate]:
    """Candidates for the re-ranker, from the strictest pass that finds enough.

    Only the loosest level is ordered (by closeness); the others are homogeneous
    enough for the re-ranker to order, and an unordered LIMIT stops reading early
    even when a common name matches thousands. Their order is still
    deterministic for the same projection, which keeps pagination stable.
    """
    return CandidateSearch(conn, query, observe=observe, expand=expand).run()


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
        expand: Expander,
    ) -> None:
        self.conn = conn
        self.query = query
        self.observe = observe
        self.expand = expand
        self.clinics = sorted(set(query.clinic_ids))
        self.found: dict[str, Candidate] = {}
        self.base: list[sql.Composable] = [sql.SQL("clinic_id = any({})").format(self.clinics)]
        if not query.include_inactive:
            self.base.append(sql.SQL("active"))
        self.base.extend(filter_condition(f) for f in query.filters)
        self.weak = [self.overlaps(query.weak_terms)] if query.weak_terms else []
        self.dates = [
            (kind, self.overlaps(terms))
            for kind, terms in (("dob", query.dob_terms), ("dob_near", query.dob_near_terms))
            if terms
        ]
        # Name levels reached so far, pulled lazily from the ladder: the dictionary
        # is asked only if the exact level did not find enough.
        self.levels: list[Level] = []
        self.ladder = _name_levels(self.expand, query.names, self.scoped)

    def run(self) -> list[Candidate]:
        # Every pass must go through the terms index: with LIMIT and skewed name
        # frequencies the planner otherwise bets on a sequential scan and can lose
        # by seconds (measured at 1M patients).
        self.conn.execute("set local enable_seqscan = off")
        self.conn.execute("set local enable_indexscan = off")
        if self.query.strong_terms:
            self.run_pass("identifier", [self.overlaps(self.query.strong_terms)])
        if self.query.names:
            if self.dates:
                self.names_with_date()
            self.names_alone()
            self.last_resorts()
        else:
            self.without_name()
        return list(self.found.values())

    # -- passes, in the order `run` tries them ---------------------------------

    def names_with_date(self) -> None:
        """A typed date narrows every level before any level is tried without it.

        So a crowd of namesakes never hides the patient born on that date. The
        first pass that finds someone ends the date ladder: looser ones would
        only add patients the re-ranker puts below them.
        """
        before = len(self.found)
        for level, words, order in self.ladder:
            self.levels.append((level, words, order))
            for date_kind, date in self.dates:
                conds = [*(self.overlaps(w) for w in words), date, *self.weak]
                self.run_pass(f"{level}_{date_kind}", conds, order=order)
                if len(self.found) > before:
                    break
            if len(self.found) > before or self.enough():
                break
        if len(self.found) == before:
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

    def names_alone(self) -> None:
        for i in range(3):
            if self.enough():
                break
            if i == len(self.levels):
                self.levels.append(next(self.ladder))
            level, words, order = self.levels[i]
            self.run_pass(level, [*(self.overlaps(w) for w in words), *self.weak], order=order)

    def last_resorts(self) -> None:
        """When the levels did not fill the page: any one word, closest first (a name
        part entered all differently, a married name); then, when nothing matched at
        all, whole-name trigram similarity."""
        if not self.enough() and len(self.query.names) > 1:
            order = self.levels[-1][2] if self.levels else None
            self.run_pass("any_name", [self.any_word(), *self.weak], order=order)
        name_text = self.query.name_text
        if not self.found and name_text:
            self.conn.execute("set local pg_trgm.similarity_threshold = 0.3")
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

    def scoped(self, terms: Iterable[str]) -> list[str]:
        wanted = sorted(set(terms))
        return [t for c in self.clinics for t in scope_terms(c, wanted)]

    def overlaps(self, terms: Sequence[str]) -> sql.Composable:
        return sql.SQL("terms && {}::text[]").format(self.scoped(terms))

    def any_word(self) -> sql.Composable:
        """Any term of any typed word, at every level reached so far."""
        return self.overlaps([t for _, words, _ in self.levels for terms in words for t in terms])

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
        started = time.perf_counter()
        fetched = self.conn.execute(stmt).fetchall()
        self.observe(kind, time.perf_counter() - started)
        for row in fetched:
            if row[0] not in self.found:
                self.found[row[0]] = _candidate(row)


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
