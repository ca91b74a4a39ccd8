"""What table name_keys holds besides name words: given-family word pairs.

A name key holds a name word (an `n:` term), or a given word and a family word of the
same patient joined by PAIR_SEP, which no name word holds: "james rodriguez". A two-word
crowd (10,000 James Rodriguezes) is then read by one key, O(page), where reading one
word and probing each patient for the other costs about ten patients probed per patient
kept. The first PAIRED_WORDS words of each field are paired, so a long name stays a few
keys. The projection writes (engines.pg_projection) and the migration that fills the
pairs of a projection built before them (core.schema) both spell them here.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

PAIR_SEP = " "
PAIRED_WORDS = 3


def name_pair(given: str, family: str) -> str:
    return f"{given}{PAIR_SEP}{family}"


def pairs_of(given: Sequence[str], family: Sequence[str]) -> list[str]:
    """A document's pairs, from its folded given and family words (doc.match)."""
    return [name_pair(g, f) for g in given[:PAIRED_WORDS] for f in family[:PAIRED_WORDS]]


def select_pairs(source: sql.Composable, which: sql.Composable) -> sql.Composed:
    """(clinic_id, pair, id) of `source`'s rows meeting `which`, as pairs_of spells them
    from the stored documents; each pair once per patient (a given name "Ann Ann").
    `doc::json`: migration 90 reads a projection that migration 110 has not yet moved
    from jsonb."""
    return sql.SQL(
        "select distinct p.clinic_id, g.word || {sep} || f.word, p.id from {source} p "
        "cross join lateral json_array_elements_text(p.doc::json->'match'->'given') "
        "  with ordinality g(word, n) "
        "cross join lateral json_array_elements_text(p.doc::json->'match'->'family') "
        "  with ordinality f(word, n) "
        "where {which} and g.n <= {paired} and f.n <= {paired}"
    ).format(
        sep=sql.Literal(PAIR_SEP), source=source, which=which, paired=sql.Literal(PAIRED_WORDS)
    )


def fill_pairs(table: sql.Composable, source: sql.Composable) -> sql.Composed:
    """Add the pairs of every patient of `source` that `table` lacks."""
    return sql.SQL("insert into {} (clinic_id, term, id) {} on conflict do nothing").format(
        table, select_pairs(source, sql.SQL("true"))
    )
