"""Dates of birth as typed -> every plausible calendar reading, primary first."""

from __future__ import annotations

import datetime
import re

from normalizers.text import ascii_digits

MIN_YEAR = 1880
_MAX_INPUT = 64
ORDERS = ("MDY", "DMY", "YMD")

MONTHS: dict[str, int] = {
    "jan": 1,
    "january": 1,
    "feb": 2,
    "february": 2,
    "mar": 3,
    "march": 3,
    "apr": 4,
    "april": 4,
    "may": 5,
    "jun": 6,
    "june": 6,
    "jul": 7,
    "july": 7,
    "aug": 8,
    "august": 8,
    "sep": 9,
    "sept": 9,
    "september": 9,
    "oct": 10,
    "october": 10,
    "nov": 11,
    "november": 11,
    "dec": 12,
    "december": 12,
}

_NUMERIC = re.compile(r"^(\d{1,4})([/\-. ])(\d{1,2})\2(\d{1,4})$")
_COMPACT = re.compile(r"^\d{8}$")
_WORDS = re.compile(r"[a-z]+|\d+|[^a-z\d\s,.\-/]")
_ORDINAL = frozenset({"st", "nd", "rd", "th"})
_FILLER = frozenset({"of", "the"})


def plausible_date(y: int, m: int, d: int, today: datetime.date) -> datetime.date | None:
    """The calendar date y-m-d when it can be a date of birth: from MIN_YEAR, not after
    today; None otherwise (the year is checked before a date is built)."""
    if y < MIN_YEAR:
        return None
    try:
        value = datetime.date(y, m, d)
    except ValueError:
        return None
    return value if value <= today else None


def _year(text: str, m: int, d: int, today: datetime.date) -> int | None:
    """Full year from the typed year; two digits resolve to the latest past century."""
    if len(text) == 4:
        return int(text)
    if len(text) != 2:
        return None
    yy = int(text)
    for century in (2000, 1900):
        candidate = century + yy
        if plausible_date(candidate, m, d, today) is not None:
            return candidate
    return None


def _emit(readings: list[datetime.date], y: str, m: int, d: int, today: datetime.date) -> None:
    year = _year(y, m, d, today)
    if year is None:
        return
    value = plausible_date(year, m, d, today)
    if value is not None and value not in readings:
        readings.append(value)


def _numeric(
    a: str, sep: str, b: str, c: str, order: str, today: datetime.date
) -> list[datetime.date]:
    readings: list[datetime.date] = []
    if len(a) == 4:  # ISO-like: year first, always year-month-day
        if len(c) <= 2:
            _emit(readings, a, int(b), int(c), today)
        return readings
    if len(a) > 2 or len(b) > 2 or len(c) == 3 or len(c) == 1:
        return readings
    if sep == "." and order != "YMD":
        order = "DMY"  # dots mean day.month.year in the countries that type them
    if order == "YMD" and len(c) == 2:
        # yy/mm/dd, with the yy/dd/mm swap as the second reading
        _emit(readings, a, int(b), int(c), today)
        _emit(readings, a, int(c), int(b), today)
        if readings:
            return readings
        order = "MDY"  # "3/14/85" cannot start with a year; read it the US way
    first, second = int(a), int(b)
    if order == "DMY":
        _emit(readings, c, second, first, today)
        _emit(readings, c, first, second, today)
    else:
        _emit(readings, c, first, second, today)
        _emit(readings, c, second, first, today)
    return readings


def _compact(text: str, order: str, today: datetime.date) -> list[datetime.date]:
    readings: list[datetime.date] = []
    _emit(readings, text[:4], int(text[4:6]), int(text[6:]), today)
    mdy = (text[4:], int(text[:2]), int(text[2:4]))
    dmy = (text[4:], int(text[2:4]), int(text[:2]))
    for y, m, d in (dmy, mdy) if order == "DMY" else (mdy, dmy):
        _emit(readings, y, m, d, today)
    return readings


def _with_month_name(text: str, today: datetime.date) -> list[datetime.date]:
    words = [w for w in _WORDS.findall(text) if w not in _FILLER]
    months = [i for i, w in enumerate(words) if w in MONTHS]
    if len(months) != 1:
        return []
    month = MONTHS[words[months[0]]]
    numbers: list[str] = []
    for i, w in enumerate(words):
        if i == months[0]:
            continue
        if w.isdigit():
            numbers.append(w)
        elif not (w in _ORDINAL and i > 0 and words[i - 1].isdigit()):
            return []
    if len(numbers) != 2:
        return []
    first, second = numbers
    if len(first) == 4 and len(second) <= 2:
        year, day = first, second
    elif len(second) in (2, 4) and len(first) <= 2:
        year, day = second, first
    else:
        return []
    readings: list[datetime.date] = []
    _emit(readings, year, month, int(day), today)
    return readings


def parse_dates(
    text: str, order: str = "MDY", today: datetime.date | None = None
) -> list[datetime.date]:
    """All plausible readings of a birth date as typed, the primary reading first.

    Dates in the future or before 1880 are not birth dates and are dropped. When day and month
    could be swapped both readings are kept, the configured order first, because "03/04/1985"
    typed by a visitor from abroad is as likely as not the other date.
    """
    if not isinstance(text, str):
        return []
    if today is None:
        today = datetime.date.today()
    order = order.upper() if isinstance(order, str) and order.upper() in ORDERS else "MDY"
    cleaned = " ".join(ascii_digits(text).lower().split()).strip(" ,")
    if not cleaned or len(cleaned) > _MAX_INPUT:
        return []
    try:
        if _COMPACT.match(cleaned):
            return _compact(cleaned, order, today)
        match = _NUMERIC.match(cleaned)
        if match:
            a, sep, b, c = match.groups()
            return _numeric(a, sep, b, c, order, today)
        if any(ch.isalpha() for ch in cleaned):
            return _with_month_name(cleaned, today)
    except (ValueError, OverflowError):
        return []
    return []
