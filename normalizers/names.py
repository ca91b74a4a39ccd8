"""Name tokens, match keys, nicknames and phonetic codes for person names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from doublemetaphone import doublemetaphone
from rapidfuzz.distance import DamerauLevenshtein

from normalizers.text import APOSTROPHES, fold

# Honorifics dropped anywhere in a name; they are never part of who the patient is.
TITLES = frozenset(
    {
        "dr",
        "doctor",
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "prof",
        "professor",
        "rev",
        "revd",
        "reverend",
        "fr",
        "sir",
        "sr",
        "sra",
        "srta",
        "mme",
        "mlle",
    }
)

# Generational and professional suffixes. "v" and "do" are left out: they are also initials
# and surnames (Vietnamese Do).
SUFFIXES = frozenset(
    {
        "jr",
        "jnr",
        "junior",
        "sr",
        "snr",
        "senior",
        "ii",
        "iii",
        "iv",
        "md",
        "phd",
        "dds",
        "dmd",
        "dvm",
        "rn",
        "lpn",
        "np",
        "esq",
        "mba",
        "jd",
    }
)

# Lower-case particles of family names, which staff sometimes omit or run together.
PARTICLES = frozenset(
    {
        "al",
        "bin",
        "da",
        "das",
        "de",
        "degli",
        "dei",
        "del",
        "dela",
        "della",
        "den",
        "der",
        "des",
        "di",
        "do",
        "dos",
        "du",
        "el",
        "ibn",
        "la",
        "las",
        "le",
        "les",
        "lo",
        "los",
        "saint",
        "sainte",
        "st",
        "ste",
        "te",
        "ten",
        "ter",
        "van",
        "vander",
        "vom",
        "von",
        "y",
        "zu",
    }
)

_SPLIT = re.compile(r"[\s\-]+")


def _raw_tokens(text: str | None) -> list[str]:
    if not isinstance(text, str):
        return []
    return [t for t in _SPLIT.split(fold(text)) if t]


def name_tokens(text: str | None) -> list[str]:
    """Folded name tokens in typed order, without titles and suffixes.

    When every token is a title or suffix ("Dr", "Jr") they are all kept: a name made only of
    such words is still what was typed and the only thing to match on.
    """
    tokens = _raw_tokens(text)
    kept = [t for t in tokens if t not in TITLES and t not in SUFFIXES]
    return kept if kept else tokens


@lru_cache(maxsize=4096)
def is_particle(token: str) -> bool:
    """True for family-name particles (de, van, von, ...). Cached: the re-ranker asks
    it of each typed word once per candidate, and folding is not cheap."""
    return fold(token) in PARTICLES if isinstance(token, str) else False


def _apostrophe_parts(text: str | None) -> list[str]:
    """Folded words of a name split at its apostrophes (the parts a plain fold joins)."""
    if not isinstance(text, str) or not any(a in text for a in APOSTROPHES):
        return []
    spaced = text.translate({ord(a): " " for a in APOSTROPHES})
    return [t for t in _raw_tokens(spaced) if t not in TITLES and t not in SUFFIXES]


def name_keys(text: str | None) -> list[str]:
    """Index/match keys of one name field: tokens plus the compounds staff type.

    "Smith-Jones" -> jones, smith, smithjones; "de la Cruz" -> cruz, de, delacruz, la;
    "Mc Donald" and "McDonald" share "mcdonald"; "O'Sullivan" -> o, osullivan, sullivan.
    """
    tokens = name_tokens(text)
    keys = set(tokens)
    # O'Sullivan, D'Angelo: also typed "o sullivan" or plain "sullivan".
    for token in _apostrophe_parts(text):
        keys.add(token)
    if len(tokens) > 1:
        keys.add("".join(tokens))
        core = [t for t in tokens if t not in PARTICLES]
        if core and len(core) < len(tokens):
            keys.add("".join(core))
    return sorted(keys)


# --- typos ---------------------------------------------------------------------------------


def typo_budget(word: str) -> int:
    """Edits a typed word may be away from a stored one and still count as a typo."""
    return 1 if len(word) <= 4 else 2


def typo_distance(typed: str, stored: str) -> int | None:
    """Damerau-Levenshtein distance (a swap is one slip) within the budget, else None."""
    budget = typo_budget(typed)
    if abs(len(typed) - len(stored)) > budget:
        return None  # every edit bridges at most one letter of the lengths' difference
    distance = DamerauLevenshtein.distance(typed, stored, score_cutoff=budget)
    return distance if distance <= budget else None


# --- nicknames -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NicknameTable:
    """Maps a folded name to the canonical names it may stand for (the name itself excluded)."""

    canonicals: Mapping[str, frozenset[str]]


@lru_cache(maxsize=1)
def _default_edges() -> tuple[tuple[str, frozenset[str]], ...]:
    """canonical -> nicknames from the `nicknames` package (plus our supplement), directed sensibly.

    The package lists many pairs both ways (william<->bill) and even formal names as nicknames
    of other formal names (wilma -> william). An edge canonical -> nick is kept when the
    canonical is the longer name, or when the nick has no nicknames of its own (a true short
    form such as ronnie -> aaron). That keeps "william" canonical of itself only.
    """
    from nicknames import NickNamer

    lookup = NickNamer.default_lookup()
    has_own = {fold(name) for name, nicks in lookup.items() if nicks}
    edges: dict[str, set[str]] = {}
    for canonical, nicks in lookup.items():
        c = fold(canonical)
        if not c:
            continue
        for nick in nicks:
            n = fold(nick)
            if not n or n == c:
                continue
            if len(c) > len(n) or n not in has_own:
                edges.setdefault(c, set()).add(n)
    supplement = resources.files("normalizers").joinpath("nicknames_supplement.csv")
    for c, ns in _parse_override_csv(supplement.read_text(encoding="utf-8")).items():
        edges.setdefault(c, set()).update(ns)
    return tuple((c, frozenset(ns)) for c, ns in sorted(edges.items()))


def _parse_override_csv(extra_csv: str) -> dict[str, set[str]]:
    """Lines "canonical,nick1,nick2,..."; blank lines and lines starting with '#' ignored."""
    edges: dict[str, set[str]] = {}
    for line in extra_csv.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cells = [fold(cell.strip().strip('"')) for cell in stripped.split(",")]
        canonical, nicks = cells[0], cells[1:]
        if not canonical:
            continue
        for nick in nicks:
            if nick and nick != canonical:
                edges.setdefault(canonical, set()).add(nick)
    return edges


def _build_table(edges: dict[str, set[str]]) -> NicknameTable:
    inverted: dict[str, set[str]] = {}
    for canonical, nicks in edges.items():
        for nick in nicks:
            inverted.setdefault(nick, set()).add(canonical)
    return NicknameTable(
        canonicals=MappingProxyType({k: frozenset(v) for k, v in inverted.items()})
    )


@lru_cache(maxsize=32)
def nickname_table(extra_csv: str | None = None) -> NicknameTable:
    """The package table, optionally extended by clinic-specific "canonical,nick,..." lines.

    Overrides only add relationships; they are taken in the direction written.
    """
    edges = {canonical: set(nicks) for canonical, nicks in _default_edges()}
    if isinstance(extra_csv, str) and extra_csv:
        for canonical, nicks in _parse_override_csv(extra_csv).items():
            edges.setdefault(canonical, set()).update(nicks)
    return _build_table(edges)


_configured_extra_csv: str | None = None


def use_nickname_overrides(extra_csv: str | None) -> None:
    """Make clinic overrides part of the default table (called once at start-up).

    The service calls it before normalizing anything, from its configuration
    (NICKNAMES_FILE), so documents and queries use the same table.
    """
    global _configured_extra_csv
    _configured_extra_csv = extra_csv or None
    folded_nickname_group.cache_clear()


@lru_cache(maxsize=65536)
def folded_nickname_group(folded: str) -> frozenset[str]:
    """nickname_group of a word already folded, from the configured table: for the
    ranking and the page, which hold folded words and ask for them per candidate (a
    quarter of nickname_group's time, which folds again)."""
    table = nickname_table(_configured_extra_csv)
    return frozenset({folded}) | table.canonicals.get(folded, frozenset())


def folded_nicknames_meet(a: str, b: str) -> bool:
    """Whether two folded words' nickname groups meet. The ranking asks it of every pair
    of typed and stored words it weighs, where building the groups' intersection cost
    more than looking them up."""
    return not folded_nickname_group(a).isdisjoint(folded_nickname_group(b))


def nickname_group(token: str, table: NicknameTable | None = None) -> frozenset[str]:
    """Folded canonical given names that token may stand for, the token itself included.

    Two given names match as nicknames when their groups intersect (bill ~ william via
    "william", liz ~ beth via "elizabeth"). Empty for a token with nothing to fold.
    """
    if not isinstance(token, str):
        return frozenset()
    folded = fold(token)
    if not folded:
        return frozenset()
    if table is None:
        return folded_nickname_group(folded)
    return frozenset({folded}) | table.canonicals.get(folded, frozenset())


def nickname_match(a: str, b: str, table: NicknameTable | None = None) -> bool:
    """True when a and b may name the same person by nickname (or are equal once folded)."""
    return bool(nickname_group(a, table) & nickname_group(b, table))


# --- phonetics -------------------------------------------------------------------------------

_NON_ASCII_LETTER = re.compile(r"[^a-z]+")


@lru_cache(maxsize=65536)
def phonetic_keys(token: str) -> tuple[str, ...]:
    """Double Metaphone primary and alternate codes, so Smith/Smyth and Jon/John meet.

    Only ASCII letters after folding are coded: the C implementation reads bytes and gives
    nonsense for other scripts, which then simply have no phonetic key.
    """
    if not isinstance(token, str):
        return ()
    letters = _NON_ASCII_LETTER.sub("", fold(token))[:64]
    if not letters:
        return ()
    keys: list[str] = []
    for code in doublemetaphone(letters):
        if code and code not in keys:
            keys.append(code)
    return tuple(keys)
