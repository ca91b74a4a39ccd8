"""Candidate retrieval from the PostgreSQL projection.

Passes run from strict to loose and stop once enough candidates are found:
identifiers, every name word exactly (with the date), every name word with
prefix and typo expansions from the word dictionary, the date with any name
word, any name word, and finally whole-name trigram similarity. Order within
the result set is decided later by the re-ranker; a pass only has to find
the right patient. Every pass filters by clinic inside the query.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from engines.base import Candidate, CandidateQuery, NameToken

# Upper bound for a prefix range scan on the C-collated dictionary.
_MAX_CHAR = chr(0x10FFFF)

_EXPANSIONS = sql.SQL(
    """
    select q.tok, d.term from unnest(%(prefix_tokens)s::text[]) q(tok),
      lateral (select term from patient_search.name_dictionary
               where term >= q.tok and term < q.tok || %(max_char)s and term <> q.tok
               order by frequency desc, term limit %(prefix_limit)s) d
    union all
    select q.tok, d.term from unnest(%(fuzzy_tokens)s::text[]) q(tok),
      lateral (select term from patient_search.name_dictionary
               where term %% q.tok
                 and levenshtein_less_equal(term, q.tok, 2)
                     <= case when length(q.tok) <= 4 then 1 else 2 end
                 and term <> q.tok
               order by similarity(term, q.tok) desc, frequency desc, term
               limit %(fuzzy_limit)s) d
    """
)

Observer = Callable[[str, float], None]


class PostgresEngine:
    name = "postgres"

    def __init__(self, pool: ConnectionPool, *, observe: Observer | None = None) -> None:
        self.pool = pool
        self._observe = observe or (lambda kind, seconds: None)

    # -- reads ---------------------------------------------------------------

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        with self.pool.connection() as conn:
            return find_candidates(conn, query, observe=self._observe)

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
            sql.SQL("terms @> {}::text[]").format(list(terms)) for terms in term_sets
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


def _candidate(row: tuple[Any, ...]) -> Candidate:
    doc = row[1]
    return Candidate(id=row[0], patient=doc["patient"], match=doc["match"])


def expand_tokens(
    conn: psycopg.Connection[Any], tokens: Sequence[NameToken], *, prefix_limit: int = 25
) -> dict[str, set[str]]:
    """Dictionary words a typed word may stand for: completions and near spellings."""
    prefix_tokens = sorted({t.text for t in tokens if t.prefix and t.text})
    fuzzy_tokens = sorted({t.text for t in tokens if len(t.text) >= 3})
    out: dict[str, set[str]] = {t.text: set() for t in tokens}
    if not prefix_tokens and not fuzzy_tokens:
        return out
    conn.execute("set local pg_trgm.similarity_threshold = 0.2")
    rows = conn.execute(
        _EXPANSIONS,
        {
            "prefix_tokens": prefix_tokens,
            "fuzzy_tokens": fuzzy_tokens,
            "max_char": _MAX_CHAR,
            "prefix_limit": prefix_limit,
            "fuzzy_limit": 8,
        },
    ).fetchall()
    for token, word in rows:
        out[token].add(f"n:{word}")
    return out


def _closeness(names: Sequence[NameToken], expansions: dict[str, set[str]]) -> sql.Composable:
    """Order for widened passes: rows matching more words more closely come first."""
    parts = []
    for t in names:
        parts.append(
            sql.SQL(
                "(case when terms && {}::text[] then 3 when terms && {}::text[] then 2 "
                "when terms && {}::text[] then 1 else 0 end)"
            ).format(
                sorted(t.alternatives),
                sorted(expansions[t.text]) or ["n:"],
                sorted(t.phonetic) or ["n:"],
            )
        )
    return sql.SQL("{} desc, sort_key, id").format(sql.SQL(" + ").join(parts))


def find_candidates(
    conn: psycopg.Connection[Any], query: CandidateQuery, *, observe: Observer
) -> list[Candidate]:
    found: dict[str, Candidate] = {}
    limit = query.limit
    base: list[sql.Composable] = [sql.SQL("clinic_id = any({})").format(list(query.clinic_ids))]
    if not query.include_inactive:
        base.append(sql.SQL("active"))

    def run(kind: str, conds: list[sql.Composable], order: sql.Composable | None = None) -> None:
        if len(found) >= limit:
            return
        where = sql.SQL(" and ").join([*base, *conds])
        stmt = sql.SQL("select id, doc from patient_search.patients where {} order by {} limit {}")
        started = time.perf_counter()
        rows = conn.execute(
            stmt.format(where, order or sql.SQL("sort_key, id"), sql.Literal(limit))
        ).fetchall()
        observe(kind, time.perf_counter() - started)
        for row in rows:
            if row[0] not in found:
                found[row[0]] = _candidate(row)

    def overlaps(terms: Sequence[str]) -> sql.Composable:
        return sql.SQL("terms && {}::text[]").format(sorted(set(terms)))

    if query.strong_terms:
        run("identifier", [overlaps(query.strong_terms)])

    weak = [overlaps(query.weak_terms)] if query.weak_terms else []
    dob = [overlaps(query.dob_terms)] if query.dob_terms else []
    near = [overlaps(query.dob_near_terms)] if query.dob_near_terms else []
    names = query.names

    if names:
        exact = [overlaps(t.alternatives) for t in names]
        if dob:
            run("name_dob", [*exact, *dob, *weak])
        run("name", [*exact, *weak])
        expansions = expand_tokens(conn, names)
        wide = [(*t.alternatives, *t.phonetic, *expansions[t.text]) for t in names]
        widened = [overlaps(w) for w in wide]
        closeness = _closeness(names, expansions)
        if dob:
            run("expanded_dob", [*widened, *dob, *weak], order=closeness)
        run("expanded", [*widened, *weak], order=closeness)
        if dob or near:
            dates = overlaps([*query.dob_terms, *query.dob_near_terms])
            run("dob_any_name", [dates, overlaps([w for ws in wide for w in ws])], order=closeness)
        if len(names) > 1:
            run("any_name", [overlaps([w for ws in wide for w in ws]), *weak], order=closeness)
        if query.name_text:
            conn.execute("set local pg_trgm.similarity_threshold = 0.3")
            run(
                "trigram",
                [sql.SQL("name_text % {}").format(query.name_text)],
                order=sql.SQL("similarity(name_text, {}) desc, id").format(query.name_text),
            )
    elif dob:
        run("dob", [*dob, *weak])
        if near:
            run("dob_near", [*near, *weak])
    elif weak:
        run("phone_ending", weak)
    return list(found.values())
