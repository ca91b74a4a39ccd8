"""The one re-ranker: whichever engine found the candidates, they are ordered here.

Exact first. Tiers, best first:
  8 identifier (MRN, full phone, email)
  7 every typed name word exact, date of birth exact
  6 every typed name word exact (date near, or none typed); date alone exact
  5 date exact with a close name (prefix, nickname, phonetic, typo); phone ending alone
  4 every word exact or completed (prefix)
  3 nickname or phonetic
  2 typo (fuzzy)
  1 some of the words
A typed date that contradicts the record costs two tiers, a contradicting
phone or MRN one. Within a tier a sub-score in [0, 1) orders by name
quality, coverage of given and family name, date closeness and whole-name
similarity. score = (tier + sub) / 9, in [0, 1].
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal, Protocol

from rapidfuzz.fuzz import ratio, token_set_ratio, token_sort_ratio

from core import term_counts, terms
from core.documents import MatchFields, PatientRecord
from engines.base import Candidate
from normalizers.names import folded_nicknames_meet, is_particle, phonetic_keys, typo_distance

# "slip" is a one-character typo in a word of four letters or more: as telling as a
# sound-alike, so it ranks with phonetic; other typos rank below.
KIND_RANK = {"exact": 5, "prefix": 4, "nickname": 3, "phonetic": 3, "slip": 3, "fuzzy": 2}
# What the API reports: nickname equivalence is shown as phonetic (sound-alike) matching.
PUBLIC_KIND = {
    "exact": "exact",
    "prefix": "prefix",
    "nickname": "phonetic",
    "phonetic": "phonetic",
    "slip": "fuzzy",
    "fuzzy": "fuzzy",
}
FIELD_OF = {"given": "given_name", "middle": "middle_name", "family": "family_name"}


@dataclass(frozen=True)
class RankQuery:
    """The normalized query as the ranker needs it (built by search_api.plan)."""

    names: tuple[str, ...] = ()
    roles: tuple[str | None, ...] = ()  # 'given' / 'family' when the input said so
    birth_dates: tuple[dt.date, ...] = ()
    phones: tuple[str, ...] = ()  # E.164
    phone_nationals: tuple[str, ...] = ()
    phone_fragments: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    mrns: tuple[str, ...] = ()
    birth_years: tuple[int, ...] = ()  # four digits typed with a name: also a phone ending
    literal: str = ""  # the typed names, case-folded with accents kept (see literal_text)
    # What this search has matched so far (see NameMemo); not part of the query.
    memo: NameMemo = field(default_factory=lambda: NameMemo(), compare=False, repr=False)

    @cached_property
    def particles(self) -> tuple[bool, ...]:
        """Per typed word, whether it is a family-name particle (de, van): asked of every
        stored name the search ranks, worked out once."""
        return tuple(is_particle(t) for t in self.names)

    @cached_property
    def typed_name(self) -> str:
        return " ".join(self.names)

    @cached_property
    def identified(self) -> bool:
        """Whether any identifier was typed (most searches are names alone)."""
        return any(
            (self.phones, self.phone_nationals, self.phone_fragments, self.emails, self.mrns)
        )


Grade = Literal["certain", "probable", "possible"]


class Ranked:
    """One candidate's place on the page. Built by `rank`, which grades it in place.
    A plain class, not a dataclass: mypyc compiles its __init__, where a dataclass's is
    generated at import and interpreted, 1.5-2.5 us per result (issue 11, twentieth pass)."""

    __slots__ = (
        "anchored",
        "candidate",
        "grade",
        "match",
        "matched",
        "probability",
        "score",
        "sort_key",
        "weight",
    )

    def __init__(
        self,
        candidate: Candidate,
        score: float,
        match: str,
        matched: tuple[str, ...],
        sort_key: tuple[Any, ...],
        weight: float = 0.0,
        anchored: bool = False,
    ) -> None:
        self.candidate = candidate
        self.score = score
        self.match = match
        self.matched = matched
        self.sort_key = sort_key
        self.weight = weight  # evidence, log2 likelihood ratio (see evidence)
        self.probability = 0.0  # share of the evidence this result holds (see grade_results)
        self.anchored = anchored  # an identifier or the exact date of birth agrees
        self.grade: Grade = "possible"  # see grade_results

    def __repr__(self) -> str:
        return f"Ranked({self.candidate.id!r}, score={self.score}, grade={self.grade!r})"


@lru_cache(maxsize=65536)
def _phonetic(token: str) -> frozenset[str]:
    return frozenset(phonetic_keys(token))


@lru_cache(maxsize=65536)
def _primary_code(token: str) -> str | None:
    """The typed word's main pronunciation only; alternates match too loosely (geeen ~ John)."""
    codes = phonetic_keys(token)
    return codes[0] if codes else None


