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

from core import term_counts
from engines.base import Candidate, CandidateQuery, NameToken
from engines.pg_projection import scope_terms
from engines.word_dictionary import WordDictionary
from normalizers.names import typo_distance

# Upper bound for a prefix range scan on the C-collated dictionary.
_MAX_CHAR = chr(0x10FFFF)

_EXPANSIONS = sql.SQL(
    """
    select q.tok, d.term, 'prefix' from unnest(%(prefix_tokens)s::text[]) q(tok),
      lateral (select term from patient_search.name_dictionary
               where term >= q.tok and term < q.tok || %(max_char)s and term <> q.tok
               order by frequency desc, term limit %(prefix_limit)s) d
    union all
    select q.tok, d.term, 'fuzzy' from unnest(%(fuzzy_tokens)s::text[]) q(tok),
      lateral (select term from patient_search.name_dictionary
               where term %% q.tok
                 and levenshtein_less_equal(term, q.tok, 2)
                     <= case when length(q.tok) <= 3 then 1 else 2 end
                 and term <> q.tok
               order by similarity(term, q.tok) desc, frequency desc, term
               limit %(fuzzy_limit)s) d
    union all
    -- Short words share too few trigrams with their typos (sahh/shah, loez/lopez):
    -- compare them with every word of about their length and first letter instead.
    select q.tok, d.term, 'fuzzy' from unnest(%(short_tokens)s::text[]) q(tok),
      lateral (select term from patient_search.name_dictionary
               where term >= left(q.tok, 1) and term < left(q.tok, 1) || %(max_char)s
                 and length(term) between length(q.tok) - 1 and length(q.tok) + 1
                 and term <> q.tok
                 and levenshtein_less_equal(term, q.tok, 2) <= 2
               order by levenshtein(term, q.tok), frequency desc, term
               limit %(fuzzy_limit)s) d
    """
)

Observer = Callable[[str, float], None]

# Rows an ordered (loosest) pass may read before ordering them.
ORDERED_PASS_CAP = 2000


class PostgresEngine:
    name = "postgres"

    def __init__(self, pool: ConnectionPool, *, observe: Observer | None = None) -> None:
        self.pool = pool
        self._observe = observe or (lambda kind, seconds: None)
        self.words = WordDictionary(lambda: load_words(pool))

    # -- reads ---------------------------------------------------------------

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        expand = self.words.expand if self.words.ready else None  # SQL until it is loaded
        with self.pool.connection() as conn:
            return find_candidates(conn, query, observe=self._observe, expand=expand)

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


