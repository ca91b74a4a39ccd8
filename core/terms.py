"""Index terms: the typed exact-match keys (`kind:value`) every engine indexes and every query asks.

The one owner of the format: the document builder (core.documents) writes terms with
these functions and the read side (search_api.plan, search_api.service, engines) asks
with the same ones, so the writer and the readers cannot drift. Values are already
normalized by `normalizers`; this module only spells and parses them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from normalizers.names import nickname_group, phonetic_keys

NAME = "n"  # a folded name word, or a name field's joined key (garcialopez)
NICKNAME = "k"  # a name in the word's nickname group (given and middle names only)
PHONETIC = "p"  # a Double Metaphone code of a name word
PHONE = "tel"  # a full phone number, E.164
NATIONAL = "tn"  # a phone's national significant number
LAST7 = "t7"  # a phone's last seven national digits
LAST4 = "t4"  # a phone's last four digits
EMAIL = "em"  # a canonical email address
MRN = "mrn"  # a normalized medical record number
DOB = "dob"  # a birth date, ISO 8601

KINDS = (NAME, NICKNAME, PHONETIC, PHONE, NATIONAL, LAST7, LAST4, EMAIL, MRN, DOB)


def term(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def parse(value: str) -> tuple[str, str]:
    """`tel:+15550102233` -> ("tel", "+15550102233"); ValueError when not a term."""
    kind, sep, rest = value.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError("not an index term")
    return kind, rest


def values(terms: Iterable[str], kind: str) -> list[str]:
    """The values of one kind among `terms`, sorted and unique."""
    prefix = f"{kind}:"
    return sorted({t[len(prefix) :] for t in terms if t.startswith(prefix)})


def name(word: str) -> str:
    return term(NAME, word)


def nicknames(word: str) -> list[str]:
    return [term(NICKNAME, n) for n in sorted(nickname_group(word))]


def phonetic(word: str, *, alternates: bool = True) -> list[str]:
    """Sound-alike codes of a word: documents store primary and alternate codes; a typed
    word asks with its primary code only (alternates match too loosely)."""
    codes = phonetic_keys(word)
    return [term(PHONETIC, c) for c in (codes if alternates else codes[:1])]


def phone(e164: str) -> str:
    return term(PHONE, e164)


def national(number: str) -> str:
    return term(NATIONAL, number)


def phone_ending(digits: str) -> str:
    """The last seven digits when there are that many, else the last four."""
    return last7(digits) if len(digits) >= 7 else last4(digits)


def last7(digits: str) -> str:
    return term(LAST7, digits[-7:])


def last4(digits: str) -> str:
    return term(LAST4, digits[-4:])


def email(canonical: str) -> str:
    return term(EMAIL, canonical)


def mrn(value: str) -> str:
    return term(MRN, value)


def dob(date: dt.date) -> str:
    return term(DOB, date.isoformat())


def dobs_in(year: int) -> list[str]:
    """The birth-date term of every day of a year: a year of birth for an engine that
    filters on terms only (Meilisearch)."""
    first = dt.date(year, 1, 1)
    days = (dt.date(year + 1, 1, 1) - first).days
    return [dob(first + dt.timedelta(days=i)) for i in range(days)]