def word_match(typed: str, stored: str, *, nicknames: bool) -> tuple[str, float] | None:
    """How a typed word matches a stored word: kind and quality in (0, 1]. A search
    asks through its NameMemo, which remembers the answers for its other candidates."""
    if typed == stored:
        return "exact", 1.0
    if stored.startswith(typed):
        return "prefix", 0.85 + 0.15 * len(typed) / len(stored)
    if nicknames and folded_nicknames_meet(typed, stored):
        return "nickname", 0.8
    if len(typed) >= 3 and _primary_code(typed) in _phonetic(stored):
        return "phonetic", 0.8
    if len(typed) >= 3:
        distance = typo_distance(typed, stored)
        if distance is not None:
            quality = 1.0 - distance / max(len(typed), len(stored))
            return ("slip" if distance == 1 and len(typed) >= 4 else "fuzzy"), quality
    return None


# A record's name words: given, middle, family, family keys, given keys.
NameWords = tuple[tuple[str, ...], ...]


class NameMemo:
    """Name matches one search has worked out, for the rest of that search.

    A search's candidates share names (a crowd of John Smiths, a family), so its
    pairs of typed and stored words repeat. Kept per search rather than in caches
    for the life of the process: the process-wide caches (word_match's and
    _match_names's, which this replaces) held every pair a search added until it
    was pushed out, 150-200 objects a search that the cycle collector moved up its
    generations and walked again, in pauses of 40-200 ms that stopped the worker
    (issue 11, sixteenth pass). Forgotten with its search, by reference counting:
    it ranks as fast as the process-wide caches did."""

    __slots__ = ("names", "words")

    def __init__(self) -> None:
        self.words: dict[tuple[str, str, bool], tuple[str, float] | None] = {}
        self.names: dict[NameWords, _NameResult] = {}

    def word_match(self, typed: str, stored: str, nicknames: bool) -> tuple[str, float] | None:
        key = (typed, stored, nicknames)
        if key in self.words:
            return self.words[key]
        found = self.words[key] = word_match(typed, stored, nicknames=nicknames)
        return found


def _stored_words(stored: NameWords) -> list[tuple[str, str]]:
    """(field, word) pairs, compound keys included (smithjones, delacruz)."""
    given, middle, family, family_keys, given_keys = stored
    words: list[tuple[str, str]] = []
    words.extend(("given", w) for w in given)
    words.extend(("middle", w) for w in middle)
    words.extend(("family", w) for w in family)
    words.extend(("family", w) for w in family_keys if ("family", w) not in words)
    words.extend(("given", w) for w in given_keys if ("given", w) not in words)
    return words


class _NameResult:
    """How the typed names match one record's (a plain class: see Ranked)."""

    __slots__ = (
        "fields",
        "kind",
        "level",
        "pairs",
        "quality",
        "similarity",
        "swapped",
        "unmatched",
    )

    def __init__(
        self,
        kind: str | None,  # weakest kind over typed words; 'partial' when some are unmatched
        quality: float,
        level: float,  # mean KIND_RANK over typed words (unmatched count 0)
        fields: frozenset[str],
        swapped: bool,
        # (typed word, stored word, kind) per typed word that matched, for evidence weights
        pairs: tuple[tuple[str, str, str], ...] = (),
        unmatched: int = 0,  # typed words (particles aside) that matched nothing
        similarity: float = 0.0,  # whole-name closeness (see _name_similarity)
    ) -> None:
        self.kind = kind
        self.quality = quality
        self.level = level
        self.fields = fields
        self.swapped = swapped
        self.pairs = pairs
        self.unmatched = unmatched
        self.similarity = similarity


NO_NAME = _NameResult(None, 0.0, 0.0, frozenset(), False)


def match_names(query: RankQuery, match: MatchFields) -> _NameResult:
    """How the typed names match the record's; remembered for the search (NameMemo)."""
    stored: NameWords = (
        tuple(match.get("given") or ()),
        tuple(match.get("middle") or ()),
        tuple(match.get("family") or ()),
        tuple(match.get("family_keys") or ()),
        tuple(match.get("given_keys") or ()),
    )
    memo = query.memo
    found = memo.names.get(stored)
    if found is None:
        found = memo.names[stored] = _match_names(query, stored)
    return found


