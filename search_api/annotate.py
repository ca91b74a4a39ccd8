"""What a person reading a result needs beside the record: which parts matched, the phones
written the way the clinic writes them, and which results on the page may be one person.

Pure functions over the ranker's output; the ranking itself never depends on them.
Highlights are recomputed per display word with the ranker's own word comparison
(`word_match`), restricted to the fields the ranker reported as matched, so a mark
never appears where the ranker saw no match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import Any

import phonenumbers

from normalizers.names import folded_nicknames_meet
from normalizers.phones import Phone, normalize_phone
from normalizers.text import fold
from search_api.ranking import Ranked, RankQuery, word_match

NAME_FIELDS = ("given_name", "middle_name", "family_name")
_WORD = re.compile(r"[^\s\-]+")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of a displayed value; `index` picks a phone or email."""

    field: str
    start: int
    end: int
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """As models.Highlight lays it out, `index` null included."""
        return {"field": self.field, "start": self.start, "end": self.end, "index": self.index}


def format_phone(value: str, region: str) -> str:
    """National format for the clinic's region, international for other countries;
    the value as typed when it is not a number libphonenumber can lay out."""
    return _laid_out(normalize_phone(value, region), value, region)


def _laid_out(phone: Phone, value: str, region: str) -> str:
    """format_phone of a phone already parsed from `value`."""
    if not phone.e164:
        return value
    if _nanp_home(phone.e164, region):
        # What libphonenumber lays out for every such number (checked in the tests),
        # without parsing it again: a search formats every phone on its page.
        n = phone.e164[2:]
        return f"({n[:3]}) {n[3:6]}-{n[6:]}" + (
            f" ext. {phone.extension}" if phone.extension else ""
        )
    try:
        number = phonenumbers.parse(phone.e164, None)
    except phonenumbers.NumberParseException:
        return value
    home = number.country_code == phonenumbers.country_code_for_region(region)
    style = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if home
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    text = phonenumbers.format_number(number, style)
    if phone.extension:
        text += f" ext. {phone.extension}"
    return text


def _nanp_home(e164: str, region: str) -> bool:
    """A North American number with a real area code (2-9), shown in a NANP region."""
    return (
        len(e164) == 12
        and e164.startswith("+1")
        and "2" <= e164[2] <= "9"
        and phonenumbers.country_code_for_region(region) == 1
    )


def formatted_phones(patient: Mapping[str, Any], region: str) -> list[str]:
    return [_laid_out(phone, value, region) for value, phone in _parsed_phones(patient, region)]


def _parsed_phones(patient: Mapping[str, Any], region: str) -> list[tuple[str, Phone]]:
    """Each phone as stored and as read, parsed once for the page: its layout and its
    highlight both need it. Not cached: a page's phones are its patients', seldom the
    last pages' (3 us a North American number); a process-wide cache kept about twenty
    objects a search for the cycle collector to walk (issue 11, sixteenth pass)."""
    values = [str(p.get("value") or "") for p in patient.get("phones") or ()]
    return [(value, normalize_phone(value, region)) for value in values]


@lru_cache(maxsize=65536)
def _prefix_length(word: str, typed: str) -> int:
    """How many displayed characters spell the typed prefix (accents fold away)."""
    for n in range(1, len(word) + 1):
        if len(fold(word[:n]).replace(" ", "")) >= len(typed):
            return n
    return len(word)


@lru_cache(maxsize=65536)
def _folded(word: str) -> str:
    return fold(word).replace(" ", "")


def _name_spans(query: RankQuery, fld: str, text: str) -> list[Span]:
    spans: list[Span] = []
    # Two typed words may spell one stored word together ("mc donald": McDonald).
    names = query.names
    typed_words = [*names, *(names[i] + names[i + 1] for i in range(len(names) - 1))]
    for found in _WORD.finditer(text):
        word = _folded(found.group())
        best: tuple[str, str] | None = None
        for typed in typed_words:
            hit = query.memo.word_match(typed, word, fld != "family_name")
            if hit and (best is None or hit[0] == "exact"):
                best = (hit[0], typed)
        if best is None:
            continue
        kind, typed = best
        end = found.start() + _prefix_length(found.group(), typed) if kind == "prefix" else None
        spans.append(Span(fld, found.start(), end or found.end()))
    return spans


def _digit_tail_span(text: str, digits: int) -> tuple[int, int] | None:
    positions = [m.start() for m in _DIGIT.finditer(text)]
    if len(positions) < digits or digits <= 0:
        return None
    return positions[-digits], positions[-1] + 1


def _phone_spans(query: RankQuery, phones: list[Phone], shown: list[str]) -> list[Span]:
    spans: list[Span] = []
    for i, phone in enumerate(phones):
        text = shown[i] if i < len(shown) else ""
        if phone.e164 in query.phones or phone.national in query.phone_nationals:
            spans.append(Span("phones", 0, len(text), i))
            continue
        tail = max(
            (
                len(f)
                for f in query.phone_fragments
                if phone.national and phone.national.endswith(f)
            ),
            default=0,
        )
        if tail and (span := _digit_tail_span(text, tail)):
            spans.append(Span("phones", span[0], span[1], i))
    return spans


