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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core import terms as index_terms
from core.documents import PatientDocument
from engines.base import CandidateQuery

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
FILTERABLE_ATTRIBUTES = ["clinic_id", "active", "keys"]
DISPLAYED_ATTRIBUTES = [PRIMARY_KEY, "patient", "match"]
# Exactness before proximity: a patient named exactly as typed beats a near spelling.
RANKING_RULES = ["words", "typo", "exactness", "proximity", "attribute", "sort"]
# Identifiers and codes must match exactly; a typo in an MRN is another patient.
TYPO_OFF_ATTRIBUTES = [*IDENTIFIER_ATTRIBUTES, "phon", "nick"]
# Names are folded and split by normalizers.names before indexing; these keep typed
# hyphenated and apostrophe names ("smith-jones", "o'brien") split the same way.
SEPARATOR_TOKENS = ["-", "'", "\u2019", "\u2018", "\u02bc"]
MAX_TOTAL_HITS = 1000


def index_settings(*, search_cutoff_ms: int | None = None) -> dict[str, Any]:
    """The settings of a patient index, applied before any document is added."""
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
    if search_cutoff_ms:
        settings["searchCutoffMs"] = int(search_cutoff_ms)
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
    anything else, and anything that could be mistaken for an encoded id, becomes
    the prefix plus unpadded lower-case base32 of its UTF-8 bytes.
    """
    if (
        _SAFE_ID.fullmatch(value)
        and not value.startswith(ENCODED_PREFIX)
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


def term_key(term: str) -> str:
    """A typed index term (`n:smith`, `tel:+1555...`) as a filter-safe key.

    Filters compare keys, never raw text, so no user-supplied character ever
    reaches the filter grammar, whatever the term holds.
    """
    return hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


# -- documents ------------------------------------------------------------------


def to_meili(doc: PatientDocument) -> dict[str, Any]:
    """PatientDocument -> Meilisearch document; `patient` and `match` ride along for ranking."""
    match = doc.match
    terms = doc.terms
    return {
        PRIMARY_KEY: encode_id(doc.id),
        "clinic_id": encode_id(doc.clinic_id),
        "active": bool(doc.active),
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
        "patient": doc.patient,
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
    """`clinic_id IN [...]` from the API key's clinics; never empty, never widened."""
    if not clinic_ids:
        raise UnsafeFilterValue("a search needs at least one clinic")
    return _in("clinic_id", (encode_id(str(c)) for c in clinic_ids))


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


def build_passes(query: CandidateQuery, index_uid: str) -> list[Pass]:
    """The searches that find a CandidateQuery's candidates, strict to loose.

    Exact passes (identifiers, names with their nickname groups, phonetic codes,
    dates) are filters over the document's term keys, so they find the same
    patients as the PostgreSQL passes. Typo and prefix expansion, which
    PostgreSQL gets from its word dictionary, is Meilisearch's own full-text
    search over the name attributes.
    """
    base = base_filter(query)
    common = {
        "indexUid": index_uid,
        "limit": query.limit,
        "attributesToRetrieve": list(DISPLAYED_ATTRIBUTES),
    }
    passes: list[Pass] = []

    def exact(kind: str, conds: list[str]) -> None:
        passes.append(Pass(kind, {**common, "q": "", "filter": " AND ".join([*base, *conds])}))

    def fulltext(kind: str, words: str, conds: list[str], strategy: str) -> None:
        if not words:
            return
        body = {
            **common,
            "q": words,
            "filter": " AND ".join([*base, *conds]),
            "attributesToSearchOn": list(NAME_ATTRIBUTES[:5]),
            "matchingStrategy": strategy,
        }
        passes.append(Pass(kind, body))

    if query.strong_terms:
        exact("identifier", [terms_filter(query.strong_terms)])

    weak = [terms_filter(query.weak_terms)] if query.weak_terms else []
    dob = [terms_filter(query.dob_terms)] if query.dob_terms else []
    dates = [*query.dob_terms, *query.dob_near_terms]
    names = query.names

    if names:
        words = query_words(t.text for t in names)
        named = [terms_filter(t.alternatives) for t in names if t.alternatives]
        wide_terms = [(*t.alternatives, *t.phonetic) for t in names]
        wide = [terms_filter(w) for w in wide_terms if w]
        any_name = [terms_filter([w for ws in wide_terms for w in ws])] if wide else []
        if dob:
            exact("name_dob", [*named, *dob, *weak])
        exact("name", [*named, *weak])
        if dob:
            exact("phonetic_dob", [*wide, *dob, *weak])
            fulltext("fuzzy_dob", words, [*dob, *weak], "all")
        exact("phonetic", [*wide, *weak])
        fulltext("fuzzy", words, weak, "all")
        if dates:
            exact("dob_any_name", [terms_filter(dates), *any_name])
            fulltext("fuzzy_dob_any_name", words, [terms_filter(dates)], "frequency")
        if len(names) > 1:
            exact("any_name", [*any_name, *weak])
            fulltext("fuzzy_any_name", words, weak, "frequency")
    elif dob:
        exact("dob", [*dob, *weak])
        if query.dob_near_terms:
            exact("dob_near", [terms_filter(query.dob_near_terms), *weak])
    elif weak:
        exact("phone_ending", weak)
    return passes