def _match_names(query: RankQuery, stored: NameWords) -> _NameResult:
    names, roles, memo = query.names, query.roles, query.memo
    words = _stored_words(stored)
    # Best first: strongest kind, then quality, then typed and stored order (negated, so
    # that the tuples sort without a key function).
    pairs: list[tuple[int, float, int, int, str]] = []
    for qi, typed in enumerate(names):
        for wi, (fld, word) in enumerate(words):
            found = memo.word_match(typed, word, fld != "family")
            if found:
                kind, quality = found
                pairs.append((-KIND_RANK[kind], -quality, qi, wi, kind))
    pairs.sort()
    used_q: dict[int, tuple[str, float, str]] = {}
    stored_of: dict[int, str] = {}
    used_w: set[int] = set()
    # Two typed words that together spell one stored word ("mc donald" for McDonald,
    # "garcia lopez" for Garcialopez) are both exact matches of it.
    for qi in range(len(names) - 1):
        joined = names[qi] + names[qi + 1]
        for wi, (fld, word) in enumerate(words):
            if word == joined and wi not in used_w and qi not in used_q:
                used_q[qi] = used_q[qi + 1] = ("exact", 1.0, fld)
                stored_of[qi] = word
                used_w.add(wi)
                break
    for _rank, negated, qi, wi, kind in pairs:
        if qi in used_q or wi in used_w:
            continue
        used_q[qi] = (kind, -negated, words[wi][0])
        stored_of[qi] = words[wi][1]
        used_w.add(wi)
    # Remembered with the rest for the search's other candidates of this name.
    similarity = _name_similarity(query.typed_name, " ".join([*stored[0], *stored[2]]))
    if not used_q:
        return _NameResult(None, 0.0, 0.0, frozenset(), False, similarity=similarity)
    particles = query.particles
    required = [qi for qi in range(len(names)) if not (particles[qi] and qi not in used_q)]
    unmatched = [qi for qi in required if qi not in used_q]
    kinds = [used_q[qi][0] for qi in used_q]
    weakest = min(kinds, key=lambda k: KIND_RANK[k])
    quality = sum(v[1] for v in used_q.values()) / max(len(required), 1)
    swapped = any(
        roles[qi] is not None and roles[qi] != fld and fld != "middle"
        for qi, (_k, _q, fld) in used_q.items()
        if qi < len(roles)
    )
    fields = frozenset(v[2] for v in used_q.values())
    level = sum(KIND_RANK[used_q[qi][0]] for qi in required if qi in used_q) / max(len(required), 1)
    agreed = tuple((names[qi], stored_of[qi], used_q[qi][0]) for qi in sorted(stored_of))
    return _NameResult(
        "partial" if unmatched else weakest,
        quality,
        level,
        fields,
        swapped,
        agreed,
        len(unmatched),
        similarity,
    )


def _one_digit_apart(a: str, b: str) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


def match_date(query: RankQuery, stored: str | None) -> tuple[str | None, float]:
    """('exact'|'near'|'mismatch'|None, quality)."""
    if not query.birth_dates:
        return None, 0.0
    if not stored:
        return "mismatch", 0.0
    for i, reading in enumerate(query.birth_dates):
        if reading.isoformat() == stored:
            return "exact", 1.0 if i == 0 else 0.95
    stored_date = dt.date.fromisoformat(stored)
    for reading in query.birth_dates:
        swapped = (reading.month, reading.day) == (stored_date.day, stored_date.month)
        if swapped and reading.year == stored_date.year:
            return "near", 0.6
    # One digit off the date as first read only: a slip on a second reading of an
    # ambiguous date is two guesses away from what was typed.
    if _one_digit_apart(query.birth_dates[0].strftime("%Y%m%d"), stored.replace("-", "")):
        return "near", 0.5
    return "mismatch", 0.0


def match_identifiers(query: RankQuery, match: MatchFields) -> tuple[set[str], set[str], bool]:
    """(fields matched exactly, fields matched partially, contradiction)."""
    exact: set[str] = set()
    partial: set[str] = set()
    if not query.identified:
        return exact, partial, False
    mrn = match.get("mrn")
    if mrn and mrn in query.mrns:
        exact.add("mrn")
    phones = set(match.get("phones") or ())
    nationals = set(match.get("national") or ())
    if phones & set(query.phones) or nationals & set(query.phone_nationals):
        exact.add("phone")
    elif any(n.endswith(f) for n in nationals for f in query.phone_fragments):
        partial.add("phone")
    if set(match.get("emails") or ()) & set(query.emails):
        exact.add("email")
    typed_full_ids = bool(query.phones or query.emails)
    contradiction = typed_full_ids and not exact
    return exact, partial, contradiction


