"""Phone numbers as typed -> E.164."""

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from normalizers.phones import Phone, normalize_phone

US = "+15550102233"
UK = "+442079460958"


@pytest.mark.parametrize(
    ("raw", "region", "e164", "extension"),
    [
        ("(555) 010-2233", "US", US, None),
        ("555.010.2233", "US", US, None),
        ("555-010-2233", "US", US, None),
        ("555 010 2233", "US", US, None),
        ("5550102233", "US", US, None),
        ("+1 555 010 2233", "US", US, None),
        ("+1 (555) 010-2233", "US", US, None),
        ("1-555-010-2233", "US", US, None),
        ("1 (555) 010-2233", "US", US, None),
        ("+15550102233", "US", US, None),
        ("tel:+1-555-010-2233", "US", US, None),
        ("  (555) 010-2233  ", "US", US, None),
        ("(555) 010-2233 x12", "US", US, "12"),
        ("555-010-2233 x 12", "US", US, "12"),
        ("555-010-2233 ext. 12", "US", US, "12"),
        ("555-010-2233 ext 12", "US", US, "12"),
        ("555-010-2233 extension 12", "US", US, "12"),
        ("555-010-2233 #12", "US", US, "12"),
        ("tel:+1-555-010-2233;ext=12", "US", US, "12"),
        ("(212) 555-0199", "US", "+12125550199", None),
        ("+1 416 555 0123", "US", "+14165550123", None),
        ("５５５－０１０－２２３３", "US", US, None),
        ("٥٥٥٠١٠٢٢٣٣", "US", US, None),
        ("00 44 20 7946 0958", "GB", UK, None),
        ("00 44 20 7946 0958", "US", UK, None),
        ("0044 20 7946 0958", "US", UK, None),
        ("011 44 20 7946 0958", "US", UK, None),
        ("+44 20 7946 0958", "US", UK, None),
        ("+44 (0)20 7946 0958", "US", UK, None),
        ("020 7946 0958", "GB", UK, None),
        ("020 7946 0958", "gb", UK, None),
        ("07700 900123", "GB", "+447700900123", None),
        ("030 123456", "DE", "+4930123456", None),
        ("+49 30 123456", "US", "+4930123456", None),
        ("06 12 34 56 78", "FR", "+33612345678", None),
    ],
)
def test_valid_numbers(raw: str, region: str, e164: str, extension: str | None) -> None:
    phone = normalize_phone(raw, region)
    assert phone.valid
    assert phone.e164 == e164
    assert phone.extension == extension
    assert phone.raw == raw
    assert phone.national is not None
    assert e164.endswith(phone.national)
    assert phone.last4 == phone.national[-4:]


def test_national_and_last4() -> None:
    assert normalize_phone("(555) 010-2233") == Phone(
        raw="(555) 010-2233",
        e164=US,
        national="5550102233",
        last4="2233",
        extension=None,
        valid=True,
    )


@pytest.mark.parametrize(
    ("raw", "last4", "extension"),
    [
        ("555-0102", "0102", None),  # local-only length: a fragment, not a full number
        ("555-0102 x12", "0102", "12"),
        ("0102", "0102", None),
        ("123", None, None),
        ("", None, None),
        ("   ", None, None),
        ("john smith", None, None),
        ("0123456789", "6789", None),  # NANP area code cannot start with 0
        ("1234567890", "7890", None),
        ("555-010-22334455667788", "7788", None),
        ("+999 123 456 7890", "7890", None),
        ("19850314", "0314", None),
        ("1" * 300, "1111", None),
        ("\x00\x01", None, None),
    ],
)
def test_invalid_numbers(raw: str, last4: str | None, extension: str | None) -> None:
    phone = normalize_phone(raw)
    assert not phone.valid
    assert phone.e164 is None
    assert phone.national is None
    assert phone.raw == raw
    assert phone.last4 == last4
    assert phone.extension == extension


@pytest.mark.parametrize("region", ["", "ZZ", "usa", "001", "\x00", "US "])
def test_odd_regions_never_raise(region: str) -> None:
    normalize_phone("(555) 010-2233", region)
    assert normalize_phone("+44 20 7946 0958", region).e164 == UK


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["US", "GB", "DE", "", "XX"]))
def test_total(raw: str, region: str) -> None:
    phone = normalize_phone(raw, region)
    assert phone.valid == (phone.e164 is not None)
    if phone.last4 is not None:
        assert len(phone.last4) == 4 and phone.last4.isdigit()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789+-.() x#ext", max_size=30))
def test_total_on_phone_like_text(raw: str) -> None:
    phone = normalize_phone(raw)
    if phone.valid:
        assert phone.e164 is not None and phone.e164.startswith("+")


_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
_TYPES = [PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE]
_FORMATS = [
    PhoneNumberFormat.NATIONAL,
    PhoneNumberFormat.INTERNATIONAL,
    PhoneNumberFormat.E164,
    PhoneNumberFormat.RFC3966,
]


@st.composite
def valid_numbers(draw: st.DrawFn) -> tuple[str, phonenumbers.PhoneNumber]:
    region = draw(st.sampled_from(["US", "US", "CA", "GB", "DE", "FR", "MX", "IN", *_REGIONS]))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(_TYPES)))
    assume(example is not None)
    assert example is not None
    national = str(example.national_number)
    tail = draw(st.text(alphabet="0123456789", min_size=4, max_size=4))
    number = phonenumbers.PhoneNumber(
        country_code=example.country_code,
        national_number=int(national[:-4] + tail),
        italian_leading_zero=example.italian_leading_zero,
        number_of_leading_zeros=example.number_of_leading_zeros,
    )
    assume(phonenumbers.is_valid_number(number))
    return region, number


@settings(max_examples=200, deadline=None)
@given(valid_numbers(), st.sampled_from(_FORMATS))
def test_format_round_trip(case: tuple[str, phonenumbers.PhoneNumber], fmt: int) -> None:
    region, number = case
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    typed = phonenumbers.format_number(number, fmt)
    phone = normalize_phone(typed, region)
    assert phone.valid, typed
    assert phone.e164 == e164, typed
    if fmt != PhoneNumberFormat.NATIONAL:  # international forms need no region at all
        assert normalize_phone(typed, "US").e164 == e164


@pytest.mark.parametrize("fmt", _FORMATS)
def test_round_trip_of_fictional_555_number(fmt: int) -> None:
    number = phonenumbers.parse(US, None)
    assert normalize_phone(phonenumbers.format_number(number, fmt)).e164 == US


@given(
    area=st.integers(200, 999),
    exchange=st.integers(0, 999),
    line=st.integers(0, 9999),
    style=st.sampled_from(
        [
            "({a}) {e}-{l}",
            "{a}.{e}.{l}",
            "+1 {a} {e} {l}",
            "1-{a}-{e}-{l}",
            "{a}{e}{l}",
            "+1 ({a}) {e}-{l}",
            "1 ({a}){e}-{l}",
            "+1{a}{e}{l}",
        ]
    ),
    region=st.sampled_from(["US", "GB", "DE", "CA"]),
)
@settings(max_examples=300, deadline=None)
def test_nanp_fast_path_agrees_with_libphonenumber(
    area: int, exchange: int, line: int, style: str, region: str
) -> None:
    from normalizers.phones import _full_path

    raw = style.format(a=f"{area:03d}", e=f"{exchange:03d}", l=f"{line:04d}")
    assert normalize_phone(raw, region) == _full_path(raw, raw, region)
