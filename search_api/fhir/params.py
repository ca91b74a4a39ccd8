"""FHIR search parameters -> the service's SearchInput (the same search /v1 runs).

Name parameters become ranked name words (the service's prefix, typo and nickname
tolerance applies), `:exact`, `:contains`, birthdate, gender, postal code, active
and _id become filters (engines.filters), identifier and telecom become the
identifiers the search box understands. Repeated parameters AND; comma-separated
values OR where the table below says so. Error messages name the parameter and
never repeat its value (it may be patient data).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from engines.filters import Filter, folded_words
from normalizers.identifiers import normalize_mrn
from normalizers.text import digits_only
from search_api.fhir.errors import FhirError
from search_api.fhir.resources import source_id
from search_api.plan import SearchInput

STRING_MODIFIERS = frozenset({"", "exact", "contains"})
# Supported parameter -> supported modifiers ("" = none); listed in the CapabilityStatement.
MODIFIERS: dict[str, frozenset[str]] = {
    "_id": frozenset({""}),
    "identifier": frozenset({""}),
    "name": STRING_MODIFIERS,
    "family": STRING_MODIFIERS,
    "given": STRING_MODIFIERS,
    "phonetic": frozenset({""}),
    "birthdate": frozenset({""}),
    "gender": frozenset({"", "not"}),
    "phone": frozenset({""}),
    "email": frozenset({""}),
    "telecom": frozenset({""}),
    "address-postalcode": frozenset({"", "exact"}),
    "active": frozenset({""}),
}
RESULT_PARAMETERS = frozenset({"_count", "_sort", "_total", "_format"})
SORT_KEYS = frozenset({"_score", "family", "given", "birthdate"})
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
GENDERS = frozenset({"male", "female", "other", "unknown"})
FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
MAX_PARAMETERS = 40
MAX_VALUE_CHARS = 256
_DATE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True)
class FhirSearch:
    """A parsed search: what to run, and how to page and link it."""

    request: SearchInput
    applied: tuple[tuple[str, str], ...]  # recognised parameters as given, for `self` and cursors
    count: int
    total: bool  # _total=accurate (or estimate)
    impossible: bool = False  # e.g. an identifier of another system: nothing can match


@dataclass
class _Criteria:
    name: list[str] = field(default_factory=list)
    given: list[str] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    mrns: set[str] = field(default_factory=set)
    birthdate: list[str] = field(default_factory=list)  # eq, day precision: ranked as well
    impossible: bool = False
    selective: bool = False  # anything beyond gender and active


def _bad(param: str, why: str, issue: str = "invalid") -> FhirError:
    return FhirError(400, issue, f"{param}: {why}")


def _check_value(param: str, value: str) -> None:
    if len(value) > MAX_VALUE_CHARS:
        raise _bad(param, f"value longer than {MAX_VALUE_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in value):
        raise _bad(param, "value holds control characters")


def _split(param: str, value: str, *, allow_or: bool) -> list[str]:
    values = [v.strip() for v in value.split(",")]
    if len(values) > 1 and not allow_or:
        raise _bad(param, "comma-separated alternatives (OR) are not supported", "not-supported")
    if any(not v for v in values):
        raise _bad(param, "empty alternative")
    return values


# -- dates ------------------------------------------------------------------------


def _period(param: str, value: str) -> tuple[str, dt.date, dt.date | None, bool]:
    """(prefix, first day, day after the last or None at the calendar's end, day precision)."""
    m = _DATE.fullmatch(value)
    if not m:
        raise _bad(
            param, "use YYYY, YYYY-MM or YYYY-MM-DD, optionally after eq ne gt lt ge le sa eb ap"
        )
    prefix, year, month, day = m.group(1) or "eq", int(m.group(2)), m.group(3), m.group(4)
    try:
        if day:
            start = dt.date(year, int(month), int(day))
            end = start + dt.timedelta(days=1) if start < dt.date.max else None
        elif month:
            start = dt.date(year, int(month), 1)
            last = calendar.monthrange(year, int(month))[1]
            end = start + dt.timedelta(days=last) if start.replace(day=last) < dt.date.max else None
        else:
            start = dt.date(year, 1, 1)
            end = dt.date(year + 1, 1, 1) if year < dt.MAXYEAR else None
    except ValueError:
        raise _bad(param, "not a calendar date") from None
    return prefix, start, end, bool(day)


def _shift(day: dt.date, days: int) -> dt.date | None:
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return None


def date_filter(param: str, value: str, today: dt.date | None = None) -> tuple[Filter, str | None]:
    """The birthdate filter of one value, and the day to rank by when it names one day (eq)."""
    prefix, start, end, one_day = _period(param, value)
    bounds: tuple[dt.date | None, dt.date | None]
    if prefix in ("eq", "ne"):
        bounds = (start, end)
    elif prefix in ("gt", "sa"):
        bounds = (end, None) if end else (dt.date.max, None)
    elif prefix in ("lt", "eb"):
        bounds = (None, start)
    elif prefix == "ge":
        bounds = (start, None)
    elif prefix == "le":
        bounds = (None, end)
    else:  # ap: the recommended 10% of the distance from today, at least a day
        gap = max(abs(((today or dt.date.today()) - start).days) // 10, 1)
        bounds = (_shift(start, -gap), _shift(end or start, gap))
    op = "not_range" if prefix == "ne" else "range"
    ranked = start.isoformat() if prefix == "eq" and one_day else None
    return Filter("birth_date", op, bounds), ranked


# -- one parameter ----------------------------------------------------------------


def _names(c: _Criteria, param: str, modifier: str, value: str) -> None:
    target = "name" if param == "phonetic" else param
    values = _split(param, value, allow_or=bool(modifier))
    if any(not folded_words(v) for v in values):
        raise _bad(param, "holds no letters or digits to search for")
    c.selective = True
    if modifier == "contains":
        c.filters.append(Filter(target, "contains", tuple(values)))
        return
    if modifier == "exact":
        c.filters.append(Filter(target, "exact", tuple(values)))
        if len(values) > 1:
            return  # alternatives: the filter alone decides
    getattr(c, target).append(values[0])


def _telecom(c: _Criteria, param: str, value: str) -> None:
    (value,) = _split(param, value, allow_or=False)
    system = "email" if param == "email" else "phone" if param == "phone" else ""
    if param == "telecom":
        head, sep, tail = value.partition("|")
        head, value = (head, tail) if sep else ("", value)
        if head not in ("phone", "sms", "email", ""):
            c.impossible = True  # fax, pager, url...: the service holds none
            return
        system = "email" if head == "email" or (not head and "@" in value) else "phone"
    if system == "email":
        if "@" not in value:
            raise _bad(param, "not an e-mail address")
        c.emails.append(value)
    else:
        if len(digits_only(value)) < 4:
            raise _bad(param, "a phone number needs at least 4 digits")
        c.phones.append(value)
    c.selective = True


def _identifier(c: _Criteria, param: str, value: str, mrn_system: str) -> None:
    (value,) = _split(param, value, allow_or=False)
    system, sep, code = value.rpartition("|") if "|" in value else ("", "", value)
    if sep and system != mrn_system:
        c.impossible = True  # another system's identifiers, or explicitly none: not ours
        return
    mrn = normalize_mrn(code)
    if not mrn:
        raise _bad(param, "holds no identifier value")
    c.mrns.add(mrn)
    c.selective = True


def _token(c: _Criteria, param: str, modifier: str, value: str) -> None:
    if param == "gender":
        values = _split(param, value, allow_or=True)
        if not set(values) <= GENDERS:
            raise _bad(param, "use male, female, other or unknown")
        c.filters.append(Filter("sex", "not_in" if modifier == "not" else "in", tuple(values)))
    elif param == "active":
        if value not in ("true", "false"):
            raise _bad(param, "use true or false")
        c.filters.append(Filter("active", "in", (value == "true",)))
    elif param == "_id":
        ids = tuple(s for v in _split(param, value, allow_or=True) if (s := source_id(v)))
        c.filters.append(Filter("id", "in", ids))
        c.impossible |= not ids
        c.selective = True
    elif param == "address-postalcode":
        values = _split(param, value, allow_or=True)
        c.filters.append(
            Filter("postal_code", "in" if modifier == "exact" else "prefix", tuple(values))
        )
        c.selective = True


def _criterion(c: _Criteria, param: str, modifier: str, value: str, mrn_system: str) -> None:
    if param in ("name", "given", "family", "phonetic"):
        _names(c, param, modifier, value)
    elif param in ("phone", "email", "telecom"):
        _telecom(c, param, value)
    elif param == "identifier":
        _identifier(c, param, value, mrn_system)
    elif param == "birthdate":
        for alternative in _split(param, value, allow_or=False):
            found, ranked = date_filter(param, alternative)
            c.filters.append(found)
            if ranked:
                c.birthdate.append(ranked)
        c.selective = True
    else:
        _token(c, param, modifier, value)


# -- the whole search ---------------------------------------------------------------


@dataclass(frozen=True)
class _Results:
    count: int
    sort: tuple[str, ...] = ()
    total: bool = False


def _result_parameter(param: str, value: str, results: _Results, max_count: int) -> _Results:
    if param == "_count":
        if not (value.isascii() and value.isdigit()) or len(value) > 6:
            raise _bad(param, "use a whole number")
        return replace(results, count=min(int(value), max_count))
    if param == "_sort":
        keys = tuple(_split(param, value, allow_or=True))
        if any(k.lstrip("-") not in SORT_KEYS or k.startswith("--") for k in keys):
            raise _bad(param, "sort by _score, family, given or birthdate (- for descending)")
        return replace(results, sort=keys)
    if param == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise _bad(param, "use none, estimate or accurate")
        return replace(results, total=value != "none")
    if value not in FORMATS:
        raise FhirError(406, "not-supported", "_format: only JSON is supported")
    return results


def _recognised(key: str, strict: bool) -> tuple[str, str] | None:
    """(parameter, modifier) of a supported parameter; None for one to ignore."""
    param, _, modifier = key.partition(":")
    if param in RESULT_PARAMETERS and not modifier:
        return param, ""
    if param in MODIFIERS:
        if modifier not in MODIFIERS[param]:
            shown = key if _PARAM_NAME.fullmatch(key) else param
            raise _bad(shown, "modifier not supported", "not-supported")
        return param, modifier
    if strict:
        shown = key if _PARAM_NAME.fullmatch(key) else "a parameter"
        raise _bad(shown, "unknown search parameter (Prefer: handling=strict)")
    return None


def parse_search(
    items: Sequence[tuple[str, str]],
    *,
    strict: bool,
    mrn_system: str,
    max_count: int,
    offset: int = 0,
) -> FhirSearch:
    """Parameters as received (query string and form body, in order) -> FhirSearch."""
    if len(items) > MAX_PARAMETERS:
        raise FhirError(400, "too-costly", f"more than {MAX_PARAMETERS} parameters")
    c = _Criteria()
    results = _Results(count=min(10, max_count))
    applied: list[tuple[str, str]] = []
    for key, raw in items:
        recognised = _recognised(key, strict)
        value = raw.strip()
        if recognised is None or not value:
            continue  # unknown (lenient) or empty: ignored, and left out of `self`
        param, modifier = recognised
        _check_value(param, value)
        applied.append((key, value))
        if param in RESULT_PARAMETERS:
            results = _result_parameter(param, value, results, max_count)
        else:
            _criterion(c, param, modifier, value, mrn_system)
    return _build(c, results, tuple(applied), offset)


def _build(
    c: _Criteria, results: _Results, applied: tuple[tuple[str, str], ...], offset: int
) -> FhirSearch:
    if not c.selective and not c.impossible:
        raise FhirError(
            400,
            "too-costly",
            "too broad: give a name, birthdate, identifier, phone, email, postal code or _id",
        )
    if len(c.phones) > 1 or len(c.emails) > 1:
        raise FhirError(400, "not-supported", "one phone and one e-mail value per search")
    request = SearchInput(
        name=" ".join(c.name) or None,
        given=" ".join(c.given) or None,
        family=" ".join(c.family) or None,
        birthdate=c.birthdate[0] if len(set(c.birthdate)) == 1 else None,
        phone=c.phones[0] if c.phones else None,
        email=c.emails[0] if c.emails else None,
        mrn=next(iter(c.mrns)) if len(c.mrns) == 1 else None,
        include_inactive=True,
        limit=results.count,
        offset=offset,
        filters=tuple(c.filters),
        match_all=True,
        sort=results.sort,
        exhaustive=True,
    )
    return FhirSearch(
        request=request,
        applied=applied,
        count=results.count,
        total=results.total,
        impossible=c.impossible or len(c.mrns) > 1,
    )
