"""Everything about Meilisearch that needs no server: index settings, document shape,
document ids, filter strings and the searches built from a CandidateQuery.

Kept apart from the client code so it is unit tested here, where no Meilisearch
server can run. Relevance is decided by search_api.ranking for every engine;
Meilisearch only has to find the candidates, like engines.pg_search does.

Nicknames and phonetic codes are not a second list: documents carry the very
`k:` and `p:` terms that core.documents derives from normalizers.names, and the
query side uses the NameToken alternatives built by the same normalizers.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core import terms as index_terms
from core.documents import PatientDocument
from engines.base import CandidateQuery
from engines.word_dictionary import TermExpansions

PRIMARY_KEY = "pk"

# Meilisearch document ids: integers, or strings of a-z A-Z 0-9 - _ of at most 511 bytes.
MAX_ID_BYTES = 511
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
ENCODED_PREFIX = "b32_"

# Attribute names of a Meilisearch patient document.
NAME_ATTRIBUTES = ("family", "given", "middle", "name_keys", "nick", "phon")
IDENTIFIER_ATTRIBUTES = ("mrn", "phone", "national", "email", "dob", "last7", "last4")
# Priority order: names first (family, then given), then identifiers, phonetic codes last.
SEARCHABLE_ATTRIBUTES = [
    "family",
    "given",
    "middle",
    "name_keys",
    "nick",
    "mrn",
    "phone",
    "national",
    "email",
    "dob",
    "last7",
    "last4",
    "phon",
]
# `clinic` is a hex digest of the clinic id: Meilisearch lowercases and trims facet values
# (indexing and filters alike) and cuts them at 468 bytes, so raw ids would let clinic
# "CLINIC-A" match documents of "clinic-a".
FILTERABLE_ATTRIBUTES = ["clinic", "active", "keys"]
DISPLAYED_ATTRIBUTES = [PRIMARY_KEY, "patient", "match"]
# Exactness before proximity: a patient named exactly as typed beats a near spelling.
RANKING_RULES = ["words", "typo", "exactness", "proximity", "attribute", "sort"]
# Identifiers and codes must match exactly; a typo in an MRN is another patient.
TYPO_OFF_ATTRIBUTES = [*IDENTIFIER_ATTRIBUTES, "phon", "nick"]
# Names are folded and split by normalizers.names before indexing; these keep typed
# hyphenated and apostrophe names ("smith-jones", "o'brien") split the same way.
SEPARATOR_TOKENS = ["-", "'", "\u2019", "\u2018", "\u02bc"]
MAX_TOTAL_HITS = 1000
# Most searches one multi-search request holds (see build_passes); Meilisearch runs
# them one after another and searchCutoffMs bounds each, so each gets a share.
MAX_PASSES = 6


def pass_cutoff_ms(budget_ms: int) -> int:
    """searchCutoffMs per pass: three quarters of the budget shared by MAX_PASSES passes.

    The rest of the budget is the HTTP round trip and the re-ranking; with the
    default 200 ms budget each pass gets 25 ms and a full request at most 150 ms.
    """
    return max(10, int(budget_ms * 0.75) // MAX_PASSES)


def index_settings(*, budget_ms: int | None = None) -> dict[str, Any]:
    """The settings of a patient index, applied before any document is added.

    `budget_ms` is the API's whole search budget (PATIENT_SEARCH_SEARCH_BUDGET_MS).
    """
    settings: dict[str, Any] = {
        "searchableAttributes": list(SEARCHABLE_ATTRIBUTES),
        "filterableAttributes": list(FILTERABLE_ATTRIBUTES),
        "displayedAttributes": list(DISPLAYED_ATTRIBUTES),
        "sortableAttributes": [],
        "rankingRules": list(RANKING_RULES),
        "typoTolerance": {
            "enabled": True,
            "minWordSizeForTypos": {"oneTypo": 4, "twoTypos": 8},
            "disableOnAttributes": list(TYPO_OFF_ATTRIBUTES),
            "disableOnNumbers": True,
        },
        "separatorTokens": list(SEPARATOR_TOKENS),
        "nonSeparatorTokens": [],
        # No synonyms and no stop words: nicknames come from the normalizers, and
        # every name word counts.
        "synonyms": {},
        "stopWords": [],
        "pagination": {"maxTotalHits": MAX_TOTAL_HITS},
    }
    if budget_ms:
        settings["searchCutoffMs"] = pass_cutoff_ms(budget_ms)
    return settings


# Settings compared as sets (Meilisearch may return them in another order).
_UNORDERED = {"filterableAttributes", "displayedAttributes", "sortableAttributes"}
_UNORDERED_LISTS = {"separatorTokens", "nonSeparatorTokens", "stopWords", "disableOnAttributes"}


def _normalize(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalize(k, v) for k, v in value.items()}
    if isinstance(value, list) and (key in _UNORDERED or key in _UNORDERED_LISTS):
        return sorted(value, key=str)
    return value


def settings_mismatches(wanted: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Names of settings (dotted for nested ones) whose live value differs from ours."""
    out: list[str] = []

    def walk(prefix: str, want: dict[str, Any], have: Any) -> None:
        have = have if isinstance(have, dict) else {}
        for key, value in want.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(f"{name}.", value, have.get(key))
            elif _normalize(key, value) != _normalize(key, have.get(key)):
                out.append(name)

    walk("", wanted, actual)
    return out


