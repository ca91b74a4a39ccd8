"""parse_query is total, bounded and finds what was typed, whatever the order."""

import datetime
import json
import time

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizers.query import parse_query
from search_api.plan import near_dates

TODAY = datetime.date(2026, 3, 1)
FAST = settings(max_examples=200, deadline=None)

query_like = st.lists(
    st.sampled_from([*"abcjmrsxy MRN#:@.,-/()+0123456789'’éß\t", "Mar", " ext ", "  "]),
    max_size=40,
).map("".join)


@FAST
@given(st.one_of(st.text(), query_like), st.sampled_from(["MDY", "DMY", "YMD", "?"]))
def test_total_and_json_safe(text: str, order: str) -> None:
    parsed = parse_query(text, date_order=order, today=TODAY)
    as_dict = parsed.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert parsed.is_empty == (
        not parsed.names
        and not parsed.phones
        and not parsed.phone_fragments
        and not parsed.emails
        and not parsed.birth_dates
        and not parsed.mrns
    )
    assert all(p.valid and p.e164 for p in parsed.phones)
    assert all(e.valid and e.canonical for e in parsed.emails)
    assert all(f.isdigit() and 4 <= len(f) <= 7 for f in parsed.phone_fragments)
    assert all(datetime.date(1880, 1, 1) <= d <= TODAY for d in parsed.birth_dates)
    assert len(set(parsed.birth_dates)) == len(parsed.birth_dates)
    assert len(set(parsed.mrns)) == len(parsed.mrns)
    if parsed.given or parsed.family:
        assert parsed.given and parsed.family
        assert parsed.names == parsed.family + parsed.given


@settings(max_examples=20, deadline=None)
@given(st.text(min_size=2000, max_size=5000))
def test_long_input_stays_bounded(text: str) -> None:
    parse_query(text, today=TODAY)


def test_worst_case_is_fast() -> None:
    start = time.perf_counter()
    for text in ["1 " * 2000, "555 " * 2000, "mar 1 " * 1000, "ﷺ" * 600, "a@b.com " * 300]:
        parse_query(text, today=TODAY)
    assert time.perf_counter() - start < 2.0


names = st.sampled_from(["smith", "garcia", "obrien", "nguyen", "muller", "jones", "lee"])
dates = st.dates(min_value=datetime.date(1900, 1, 1), max_value=TODAY)
date_formats = st.sampled_from(["%m/%d/%Y", "%Y-%m-%d", "%b %d %Y", "%d %B %Y", "%Y%m%d"])
phone_formats = st.sampled_from(
    [
        phonenumbers.PhoneNumberFormat.NATIONAL,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.E164,
    ]
)
us_lines = st.integers(min_value=0, max_value=9999).map(lambda n: f"+1212555{n:04d}")


@FAST
@given(names, dates, date_formats, us_lines, phone_formats, st.permutations([0, 1, 2]))
def test_parts_found_in_any_order(
    name: str,
    day: datetime.date,
    date_format: str,
    e164: str,
    phone_format: int,
    order: list[int],
) -> None:
    phone = phonenumbers.format_number(phonenumbers.parse(e164, None), phone_format)
    parts = [name, day.strftime(date_format), phone]
    parsed = parse_query(" ".join(parts[i] for i in order), today=TODAY)
    assert parsed.names == (name,)
    assert parsed.birth_dates[0] == day
    assert [p.e164 for p in parsed.phones] == [e164]


def _near_by_strptime(day: datetime.date) -> list[datetime.date]:
    """The definition near_dates implements: every date one digit of YYYYMMDD away that
    strptime accepts (1880 to today), and the day and month swapped."""
    out = set()
    if day.day <= 12 and day.day != day.month:
        out.add(day.replace(month=day.day, day=day.month))
    digits = day.strftime("%Y%m%d")
    for i, original in enumerate(digits):
        for replacement in "0123456789":
            if replacement == original:
                continue
            try:
                near = datetime.datetime.strptime(
                    digits[:i] + replacement + digits[i + 1 :], "%Y%m%d"
                ).date()
            except ValueError:
                continue
            if near.year >= 1880 and near <= datetime.date.today():
                out.add(near)
    return sorted(out - {day})


@FAST
@given(st.dates(min_value=datetime.date(1880, 1, 1), max_value=datetime.date.today()))
def test_near_dates_are_the_dates_one_digit_or_a_swap_away(day: datetime.date) -> None:
    assert near_dates([day]) == _near_by_strptime(day)
