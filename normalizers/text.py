"""Text folding shared by every normalizer, so documents and queries compare equal."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Apostrophe-like marks vanish rather than split: O'Brien, O’Brien, OʼBrien all fold to "obrien".
# The acute/grave accents and primes are here because people type them as apostrophes, and
# NFKC would otherwise turn U+00B4 into a space plus a combining mark. The Catalan middle dot
# (l·l) joins letters too.
APOSTROPHES = "'\u2019\u2018\u02bc\u02bb\u02bd\u0060\u00b4\u2032\uff07\u00b7\u2027"
_DROP_FIRST = {ord(c): None for c in APOSTROPHES}

# Letters that Unicode does not decompose into base letter + accent but that people read as
# plain Latin letters.
_LETTERS = str.maketrans(
    {
        "ø": "o",
        "ł": "l",
        "æ": "ae",
        "œ": "oe",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "ı": "i",
        "ħ": "h",
        "ŧ": "t",
        "ŀ": "l",
        "ĸ": "k",
        "ŋ": "n",
        "ɨ": "i",
        "ƀ": "b",
        "ƶ": "z",
    }
)


@lru_cache(maxsize=4096)
def _char_class(ch: str) -> str:
    """One of 'keep', 'space', 'hyphen', 'drop' for a single already-folded char."""
    if ch == " " or ch.isspace():
        return "space"
    if ch == "-":
        return "hyphen"
    cat = unicodedata.category(ch)
    if cat == "Pd":
        return "hyphen"
    if cat[0] == "C" or cat in ("Mn", "Me") or ord(ch) in _DROP_FIRST:
        return "drop"
    if ch.isalnum() or cat == "Mc":
        return "keep"
    return "space"


def _fold_once(text: str) -> str:
    text = text.translate(_DROP_FIRST)
    text = ascii_digits(unicodedata.normalize("NFKC", text))
    text = text.casefold()
    text = unicodedata.normalize("NFKD", text)
    text = text.translate(_LETTERS)
    out: list[str] = []
    for ch in text:
        kind = _char_class(ch)
        if kind == "keep":
            out.append(ch)
        elif kind == "space":
            out.append(" ")
        elif kind == "hyphen":
            out.append("-")
    return unicodedata.normalize("NFC", " ".join("".join(out).split()))


def _ascii_fold_table() -> dict[int, str | None]:
    """What `_fold_once` does to each ASCII character: on ASCII text every step of it
    (NFKC, casefold, NFKD, the letter table) works one character at a time."""
    table: dict[int, str | None] = {}
    for code in range(128):
        ch = chr(code)
        if code in _DROP_FIRST:
            table[code] = None
            continue
        folded = ch.casefold()
        kind = _char_class(folded)
        table[code] = {"keep": folded, "space": " ", "hyphen": "-"}.get(kind)
    return table


_ASCII_FOLD = _ascii_fold_table()


def fold(text: object) -> str:
    """Fold text to the comparison form used for every name and free-text field.

    Accents and case go, digits become ASCII, apostrophes vanish, other punctuation becomes a
    space and hyphens stay (name code splits on them). Looping to a fixed point guarantees
    idempotence even for rare scripts whose casefold/NFKC interplay needs a second pass.
    ASCII text (nearly every MRN and sort key) takes one table lookup per character, with
    the same result (tested against the general path): a reindex folds twice per patient.
    """
    if not isinstance(text, str) or not text:
        return ""
    if text.isascii():
        return " ".join(text.translate(_ASCII_FOLD).split())
    return _fold_general(text)


def _fold_general(text: str) -> str:
    result = _fold_once(text)
    for _ in range(3):
        again = _fold_once(result)
        if again == result:
            break
        result = again
    return result


@lru_cache(maxsize=1024)
def _ascii_digit(ch: str) -> str:
    return str(unicodedata.decimal(ch, 0))


def ascii_digits(text: str) -> str:
    """Map any Unicode decimal digit (Arabic-Indic, fullwidth, ...) to ASCII 0-9.

    Regexes with \\d and int() accept these, but indexes store ASCII, so they must agree.
    """
    if text.isascii():
        return text
    out: list[str] = []
    for ch in text:
        if ch.isdecimal() and not ch.isascii():
            out.append(_ascii_digit(ch))
        else:
            out.append(ch)
    return "".join(out)


def digits_only(text: str) -> str:
    """ASCII digits of text, in order."""
    return "".join(ch for ch in ascii_digits(text) if "0" <= ch <= "9")