def highlights(
    query: RankQuery,
    patient: Mapping[str, Any],
    matched: Sequence[str],
    phones: list[Phone],
    phones_shown: list[str],
) -> list[Span]:
    """The displayed characters that made this result match."""
    spans: list[Span] = []
    for fld in NAME_FIELDS:
        if fld in matched and patient.get(fld):
            spans.extend(_name_spans(query, fld, str(patient[fld])))
    for fld in ("birth_date", "mrn"):
        if fld in matched and patient.get(fld):
            year_only = fld == "birth_date" and not query.birth_dates  # "smith 1980"
            spans.append(Span(fld, 0, 4 if year_only else len(str(patient[fld]))))
    if "phone" in matched:
        spans.extend(_phone_spans(query, phones, phones_shown))
    if "email" in matched:
        for i, entry in enumerate(patient.get("emails") or ()):
            value = str(entry.get("value") or "")
            if value.strip().lower() in query.emails or fold(value) in query.emails:
                spans.append(Span("emails", 0, len(value), i))
    return spans


# --- possible duplicates among the results of one page --------------------------------


def _word_near(x: str, y: str, *, nicknames: bool) -> bool:
    if x == y:
        return True
    if min(len(x), len(y)) == 1:
        return x[0] == y[0]  # an initial
    if nicknames and folded_nicknames_meet(x, y):
        return True
    for typed, stored in ((x, y), (y, x)):
        if len(typed) >= 3 and word_match(typed, stored, nicknames=False):
            return True
    return False


def _words_near(a: Sequence[str], b: Sequence[str], *, nicknames: bool) -> bool:
    return any(_word_near(x, y, nicknames=nicknames) for x in a for y in b)


def names_near(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Family and given name each agree (exactly, by sound, by a typo, a nickname or an
    initial), in the same roles or swapped, as two registrations of one person would."""
    fa, ga = a.get("family") or [], (a.get("given") or []) + (a.get("middle") or [])
    fb, gb = b.get("family") or [], (b.get("given") or []) + (b.get("middle") or [])
    if not (fa and fb and ga and gb):
        return False
    same_roles = _words_near(fa, fb, nicknames=False) and _words_near(ga, gb, nicknames=True)
    swapped = _words_near(fa, gb, nicknames=True) and _words_near(ga, fb, nicknames=True)
    return same_roles or swapped


def duplicate_reason(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """Why two records (their `match` parts) look like one person, or None."""
    return _reason(_Shown(a), _Shown(b))


class _Shown:
    """What a result is compared on: read once per result, not once per pair of a page."""

    __slots__ = ("born", "match", "reached_at")

    def __init__(self, match: Mapping[str, Any]) -> None:
        self.match = match
        self.born = match.get("birth_date")
        self.reached_at = frozenset([*(match.get("phones") or ()), *(match.get("national") or ())])


def _reason(a: _Shown, b: _Shown) -> str | None:
    if a.born and a.born == b.born:
        why = "same date of birth and a similar name"
    elif not a.reached_at.isdisjoint(b.reached_at):
        why = "same phone and a similar name"
    else:
        return None  # cheap test first: most pairs on a page share neither
    return why if names_near(a.match, b.match) else None


def duplicate_marks(
    matches: Sequence[tuple[str, Mapping[str, Any]]],
) -> dict[str, list[dict[str, str]]]:
    """For each result id, the other results on the page it may be a duplicate of, and why."""
    marks: dict[str, list[dict[str, str]]] = {}
    shown = [(id_, _Shown(match)) for id_, match in matches]
    for (id_a, a), (id_b, b) in combinations(shown, 2):
        if (why := _reason(a, b)) is not None:
            marks.setdefault(id_a, []).append({"id": id_b, "why": why})
            marks.setdefault(id_b, []).append({"id": id_a, "why": why})
    return marks


def annotate_results(
    results: Sequence[Ranked], terms: RankQuery, region: str
) -> list[dict[str, Any]]:
    """Per result, in order: highlights, phones as the clinic writes them, duplicate marks."""
    marks = duplicate_marks([(r.candidate.id, r.candidate.match) for r in results])
    out: list[dict[str, Any]] = []
    for r in results:
        patient = r.candidate.patient
        parsed = _parsed_phones(patient, region)
        shown = [_laid_out(phone, value, region) for value, phone in parsed]  # formatted_phones
        spans = highlights(terms, patient, r.matched, [phone for _, phone in parsed], shown)
        out.append(
            {
                "highlights": [s.as_dict() for s in spans],
                "phones_formatted": shown,
                "duplicates": marks.get(r.candidate.id, []),
            }
        )
    return out