def expand_tokens(
    conn: psycopg.Connection[Any], tokens: Sequence[NameToken], *, prefix_limit: int = 25
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Dictionary words a typed word may stand for: (completions, near spellings)."""
    prefix_tokens = sorted({t.text for t in tokens if t.prefix and t.text})
    fuzzy_tokens = sorted({t.text for t in tokens if len(t.text) >= 3})
    prefixes: dict[str, set[str]] = {t.text: set() for t in tokens}
    fuzzy: dict[str, set[str]] = {t.text: set() for t in tokens}
    if not prefix_tokens and not fuzzy_tokens:
        return prefixes, fuzzy
    conn.execute("set local pg_trgm.similarity_threshold = 0.2")
    rows = conn.execute(
        _EXPANSIONS,
        {
            "prefix_tokens": prefix_tokens,
            "fuzzy_tokens": fuzzy_tokens,
            "short_tokens": sorted({t for t in fuzzy_tokens if len(t) <= 5}),
            "max_char": _MAX_CHAR,
            "prefix_limit": prefix_limit,
            "fuzzy_limit": 8,
        },
    ).fetchall()
    for token, word, kind in rows:
        if kind == "prefix":
            prefixes[token].add(f"n:{word}")
        elif typo_distance(token, word) is not None:  # the same rule the re-ranker applies
            fuzzy[token].add(f"n:{word}")
    return prefixes, fuzzy


Expander = Callable[[Sequence[NameToken]], tuple[dict[str, set[str]], dict[str, set[str]]]]


def _name_levels(
    expand: Expander,
    names: Sequence[NameToken],
    scoped: Callable[[Iterable[str]], list[str]],
) -> Iterator[tuple[str, list[tuple[str, ...]], sql.Composable | None]]:
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
    scoped: Callable[[Iterable[str]], list[str]],
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
    expand: Expander | None = None,
) -> list[Candidate]:
    """Candidates for the re-ranker, from the strictest pass that finds enough.

    Only the loosest level is ordered (by closeness); the others are homogeneous
    enough for the re-ranker to order, and an unordered LIMIT stops reading early
    even when a common name matches thousands. Their order is still
    deterministic for the same projection, which keeps pagination stable.
    """
    found: dict[str, Candidate] = {}
    limit = query.limit
    clinics = sorted(set(query.clinic_ids))

    def scoped(terms: Iterable[str]) -> list[str]:
        wanted = sorted(set(terms))
        return [t for c in clinics for t in scope_terms(c, wanted)]

    # Every pass must go through the terms index: with LIMIT and skewed name
    # frequencies the planner otherwise bets on a sequential scan and can lose
    # by seconds (measured at 1M patients).
    conn.execute("set local enable_seqscan = off")
    conn.execute("set local enable_indexscan = off")
    base: list[sql.Composable] = [sql.SQL("clinic_id = any({})").format(clinics)]
    if not query.include_inactive:
        base.append(sql.SQL("active"))

    def full() -> bool:
        return len(found) >= limit

    def enough() -> bool:
        """The page asked for is filled: looser levels would only rank below it."""
        return len(found) >= min(query.enough, limit)

    def run(kind: str, conds: list[sql.Composable], order: sql.Composable | None = None) -> None:
        if full():
            return
        where = sql.SQL(" and ").join([*base, *conds])
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
        rows = conn.execute(stmt).fetchall()
        observe(kind, time.perf_counter() - started)
        for row in rows:
            if row[0] not in found:
                found[row[0]] = _candidate(row)

    def overlaps(terms: Sequence[str]) -> sql.Composable:
        return sql.SQL("terms && {}::text[]").format(scoped(terms))

    def any_word(levels: list[tuple[str, list[tuple[str, ...]], Any]]) -> sql.Composable:
        """Any term of any typed word, at every level reached so far."""
        return overlaps([t for _, words, _ in levels for terms in words for t in terms])

    if query.strong_terms:
        run("identifier", [overlaps(query.strong_terms)])

    weak = [overlaps(query.weak_terms)] if query.weak_terms else []
    dates = [
        (kind, overlaps(terms))
        for kind, terms in (("dob", query.dob_terms), ("dob_near", query.dob_near_terms))
        if terms
    ]
    names = query.names
    if names:
        # Lazy: the dictionary is asked only if the exact level did not find enough.
        ladder = _name_levels(expand or (lambda ts: expand_tokens(conn, ts)), names, scoped)
        levels: list[tuple[str, list[tuple[str, ...]], sql.Composable | None]] = []
        if dates:
            # A typed date narrows every level before any level is tried without it,
            # so a crowd of namesakes never hides the patient born on that date. The
            # first pass that finds someone ends the date ladder: looser ones would
            # only add patients the re-ranker puts below them.
            before = len(found)
            for level, words, order in ladder:
                levels.append((level, words, order))
                for date_kind, date in dates:
                    conds = [*(overlaps(w) for w in words), date, *weak]
                    run(f"{level}_{date_kind}", conds, order=order)
                    if len(found) > before:
                        break
                if len(found) > before or enough():
                    break
            if len(found) == before:
                # The date with any one word: a half-remembered or unusual name
                # still finds the patient born that day.
                any_date = overlaps([*query.dob_terms, *query.dob_near_terms])
                run("dob_any_name", [any_word(levels), any_date])
        for i in range(3):
            if enough():
                break
            if i == len(levels):
                levels.append(next(ladder))
            level, words, order = levels[i]
            run(level, [*(overlaps(w) for w in words), *weak], order=order)
        if not found and len(names) > 1:
            run("any_name", [any_word(levels), *weak])
        if not found and query.name_text:
            conn.execute("set local pg_trgm.similarity_threshold = 0.3")
            run(
                "trigram",
                [sql.SQL("name_text % {}").format(query.name_text)],
                order=sql.SQL("similarity(name_text, {}) desc, id").format(query.name_text),
            )
    else:
        for date_kind, date in dates:
            run(date_kind, [date, *weak])
        if not dates and weak:
            run("phone_ending", weak)
    return list(found.values())
