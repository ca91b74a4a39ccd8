"""Query understanding: one search-box string -> names, phones, emails, dates and MRNs.

Staff type fields in any order and mix them ("smith 3/14/85 555-0102"). The parser claims
the unambiguous things first (e-mails, labelled MRNs, dates, full phone numbers), and what is
left becomes phone fragments, MRN candidates and name tokens. Where a string can mean two
things it is kept as both (an 8-digit number is a date reading and an MRN candidate).
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass
from typing import TypeVar

from normalizers.dates import MIN_YEAR, MONTHS, parse_dates
from normalizers.emails import Email, normalize_email
from normalizers.identifiers import normalize_mrn
from normalizers.names import name_tokens
from normalizers.phones import Phone, normalize_phone
from normalizers.text import ascii_digits, digits_only

# The most the parser ever reads, whatever the caller allows (PATIENT_SEARCH_MAX_QUERY_LENGTH
# is the operator's limit, at most this).
MAX_QUERY_CHARS = 512
_MAX_PHONE_TOKENS = 8
_MAX_DATE_TOKENS = 5

_TOKEN = re.compile(r"[^\s,;]+|[,;]")
_PHONEISH = re.compile(r"^(?:tel:)?[+(\[]*\d[\d()\[\]\-./+]*$", re.IGNORECASE)
_EXT_MARK = re.compile(r"^(?:x|ext\.?|extn\.?|extension|#)$", re.IGNORECASE)
_EXT_WITH_DIGITS = re.compile(r"^(?:x|ext\.?|extn\.?|extension|#)[:.]?\d{1,7}$", re.IGNORECASE)
_MRN_LABEL = re.compile(r"^(?:mrn[:#\-.]*|#)$", re.IGNORECASE)
_MRN_LABELLED = re.compile(r"^(?:mrn[:#\-.]+|mrn(?=\d)|#)(?=\w)(.+)$", re.IGNORECASE)
_NUMERIC_DATE = re.compile(r"^\d{1,4}([/\-.])\d{1,2}\1\d{1,4}$")
_NAMED_DATE = re.compile(r"^\d{1,2}-[a-z]{3,9}\.?-\d{2,4}$|^[a-z]{3,9}\.?-\d{1,2}-\d{2,4}$", re.I)
_COMPACT_DATE = re.compile(r"^\d{8}$")
# Words that label a field rather than name a patient ("dob 3/14/85", "phone: ...").
_ALWAYS_LABELS = frozenset({"dob", "d.o.b", "d.o.b.", "dob:", "d.o.b:", "d.o.b.:"})
_COLON_LABELS = frozenset(
    {"dob", "birthdate", "born", "phone", "tel", "mobile", "cell", "email", "e-mail", "name"}
)


@dataclass(frozen=True)
class ParsedQuery:
    """How a search-box string was read; every field is already normalized."""

    text: str
    names: tuple[str, ...] = ()
    given: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    phones: tuple[Phone, ...] = ()
    phone_fragments: tuple[str, ...] = ()
    emails: tuple[Email, ...] = ()
    birth_dates: tuple[datetime.date, ...] = ()
    mrns: tuple[str, ...] = ()
    birth_years: tuple[int, ...] = ()  # four digits typed with a name ("smith 1980")

    @property
    def is_empty(self) -> bool:
        """True when nothing in the query can be searched for."""
        return not (
            self.names
            or self.phones
            or self.phone_fragments
            or self.emails
            or self.birth_dates
            or self.mrns
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-safe view for the API's "query" field (how the input was read)."""
        return {
            "text": self.text,
            "names": list(self.names),
            "given": list(self.given),
            "family": list(self.family),
            "phones": [p.e164 or digits_only(p.raw) for p in self.phones],
            "phone_fragments": list(self.phone_fragments),
            "emails": [e.canonical or e.raw.strip().lower() for e in self.emails],
            "birth_dates": [d.isoformat() for d in self.birth_dates],
            "mrns": list(self.mrns),
            "birth_years": list(self.birth_years),
        }


@dataclass
class _Token:
    text: str
    kind: str = ""  # "" while unclaimed; email, mrn, label, date, date+mrn, phone, comma

    @property
    def free(self) -> bool:
        return self.kind == ""

    @property
    def bare(self) -> str:
        """The text without the brackets and punctuation typed around a number or date."""
        return self.text.strip("()[],.")


T = TypeVar("T")


def _add(items: list[T], value: T | None) -> None:
    if value and value not in items:
        items.append(value)