# -- ids ------------------------------------------------------------------------


class InvalidDocumentId(ValueError):
    """A patient id too long for a Meilisearch document id, even encoded."""


def encode_id(value: str) -> str:
    """Source id -> Meilisearch document id, reversibly.

    Ids made only of a-z A-Z 0-9 - _ are kept (readable in the Meilisearch UI);
    anything else, and anything that could be mistaken for an encoded id (the
    prefix in any case), becomes the prefix plus unpadded lower-case base32 of
    its UTF-8 bytes. Document ids are compared exactly; clinic scoping never
    relies on them (see clinic_key).
    """
    if (
        _SAFE_ID.fullmatch(value)
        and value[: len(ENCODED_PREFIX)].lower() != ENCODED_PREFIX
        and len(value) <= MAX_ID_BYTES
    ):
        return value
    raw = value.encode("utf-8", "surrogatepass")
    encoded = ENCODED_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    if len(encoded) > MAX_ID_BYTES:
        raise InvalidDocumentId(f"id of {len(raw)} bytes is too long for Meilisearch")
    return encoded


def decode_id(key: str) -> str:
    """Meilisearch document id -> source id (inverse of encode_id)."""
    if not key.startswith(ENCODED_PREFIX):
        return key
    body = key[len(ENCODED_PREFIX) :].upper()
    body += "=" * (-len(body) % 8)
    return base64.b32decode(body).decode("utf-8", "surrogatepass")


def clinic_key(clinic_id: str) -> str:
    """The clinic as a case-proof filter value: lowercase hex, the same for index and filter."""
    return term_key(f"clinic:{clinic_id}")


def term_key(term: str) -> str:
    """A typed index term (`n:smith`, `tel:+1555...`) as a filter-safe key.

    Filters compare keys, never raw text, so no user-supplied character ever
    reaches the filter grammar, whatever the term holds.
    """
    return hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


# -- documents ------------------------------------------------------------------


def to_meili(doc: PatientDocument) -> dict[str, Any]:
    """PatientDocument -> Meilisearch document; `patient` and `match` ride along for ranking."""
    return meili_document(doc.id, doc.clinic_id, doc.active, doc.terms, doc.patient, doc.match)