def _tier(
    query: RankQuery,
    name: _NameResult,
    date_kind: str | None,
    ids_exact: set[str],
    ids_partial: set[str],
) -> int | None:
    if ids_exact:
        return 8
    if query.names:
        if name.kind is None:
            return 1 if date_kind == "exact" else None
        if name.kind == "exact":
            return 7 if date_kind == "exact" else 6
        if date_kind == "exact" and name.kind != "partial":
            return 5
        if name.kind == "partial":
            return 4 if date_kind == "exact" else 1
        # Mixed matches count by their mean: one exact word and one typo (3.5) is
        # as close as two sound-alike words (3.0), and better within that tier.
        return 4 if name.level >= 4 else 3 if name.level >= 3 else 2
    if date_kind == "exact":
        return 6
    if date_kind == "near":
        return 4
    if ids_partial:
        return 5
    return None


def _name_similarity(typed: str, stored: str) -> float:
    """Whole-name closeness, in any word order and ignoring where the spaces fall."""
    return (
        max(
            token_sort_ratio(typed, stored),
            ratio(typed.replace(" ", ""), stored.replace(" ", "")),
        )
        / 100
    )


def literal_text(text: str) -> str:
    """Case-folded with accents kept, for tie-breaking only; empty for plain ASCII.

    Someone who types "José" likely copies the record; someone who types
    "Jose" may just not type accents, so plain ASCII prefers neither spelling.
    """
    text = unicodedata.normalize("NFC", text).casefold()
    return "" if text.isascii() else text


def _literal_name(patient: PatientRecord) -> str:
    parts = (patient.get("given_name"), patient.get("middle_name"), patient.get("family_name"))
    return literal_text(" ".join(p for p in parts if p))


def rank_one(query: RankQuery, candidate: Candidate, counts: Counts | None = None) -> Ranked | None:
    match = candidate.match
    name = match_names(query, match) if query.names else NO_NAME
    date_kind, date_quality = match_date(query, match.get("birth_date"))
    ids_exact, ids_partial, contradiction = match_identifiers(query, match)
    born_in_year = _born_in_typed_year(query, match.get("birth_date"))
    tier = _tier(query, name, date_kind, ids_exact, ids_partial)
    if tier is None:
        return None
    if tier < 8:
        if date_kind == "mismatch":
            tier -= 2
        if contradiction or (query.phone_fragments and not ids_partial and not born_in_year):
            tier -= 1
        tier = max(tier, 0)
    coverage = (("given" in name.fields) + ("family" in name.fields)) / 2
    # As typed, accents and all: breaks ties between José and Jose when both fold alike.
    literal = (
        token_set_ratio(query.literal, _literal_name(candidate.patient)) / 100
        if query.literal
        else 0.0
    )
    sub = (
        0.35 * name.quality
        + 0.15 * name.level / 5
        + 0.2 * coverage
        + 0.15 * (date_quality if date_kind in ("exact", "near") else 0.0)
        + 0.1 * name.similarity
        + 0.03 * literal
        + 0.02 * (not name.swapped)
        # Four digits that end the phone tell more than a year of birth (1 in 10,000
        # against 1 in about 90): agreeing as a year only comes after.
        - 0.03 * (born_in_year and not ids_partial)
    )
    sub = min(max(sub, 0.0), 0.999)
    weight = evidence(query, candidate, name, date_kind, ids_exact, counts or {})
    score = _score(query, name, date_kind, ids_exact, ids_partial, tier, sub, weight)
    patient = candidate.patient
    return Ranked(
        candidate=candidate,
        score=score,
        match=_public_kind(query, name, date_kind, ids_exact),
        matched=_matched_fields(name, date_kind, ids_exact | ids_partial, born_in_year),
        sort_key=(
            -score,
            not patient.get("active", True),  # active before inactive
            -_updated(match),  # then the most recently updated record
            (patient.get("family_name") or "").casefold(),
            (patient.get("given_name") or "").casefold(),
            candidate.id,
        ),
        weight=round(weight, 3),
        anchored=bool(ids_exact) or date_kind == "exact",
    )