def _truncate(text: str, max_chars: int) -> str:
    """First `max_chars` chars, cut at a space when possible so no half token is searched for."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    if not text[max_chars].isspace():
        head = cut.rsplit(None, 1)
        if len(head) == 2:
            cut = head[0]
    return cut.rstrip()


def _prepare(text: str, max_chars: int) -> str:
    text = unicodedata.normalize("NFKC", text)
    chars: list[str] = []
    for c in text:
        if c.isspace():
            chars.append(" ")
        elif unicodedata.category(c)[0] != "C":  # soft hyphens, joiners, controls vanish
            chars.append(c)
    # NFKC can expand a char up to 18-fold; bound the work whatever comes in.
    return ascii_digits("".join(chars))[: 2 * max_chars]


def _claim_emails(tokens: list[_Token], emails: list[Email]) -> None:
    for tok in tokens:
        if tok.free and "@" in tok.text:
            tok.kind = "email"
            email = normalize_email(tok.text.strip("()[]<>\"'"))
            if email.valid and all(e.canonical != email.canonical for e in emails):
                emails.append(email)


def _next_free(tokens: list[_Token], start: int) -> int | None:
    for j in range(start, len(tokens)):
        if tokens[j].kind == "comma":
            return None
        if tokens[j].free:
            return j
    return None


def _claim_mrns(tokens: list[_Token], mrns: list[str]) -> None:
    """Explicitly labelled MRNs ("MRN 00412", "mrn:00412", "#00412") are MRNs and nothing else.

    A "#12" right after a number is left alone: it is a phone extension.
    """
    for i, tok in enumerate(tokens):
        if not tok.free:
            continue
        after_number = i > 0 and _PHONEISH.match(tokens[i - 1].text) is not None
        if tok.text.startswith("#") and after_number:
            continue
        if _MRN_LABEL.match(tok.text) and (tok.text.lower().startswith("mrn") or tok.text == "#"):
            tok.kind = "label"
            j = _next_free(tokens, i + 1)
            while j is not None and _MRN_LABEL.match(tokens[j].text):
                tokens[j].kind = "label"
                j = _next_free(tokens, j + 1)
            if j is not None:
                tokens[j].kind = "mrn"
                _add(mrns, normalize_mrn(tokens[j].text))
        elif _MRN_LABELLED.match(tok.text):
            value = normalize_mrn(tok.text)
            if value:
                tok.kind = "mrn"
                _add(mrns, value)


def _is_month(text: str) -> bool:
    return text.lower().strip(".,") in MONTHS


def _claim_dates(
    tokens: list[_Token],
    dates: list[datetime.date],
    mrns: list[str],
    order: str,
    today: datetime.date,
) -> None:
    def keep(readings: list[datetime.date]) -> None:
        for d in readings:
            if d not in dates:
                dates.append(d)

    # Spans with a month name: "March 14, 1985", "14 Mar 85", "Mar 14th 1985".
    i = 0
    while i < len(tokens):
        claimed = False
        for length in range(min(_MAX_DATE_TOKENS, len(tokens) - i), 1, -1):
            span = tokens[i : i + length]
            if not all(t.free or t.kind == "comma" for t in span):
                continue
            if span[0].kind == "comma" or span[-1].kind == "comma":
                continue
            if not any(_is_month(t.text) for t in span):
                continue
            readings = parse_dates(" ".join(t.text for t in span), order, today)
            if readings:
                keep(readings)
                for t in span:
                    t.kind = "date"
                i += length
                claimed = True
                break
        if not claimed:
            i += 1
    # Single tokens: "3/14/85", "1985-03-14", "14.03.1985", "14-Mar-1985", "19850314".
    for tok in tokens:
        if not tok.free:
            continue
        text = tok.bare
        if _COMPACT_DATE.match(text):
            keep(parse_dates(text, order, today))
            tok.kind = "date+mrn"
            _add(mrns, normalize_mrn(text))
        elif _NUMERIC_DATE.match(text) or _NAMED_DATE.match(text):
            readings = parse_dates(text, order, today)
            if readings:
                keep(readings)
                tok.kind = "date"


def _phone_part(tok: _Token) -> bool:
    return tok.free and (
        _PHONEISH.match(tok.text) is not None
        or _EXT_MARK.match(tok.text) is not None
        or _EXT_WITH_DIGITS.match(tok.text) is not None
    )


def _is_ext(tok: _Token) -> bool:
    return _EXT_MARK.match(tok.text) is not None or _EXT_WITH_DIGITS.match(tok.text) is not None


def _phone_span(span: list[_Token], region: str) -> Phone | None:
    if _is_ext(span[0]) or _EXT_MARK.match(span[-1].text):
        return None
    main: list[str] = []
    for tok in span:
        if _is_ext(tok):
            break
        main.append(tok.text)
    digits = digits_only("".join(main))
    international = "".join(main).lstrip("([").lower().removeprefix("tel:").startswith("+")
    if not (len(digits) >= 10 or (international and len(digits) >= 7)) or len(digits) > 17:
        return None
    phone = normalize_phone(" ".join(t.text for t in span), region)
    return phone if phone.valid else None


def _claim_phones(tokens: list[_Token], phones: list[Phone], region: str) -> None:
    """Full numbers, trying the longest run of digit-ish tokens first ("(555) 010 2233")."""
    i = 0
    while i < len(tokens):
        if not _phone_part(tokens[i]) or _is_ext(tokens[i]):
            i += 1
            continue
        end = i
        while end < len(tokens) and end - i < _MAX_PHONE_TOKENS and _phone_part(tokens[end]):
            end += 1
        found = False
        for j in range(end, i, -1):
            phone = _phone_span(tokens[i:j], region)
            if phone is not None:
                if all(p.e164 != phone.e164 for p in phones):
                    phones.append(phone)
                for t in tokens[i:j]:
                    t.kind = "phone"
                i = j
                found = True
                break
        if not found:
            i += 1


def _claim_numbers(tokens: list[_Token], fragments: list[str], mrns: list[str]) -> None:
    """Leftover numbers: 4-7 digits may end a phone number; any number may be an MRN."""
    run: list[str] = []

    def close_run() -> None:
        joined = "".join(digits_only(t) for t in run)
        if len(run) > 1 and 4 <= len(joined) <= 7:
            _add(fragments, joined)
        run.clear()

    for tok in tokens:
        if not tok.free or not any(c.isdigit() for c in tok.text):
            close_run()
            continue
        tok.kind = "number"
        text = tok.bare
        if _PHONEISH.match(text) and not text.startswith("+") and "/" not in text:
            digits = digits_only(text)
            if 4 <= len(digits) <= 7:
                _add(fragments, digits)
            run.append(text)
        else:
            close_run()
        _add(mrns, normalize_mrn(text))
    close_run()


def _birth_years(tokens: list[_Token], today: datetime.date) -> list[int]:
    """Leftover numbers of four digits that may be a year of birth. Staff type "john smith
    1980" for the year far more often than for a phone ending, so the number is read
    both ways (and as an MRN): read as a phone ending only, it hid every John Smith."""
    years: list[int] = []
    for tok in tokens:
        text = tok.bare
        if tok.kind == "number" and len(text) == 4 and text.isascii() and text.isdigit():
            year = int(text)
            if MIN_YEAR <= year <= today.year:
                _add(years, year)
    return years


def _claim_names(tokens: list[_Token]) -> tuple[list[str], list[str], list[str]]:
    """Names in typed order; "Last, First" fills family and given."""
    before: list[str] = []
    after: list[str] = []
    seen_comma = False
    for tok in tokens:
        if tok.kind == "comma":
            seen_comma = seen_comma or bool(before)
            continue
        if not tok.free:
            continue
        low = tok.text.lower()
        if low in _ALWAYS_LABELS or (low.endswith(":") and low[:-1] in _COLON_LABELS):
            tok.kind = "label"
            continue
        tok.kind = "name"
        (after if seen_comma else before).append(tok.text)
    family = name_tokens(" ".join(before))
    given = name_tokens(" ".join(after))
    if family and given:
        return family + given, given, family
    return name_tokens(" ".join(before + after)), [], []


def parse_query(
    text: str,
    *,
    region: str = "US",
    date_order: str = "MDY",
    today: datetime.date | None = None,
    max_chars: int = MAX_QUERY_CHARS,
) -> ParsedQuery:
    """Read a search-box string; never raises, and input past `max_chars` is ignored."""
    if not isinstance(text, str):
        text = ""
    if today is None:
        today = datetime.date.today()
    max_chars = min(max_chars, MAX_QUERY_CHARS)
    trimmed = _truncate(text, max_chars)
    prepared = _prepare(trimmed, max_chars)
    tokens = [_Token(t, "comma" if t in ",;" else "") for t in _TOKEN.findall(prepared)]
    emails: list[Email] = []
    mrns: list[str] = []
    dates: list[datetime.date] = []
    phones: list[Phone] = []
    fragments: list[str] = []
    _claim_emails(tokens, emails)
    _claim_mrns(tokens, mrns)
    _claim_dates(tokens, dates, mrns, date_order, today)
    _claim_phones(tokens, phones, region)
    _claim_numbers(tokens, fragments, mrns)
    names, given, family = _claim_names(tokens)
    years = _birth_years(tokens, today) if names else []  # a year alone finds no one
    return ParsedQuery(
        text=trimmed,
        names=tuple(names),
        given=tuple(given),
        family=tuple(family),
        phones=tuple(phones),
        phone_fragments=tuple(fragments),
        emails=tuple(emails),
        birth_dates=tuple(dates),
        mrns=tuple(mrns),
        birth_years=tuple(years),
    )