def meili_document(
    patient_id: str,
    clinic_id: str,
    active: bool,
    terms: Sequence[str],
    patient: Mapping[str, Any],
    match: Mapping[str, Any],
) -> dict[str, Any]:
    """The Meilisearch document from a document's parts (as built, or as the projection holds)."""
    return {
        PRIMARY_KEY: encode_id(patient_id),
        "clinic": clinic_key(clinic_id),
        "active": bool(active),
        "family": " ".join(match.get("family") or ()),
        "given": " ".join(match.get("given") or ()),
        "middle": " ".join(match.get("middle") or ()),
        "name_keys": index_terms.values(terms, index_terms.NAME),
        "nick": index_terms.values(terms, index_terms.NICKNAME),
        "phon": index_terms.values(terms, index_terms.PHONETIC),
        "mrn": match.get("mrn"),
        "phone": list(match.get("phones") or ()),
        "national": list(match.get("national") or ()),
        "last7": index_terms.values(terms, index_terms.LAST7),
        "last4": index_terms.values(terms, index_terms.LAST4),
        "email": list(match.get("emails") or ()),
        "dob": match.get("birth_date"),
        "keys": sorted({term_key(t) for t in terms}),
        "patient": patient,
        "match": match,
    }


# -- filters --------------------------------------------------------------------


class UnsafeFilterValue(ValueError):
    """A value that must not be placed in a filter expression."""