def _public_kind(
    query: RankQuery, name: _NameResult, date_kind: str | None, ids_exact: set[str]
) -> str:
    if ids_exact:
        return "exact"
    if name.kind in PUBLIC_KIND:
        return PUBLIC_KIND[name.kind]
    if name.kind == "partial":
        return "fuzzy"
    return "exact" if date_kind == "exact" and not query.names else "fuzzy"


def _born_in_typed_year(query: RankQuery, stored: str | None) -> bool:
    """The record's year of birth is one typed (four digits with the name)."""
    return bool(query.birth_years and stored and int(stored[:4]) in query.birth_years)


def _matched_fields(
    name: _NameResult, date_kind: str | None, ids: set[str], born_in_year: bool
) -> tuple[str, ...]:
    matched = {FIELD_OF[f] for f in name.fields} | ids
    if date_kind in ("exact", "near") or born_in_year:
        matched.add("birth_date")
    return tuple(sorted(matched))


def _updated(match: MatchFields) -> float:
    value = match.get("updated_at")
    try:
        return dt.datetime.fromisoformat(value).timestamp() if value else 0.0
    except ValueError:
        return 0.0


# -- evidence (Fellegi-Sunter) ---------------------------------------------------------------

# How much of a value's weight an agreement of each kind keeps: a sound-alike or a typo
# could also be another person's name, so it tells less than the exact word.
KIND_FACTOR = {
    "exact": 1.0,
    "prefix": 0.85,
    "nickname": 0.8,
    "phonetic": 0.7,
    "slip": 0.75,
    "fuzzy": 0.55,
}
UNMATCHED_WORD = -4.0  # a typed word the record does not have at all
DATE_NEAR_PENALTY = 5.0  # swapped or one digit off: ~40 dates are that close to any date
DATE_CONTRADICTS = -6.0
DATE_MISSING = -1.0
IDENTIFIER_WEIGHT = {"mrn": 20.0, "phone": 12.0, "email": 14.0}
# A clinic counts as at least this big: in a small clinic a date or name held by one
# patient in 35 is still as rare among people as in a large one (and without counts,
# evidence is uniform at this size).
MIN_POPULATION = 1000


def date_keys(query: RankQuery, candidates: Iterable[Candidate]) -> list[str]:
    """The term-count keys of the candidates' dates of birth (see core.term_counts): what
    evidence weighs a typed date's agreement by, so none without a typed date. Name words
    and clinic sizes are counted by the word dictionary, asked as evidence needs them
    (engines.pg_search.DictionaryCounts)."""
    if not query.birth_dates:
        return []
    keys: set[str] = set()
    for c in candidates:
        if born := c.match.get("birth_date"):
            clinic = str(c.patient.get("clinic_id") or "")
            keys.add(term_counts.key(clinic, terms.term(terms.DOB, born)))
    return sorted(keys)


class Counts(Protocol):
    """Patients of a clinic holding a term, by core.term_counts key; `default` for none."""

    def get(self, key: str, default: int, /) -> int: ...


def _telling(counts: Counts, clinic: str, term: str) -> float:
    """log2(patients / patients holding the value): bits of evidence an agreement carries."""
    total = max(counts.get(term_counts.key(clinic, term_counts.TOTAL), 0), MIN_POPULATION)
    holders = max(counts.get(term_counts.key(clinic, term), 1), 1)
    return max(math.log2(max(total, holders) / holders), 0.5)


def evidence(
    query: RankQuery,
    candidate: Candidate,
    name: _NameResult,
    date_kind: str | None,
    ids_exact: set[str],
    counts: Counts,
) -> float:
    """Log2 likelihood ratio that this record is the one meant: agreement on a rare
    value is strong evidence, on a common one weak; a contradiction counts against."""
    clinic = str(candidate.patient.get("clinic_id") or "")
    weight = sum(IDENTIFIER_WEIGHT.get(f, 0.0) for f in ids_exact)
    for _typed, stored, kind in name.pairs:
        weight += KIND_FACTOR.get(kind, 0.5) * _telling(counts, clinic, terms.name(stored))
    weight += UNMATCHED_WORD * name.unmatched
    born = candidate.match.get("birth_date")
    if date_kind in ("exact", "near") and born:
        telling = _telling(counts, clinic, terms.term(terms.DOB, born))
        weight += telling if date_kind == "exact" else max(telling - DATE_NEAR_PENALTY, 1.0)
    elif date_kind == "mismatch":
        weight += DATE_CONTRADICTS if born else DATE_MISSING
    return weight


# -- placing a result --------------------------------------------------------------------------

