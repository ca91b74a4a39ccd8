"""Phone numbers as typed -> E.164, with the digits kept for partial matching.

Validity decision: clinic data is full of fictional 555 numbers ("(555) 010-2233") that
libphonenumber rightly calls invalid. A number counts as valid here when libphonenumber says
it is valid, or when it has exactly a possible full length for its country (not merely a
local-only length) and, for NANP (+1), an area code starting 2-9. Such numbers get an E.164
form so documents and queries meet on it; nothing here dials them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, ValidationResult

from normalizers.text import ascii_digits, digits_only

# libphonenumber refuses longer input; anything longer is not a phone number anyway.
_MAX_LEN = 250

# Extension markers for the fallback path, when libphonenumber could not read the number.
_EXTENSION = re.compile(
    r"(?:[;,]?\s*(?:ext(?:ension)?\.?|x|#|;\s*ext=)\s*[:.]?\s*)(\d{1,7})\s*#?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Phone:
    """A phone number as read: `national` is the national significant number's digits."""

    raw: str
    e164: str | None
    national: str | None
    last4: str | None
    extension: str | None
    valid: bool


def _parse(text: str, region: str) -> PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    except Exception:  # libphonenumber on odd input; never let it escape
        return None


def _acceptable(number: PhoneNumber) -> bool:
    """Valid, or of a full possible length (see module docstring).

    The cheap length test runs first: is_valid_number is the costliest call of
    building a document and most numbers pass without it.
    """
    try:
        if _possible_full_length(number):
            return True
        return bool(phonenumbers.is_valid_number(number))
    except Exception:
        return False


def _possible_full_length(number: PhoneNumber) -> bool:
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != ValidationResult.IS_POSSIBLE:
        return False
    national = phonenumbers.national_significant_number(number)
    if len(national) < 6:
        return False
    return not (number.country_code == 1 and national[:1] in ("0", "1"))


def _invalid(raw: str, text: str) -> Phone:
    match = _EXTENSION.search(text)
    extension = match.group(1) if match else None
    main = text[: match.start()] if match else text
    digits = digits_only(main)
    return Phone(
        raw=raw,
        e164=None,
        national=None,
        last4=digits[-4:] if len(digits) >= 4 else None,
        extension=ascii_digits(extension) if extension else None,
        valid=False,
    )


# The everyday North American forms, read without libphonenumber (a third of the cost
# of building a document): "(555) 010-2233", "555.010.2233", "+1 555 010 2233",
# "1-555-010-2233", "5550102233". Same answer as the full path (tested).
_NANP = re.compile(r"(\+?1[ .-]?)?\(?([2-9]\d{2})\)?[ .-]?(\d{3})[ .-]?(\d{4})")


def _nanp_fast_path(raw: str, text: str, region: str) -> Phone | None:
    match = _NANP.fullmatch(text)
    if match is None:
        return None
    prefix = match.group(1) or ""
    if region != "US" and not prefix.startswith("+"):
        return None
    national = match.group(2) + match.group(3) + match.group(4)
    return Phone(
        raw=raw,
        e164="+1" + national,
        national=national,
        last4=national[-4:],
        extension=None,
        valid=True,
    )


def normalize_phone(raw: str, region: str = "US") -> Phone:
    """Read a phone number typed in any common form; never raises.

    National forms use `region`; "+" and the region's international prefix are understood,
    and a leading "00" is taken as the international prefix even where the region uses
    another one (US staff copying a European number).
    """
    if not isinstance(raw, str):
        raw = ""
    text = ascii_digits(raw.strip())
    region_code = region.strip().upper() if isinstance(region, str) else "US"
    if not text or len(text) > _MAX_LEN or not any("0" <= c <= "9" for c in text):
        return _invalid(raw, text[:_MAX_LEN])
    fast = _nanp_fast_path(raw, text, region_code)
    if fast is not None:
        return fast
    return _full_path(raw, text, region_code)


def _full_path(raw: str, text: str, region_code: str) -> Phone:
    candidates = [_parse(text, region_code)]
    digits = digits_only(text)
    stripped = text.lstrip(" ([")
    if digits.startswith("00") and stripped.startswith("00"):
        candidates.append(_parse("+" + stripped[2:], region_code))
    for number in candidates:
        if number is not None and _acceptable(number):
            national = phonenumbers.national_significant_number(number)
            return Phone(
                raw=raw,
                e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
                national=national,
                last4=national[-4:] if len(national) >= 4 else None,
                extension=number.extension or None,
                valid=True,
            )
    return _invalid(raw, text)