def quote(value: str) -> str:
    """A filter string literal: double quotes, with backslash and quote escaped.

    Control characters are refused outright. Every value we quote is already an
    encoded id or a hex key, so this is a second line of defence.
    """
    if not isinstance(value, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UnsafeFilterValue("control characters are not allowed in filter values")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _in(attribute: str, values: Iterable[str]) -> str:
    items = sorted(set(values))
    for item in items:
        if not _SAFE_ID.fullmatch(item):
            raise UnsafeFilterValue("filter values must be encoded ids or keys")
    return f"{attribute} IN [{', '.join(quote(v) for v in items)}]"


def clinic_filter(clinic_ids: Sequence[str]) -> str:
    """`clinic IN [...]` from the API key's clinics; never empty, never widened."""
    if not clinic_ids:
        raise UnsafeFilterValue("a search needs at least one clinic")
    return _in("clinic", (clinic_key(str(c)) for c in clinic_ids))


def terms_filter(terms: Iterable[str]) -> str:
    """Documents holding at least one of these index terms."""
    keys = [term_key(t) for t in terms]
    if not keys:
        raise UnsafeFilterValue("an empty term set would match nothing")
    return _in("keys", keys)


def base_filter(query: CandidateQuery) -> list[str]:
    parts = [clinic_filter(query.clinic_ids)]
    if not query.include_inactive:
        parts.append("active = true")
    return parts


# -- searches -------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    """One search of a multi-search, labelled like the PostgreSQL passes."""

    kind: str
    body: dict[str, Any]


_QUERY_WORD = re.compile(r"[^\w' -]+")


def query_words(words: Iterable[str]) -> str:
    """Folded name words as a q string with no search operators (no phrase, no negation)."""
    cleaned = []
    for w in words:
        w = _QUERY_WORD.sub(" ", w).strip().lstrip("-").strip()
        if w:
            cleaned.append(w)
    return " ".join(cleaned)


def _any(conds: Sequence[str]) -> str:
    """One condition true when any of these is (each already a whole condition)."""
    return conds[0] if len(conds) == 1 else "(" + " OR ".join(f"({c})" for c in conds) + ")"


def _all(conds: Sequence[str]) -> str:
    return " AND ".join(conds)


def build_passes(
    query: CandidateQuery, index_uid: str, expansions: TermExpansions | None = None
) -> list[Pass]:
    """The searches that find a CandidateQuery's candidates, strict to loose: MAX_PASSES at most.

    Exact passes (identifiers, names with their nickname groups, phonetic codes,
    dates) are filters over the document's term keys, so they find the same
    patients as the PostgreSQL passes. Typo and prefix expansion, which
    PostgreSQL gets from its word dictionary, is Meilisearch's own full-text
    search over the name attributes, and, when the caller has the word
    dictionary, its completions and typo corrections (`expansions`, the very
    terms PostgreSQL's passes use) widen the loose exact passes: Meilisearch
    alone gives no typo to short words, counts a first-letter typo double and
    completes only the last word.

    Meilisearch runs the searches of a multi-search one after another, so the
    exact passes that an identifier or the typed date narrows to a handful of
    patients are merged into one ("narrow"); the broad ones stay apart, in
    order, so that a common name cannot crowd out a stricter match.
    """
    base = base_filter(query)
    common = {
        "indexUid": index_uid,
        "limit": query.limit,
        "attributesToRetrieve": list(DISPLAYED_ATTRIBUTES),
    }
    passes: list[Pass] = []

    def exact(kind: str, conds: list[str]) -> None:
        passes.append(Pass(kind, {**common, "q": "", "filter": _all([*base, *conds])}))

    def fulltext(kind: str, words: str, conds: list[str], strategy: str) -> None:
        if not words:
            return
        body = {
            **common,
            "q": words,
            "filter": _all([*base, *conds]),
            "attributesToSearchOn": list(NAME_ATTRIBUTES[:5]),
            "matchingStrategy": strategy,
        }
        passes.append(Pass(kind, body))

    if query.names:
        _name_passes(query, _Conditions.of(query), exact, fulltext, expansions)
    else:
        _other_passes(query, _Conditions.of(query), exact)
    return passes


@dataclass(frozen=True)
class _Conditions:
    """Term-key conditions of a query, each empty when the query lacks that part."""

    ident: list[str]
    weak: list[str]
    dob: list[str]
    dates: list[str]  # the typed date and its near readings

    @classmethod
    def of(cls, query: CandidateQuery) -> _Conditions:
        def cond(terms: Sequence[str]) -> list[str]:
            return [terms_filter(terms)] if terms else []

        return cls(
            ident=cond(query.strong_terms),
            # A year of birth narrows as a phone ending does: any day of it.
            weak=cond(
                [
                    *query.weak_terms,
                    *(t for y in query.birth_years for t in index_terms.dobs_in(y)),
                ]
            ),
            dob=cond(query.dob_terms),
            dates=cond([*query.dob_terms, *query.dob_near_terms]),
        )


def _other_passes(query: CandidateQuery, c: _Conditions, exact: Callable[..., None]) -> None:
    """No name typed: identifiers, the date, a phone ending."""
    if c.ident:
        exact("identifier", c.ident)
    if c.dob:
        exact("dob", [*c.dob, *c.weak])
    if query.dob_near_terms:
        exact("dob_near", [terms_filter(query.dob_near_terms), *c.weak])
    if c.weak and not c.dob:
        exact("phone_ending", c.weak)


def _name_passes(
    query: CandidateQuery,
    c: _Conditions,
    exact: Callable[..., None],
    fulltext: Callable[..., None],
    expansions: TermExpansions | None,
) -> None:
    names = query.names
    words = query_words(t.text for t in names)
    named = [terms_filter(t.alternatives) for t in names if t.alternatives]
    completions, typos = expansions or ({}, {})
    wide_terms = [
        (
            *t.alternatives,
            *t.phonetic,
            *sorted(completions.get(t.text, ())),
            *sorted(typos.get(t.text, ())),
        )
        for t in names
    ]
    wide = [terms_filter(w) for w in wide_terms if w]
    any_name = [terms_filter([w for ws in wide_terms for w in ws])] if wide else []
    narrow = list(c.ident)
    name_narrowed = c.weak
    if query.birth_years and c.weak:
        # A number typed with the name that may be a year: those of that name agreeing
        # with it come with the narrow passes, then the name alone, its namesakes (as
        # engines.pg_search reads it).
        narrow.append(_all([*named, *c.weak]))
        name_narrowed = []
    if c.dob:
        narrow += [_all([*named, *c.dob, *c.weak]), _all([*wide, *c.dob, *c.weak])]
    if c.dates and any_name:
        narrow.append(_all([*c.dates, *any_name]))
    if narrow:
        exact("narrow", [_any(narrow)])
    exact("name", [*named, *name_narrowed])
    if c.dob:
        fulltext("fuzzy_dob", words, [*c.dob, *c.weak], "all")
    exact("phonetic", [*wide, *c.weak])
    fulltext("fuzzy", words, c.weak, "all")
    if c.dates:
        fulltext("fuzzy_any_name", words, c.dates, "frequency")
    elif len(names) > 1:
        fulltext("fuzzy_any_name", words, c.weak, "frequency")
