"""Medical record numbers -> one comparable spelling."""

from __future__ import annotations

import re
import unicodedata

from normalizers.text import ascii_digits, fold

MAX_MRN_LENGTH = 64
_MAX_INPUT = 256

# "MRN", "MRN:", "MRN#", "mrn -", "#" in front of the number are labels, not part of it.
_LABEL = re.compile(r"^\s*(?:mrn\b|mrn(?=[\d\s:#\-.])|#)[\s:#\-.]*", re.IGNORECASE)
_NOT_ALNUM = re.compile(r"[^A-Z0-9]+")


def _strip_labels(text: str) -> str:
    for _ in range(8):
        stripped = _LABEL.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text


def normalize_mrn(text: str) -> str | None:
    """Upper-case ASCII letters and digits of an MRN, labels and separators removed.

    "MRN 00412", "mrn:00412" and "MRN# 00-412" all give "00412". Every character that is not
    a letter or digit goes (not only spaces, dashes, dots and slashes) so that the function is
    idempotent and documents and queries cannot differ by punctuation. Accents are folded; MRNs
    are ASCII in practice. None when nothing is left or the result is longer than 64.
    """
    if not isinstance(text, str):
        return None
    plain = text[:_MAX_INPUT]
    if plain.isascii() and plain.isalnum() and plain[:3].lower() != "mrn":
        # Nothing to strip or fold (most MRNs): the steps below would only upper-case it.
        return plain.upper() if len(plain) <= MAX_MRN_LENGTH else None
    return _normalize_general(plain)


def _normalize_general(text: str) -> str | None:
    text = ascii_digits(unicodedata.normalize("NFKC", text[:_MAX_INPUT]))
    text = _strip_labels(text)
    folded = fold(text).upper()
    value = _NOT_ALNUM.sub("", folded)
    # A label that only shows once punctuation is gone ("M.R.N. 5") must go too, or a second
    # pass would remove it and the function would not be idempotent.
    while value.startswith("MRN") and (len(value) == 3 or value[3].isdigit()):
        value = value[3:]
    if not value or len(value) > MAX_MRN_LENGTH:
        return None
    return value
