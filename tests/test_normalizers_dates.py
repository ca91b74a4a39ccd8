"""Birth dates as typed -> every plausible reading."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizers.dates import parse_dates

TODAY = datetime.date(2026, 3, 1)
D = datetime.date


@pytest.mark.parametrize(
    ("raw", "readings"),
    [
        ("1985-03-14", [D(1985, 3, 14)]),
        ("1985-3-14", [D(1985, 3, 14)]),
        ("1985/03/14", [D(1985, 3, 14)]),
        ("1985.03.14", [D(1985, 3, 14)]),
        ("03/14/1985", [D(1985, 3, 14)]),
        ("3/14/1985", [D(1985, 3, 14)]),
        ("3/14/85", [D(1985, 3, 14)]),
        ("03-14-1985", [D(1985, 3, 14)]),
        ("3-14-1985", [D(1985, 3, 14)]),
        ("03 14 1985", [D(1985, 3, 14)]),
        ("14/03/1985", [D(1985, 3, 14)]),  # month 14 impossible: only the swapped reading
        ("14.03.1985", [D(1985, 3, 14)]),
        ("14.3.85", [D(1985, 3, 14)]),
        ("Mar 14 1985", [D(1985, 3, 14)]),
        ("Mar. 14, 1985", [D(1985, 3, 14)]),
        ("March 14, 1985", [D(1985, 3, 14)]),
        ("march 14 1985", [D(1985, 3, 14)]),
        ("MARCH 14TH, 1985", [D(1985, 3, 14)]),
        ("14 March 1985", [D(1985, 3, 14)]),
        ("14th of March 1985", [D(1985, 3, 14)]),
        ("14-Mar-1985", [D(1985, 3, 14)]),
        ("14-MAR-85", [D(1985, 3, 14)]),
        ("Mar-14-1985", [D(1985, 3, 14)]),
        ("1985 Mar 14", [D(1985, 3, 14)]),
        ("14 Sept 1985", [D(1985, 9, 14)]),
        ("Mar 14 85", [D(1985, 3, 14)]),
        ("19850314", [D(1985, 3, 14)]),
        ("03141985", [D(1985, 3, 14)]),
        ("14031985", [D(1985, 3, 14)]),
        ("03/04/1985", [D(1985, 3, 4), D(1985, 4, 3)]),
        ("3/4/85", [D(1985, 3, 4), D(1985, 4, 3)]),
        ("03.04.1985", [D(1985, 4, 3), D(1985, 3, 4)]),  # dots mean day first
        ("03041985", [D(1985, 3, 4), D(1985, 4, 3)]),
        ("3/3/1985", [D(1985, 3, 3)]),
        ("02/29/2000", [D(2000, 2, 29)]),
        ("1/1/24", [D(2024, 1, 1)]),
        ("1/1/26", [D(2026, 1, 1)]),
        ("12/1/26", [D(1926, 12, 1), D(2026, 1, 12)]),  # 2026-12-01 is in the future
        ("1/1/30", [D(1930, 1, 1)]),
        ("1/1/00", [D(2000, 1, 1)]),
        ("٠٣/١٤/١٩٨٥", [D(1985, 3, 14)]),
        ("  3/14/1985  ", [D(1985, 3, 14)]),
        ("1880-01-01", [D(1880, 1, 1)]),
        ("2026-03-01", [D(2026, 3, 1)]),
    ],
)
def test_readings_mdy(raw: str, readings: list[datetime.date]) -> None:
    assert parse_dates(raw, today=TODAY) == readings


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "smith",
        "2/30/1985",
        "13/13/1985",
        "00/10/1985",
        "1985-13-01",
        "1985-02-29",
        "2/29/1900",
        "1/1/1879",
        "2026-03-02",
        "01/01/2027",
        "1985",
        "03/1985",
        "Mar 1985",
        "March",
        "Mar 14",
        "3/14/5",
        "3/14/198",
        "3/14-1985",
        "555-010-2233",
        "19851314",
        "12345678",
        "Jan Feb 1985",
        "Thu Mar 14 1985",
        "Mär 14 1985",
        "3/14/85abc",
        "1" * 100,
    ],
)
def test_no_reading(raw: str) -> None:
    assert parse_dates(raw, today=TODAY) == []


@pytest.mark.parametrize(
    ("raw", "order", "readings"),
    [
        ("03/04/1985", "DMY", [D(1985, 4, 3), D(1985, 3, 4)]),
        ("14/03/1985", "DMY", [D(1985, 3, 14)]),
        ("03/14/1985", "DMY", [D(1985, 3, 14)]),
        ("03041985", "DMY", [D(1985, 4, 3), D(1985, 3, 4)]),
        ("85/03/04", "YMD", [D(1985, 3, 4), D(1985, 4, 3)]),
        ("85/03/14", "YMD", [D(1985, 3, 14)]),
        ("3/14/85", "YMD", [D(1985, 3, 14)]),
        ("1985-03-04", "DMY", [D(1985, 3, 4)]),
        ("03/04/1985", "dmy", [D(1985, 4, 3), D(1985, 3, 4)]),
        ("03/04/1985", "nonsense", [D(1985, 3, 4), D(1985, 4, 3)]),
    ],
)
def test_orders(raw: str, order: str, readings: list[datetime.date]) -> None:
    assert parse_dates(raw, order, today=TODAY) == readings


def test_default_today_rejects_tomorrow() -> None:
    tomorrow = datetime.date.today() + datetime.timedelta(days=1)
    assert parse_dates(tomorrow.isoformat()) == []
    assert parse_dates("1985-03-14") == [D(1985, 3, 14)]


birth_dates = st.dates(min_value=D(1880, 1, 1), max_value=TODAY)

# (format, order, reading that must come first)
UNAMBIGUOUS = ["%Y-%m-%d", "%b %d %Y", "%B %d, %Y", "%d %B %Y", "%d-%b-%Y", "%Y%m%d"]


@settings(max_examples=200, deadline=None)
@given(birth_dates, st.sampled_from(UNAMBIGUOUS))
def test_round_trip_unambiguous_forms(day: datetime.date, fmt: str) -> None:
    readings = parse_dates(day.strftime(fmt), today=TODAY)
    assert readings and readings[0] == day


@settings(max_examples=200, deadline=None)
@given(birth_dates)
def test_round_trip_numeric_forms_primary_first(day: datetime.date) -> None:
    assert parse_dates(day.strftime("%m/%d/%Y"), "MDY", TODAY)[0] == day
    assert parse_dates(day.strftime("%d/%m/%Y"), "DMY", TODAY)[0] == day
    assert parse_dates(day.strftime("%d.%m.%Y"), "MDY", TODAY)[0] == day
    assert parse_dates(day.strftime("%m-%d-%Y"), "MDY", TODAY)[0] == day
    assert day in parse_dates(day.strftime("%d/%m/%Y"), "MDY", TODAY)
    assert day in parse_dates(day.strftime("%m%d%Y"), "MDY", TODAY)
    assert day in parse_dates(day.strftime("%d%m%Y"), "MDY", TODAY)


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=D(1927, 3, 2), max_value=TODAY))
def test_round_trip_two_digit_years(day: datetime.date) -> None:
    # Within the last 99 years a two-digit year is unambiguous.
    assert parse_dates(day.strftime("%m/%d/%y"), "MDY", TODAY)[0] == day


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["MDY", "DMY", "YMD", "", "xx"]))
def test_total(raw: str, order: str) -> None:
    readings = parse_dates(raw, order, TODAY)
    assert len(readings) == len(set(readings))
    assert all(D(1880, 1, 1) <= d <= TODAY for d in readings)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789/-. ,marchjnst", max_size=20))
def test_total_on_date_like_text(raw: str) -> None:
    readings = parse_dates(raw, today=TODAY)
    assert all(D(1880, 1, 1) <= d <= TODAY for d in readings)