# With a typed date and name, results fall in bands, best first; within a band they are
# ordered by the band's own measure:
#   4 an identifier matched                       (the tier's sub-score)
#   3 every name word and the date exact          (the sub-score: exact first)
#   2 the date agrees (exact, swapped, one digit) with at least one name word: evidence
#   1 the rest: the date contradicts, or no name word agrees well: evidence (a full
#     name with another date before a stranger born that day, who is still on the page)
BANDS = 5
# A name word agrees when it is the stored word, its start, a nickname, a sound-alike or
# one slip of the hand away; two edits can turn most short names into another.
AGREEING = frozenset({"exact", "prefix", "nickname", "phonetic", "slip"})


def _band(
    name: _NameResult, date_kind: str | None, ids_exact: set[str], ids_partial: set[str]
) -> int:
    if ids_exact:
        return 4
    if name.kind == "exact" and date_kind == "exact":
        return 3
    if date_kind in ("exact", "near") and any(k in AGREEING for _t, _s, k in name.pairs):
        return 2
    return 1


def _score(
    query: RankQuery,
    name: _NameResult,
    date_kind: str | None,
    ids_exact: set[str],
    ids_partial: set[str],
    tier: int,
    sub: float,
    weight: float,
) -> float:
    """A score in [0, 1] whose order is the result order."""
    if not (query.birth_dates and query.names):
        if name.kind == "partial" and tier <= 1:
            # Some typed word matches nothing (a name part entered all differently): the
            # rarer the part that does agree, the likelier this is the one meant.
            sub = 0.9 * _squash(weight, 20, 16) + 0.1 * sub
        return round((tier + sub) / 9, 4)
    band = _band(name, date_kind, ids_exact, ids_partial)
    if band == 2:
        within = 0.9 * _squash(weight, 0, 8) + 0.1 * sub
    elif band == 1:
        within = 0.9 * _squash(weight, 20, 16) + 0.1 * sub
    else:
        within = sub
    return round((band + min(within, 0.999)) / BANDS, 4)


def _squash(weight: float, shift: float, scale: float) -> float:
    """Evidence into [0, 1), increasing: for ordering within a band."""
    return 1 - 2 ** (-max(weight + shift, 0.0) / scale)


def rank(
    query: RankQuery, candidates: Sequence[Candidate], counts: Counts | None = None
) -> list[Ranked]:
    """Score every candidate, drop those that match nothing, order best first, stably,
    and grade each result. `counts`: the clinics' term counts (without: uniform evidence)."""
    ranked = [r for c in candidates if (r := rank_one(query, c, counts)) is not None]
    ranked.sort(key=lambda r: r.sort_key)
    return grade_results(ranked)


# -- grades ------------------------------------------------------------------------------------

GRADES: tuple[Grade, ...] = ("certain", "probable", "possible")
# Calibrated on the Febrl 1-3 benchmark (bench/external.py): the share of results given
# each grade that are the right patient is at least 99 % for certain, 90 % for probable.
# Chosen from bench.external's calibration table (3,600 queries, 31,800 results): at
# >= 0.98 precision was 0.9994, in [0.7, 0.98) 0.925, leaving room for data not seen.
CERTAIN_AT = 0.98
PROBABLE_AT = 0.7
# The weight of "none of these": the one meant may be a patient the query does not
# describe well enough to find, or someone not in the clinic.
ELSEWHERE_WEIGHT = 4.0


def match_probabilities(weights: Sequence[float]) -> list[float]:
    """Each result's share of the evidence, against the others and "someone else"."""
    if not weights:
        return []
    top = max(max(weights), ELSEWHERE_WEIGHT)
    mass = [2 ** (w - top) for w in weights]
    total = sum(mass) + 2 ** (ELSEWHERE_WEIGHT - top)
    return [m / total for m in mass]


def grade_of(probability: float) -> Grade:
    """certain / probable / possible for a result's match probability."""
    if probability >= CERTAIN_AT:
        return "certain"
    if probability >= PROBABLE_AT:
        return "probable"
    return "possible"


def grade_results(ranked: list[Ranked]) -> list[Ranked]:
    """The results graded in place: what the search page marks and FHIR $match reports.

    A name alone, however rare, is never certain: certain also needs an identifier or
    the exact date of birth to agree (what a front desk or an MPI would link on)."""
    probabilities = match_probabilities([r.weight for r in ranked])
    for r, p in zip(ranked, probabilities, strict=True):
        grade = grade_of(p)
        r.probability = round(p, 4)
        r.grade = "probable" if grade == "certain" and not r.anchored else grade
    return ranked
