"""fold: the comparison form of every name and free-text field."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normalizers.text import _fold_general, ascii_digits, digits_only, fold


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("José", "jose"),
        ("Müller", "muller"),
        ("MÜLLER", "muller"),
        ("Łukasz", "lukasz"),
        ("Straße", "strasse"),
        ("ß", "ss"),
        ("Øyvind", "oyvind"),
        ("Ærø", "aero"),
        ("Œuvre", "oeuvre"),
        ("Đặng", "dang"),
        ("Nguyễn Thị Minh", "nguyen thi minh"),
        ("Françoise", "francoise"),
        ("Añorve", "anorve"),
        ("Zoë", "zoe"),
        ("Søren Kierkegaard", "soren kierkegaard"),
        ("O'Brien", "obrien"),
        ("O’Brien", "obrien"),
        ("O‘Brien", "obrien"),
        ("OʼBrien", "obrien"),
        ("O´Brien", "obrien"),
        ("O`Brien", "obrien"),
        ("D'Angelo-Smith", "dangelo-smith"),
        ("Smith-Jones", "smith-jones"),
        ("Smith – Jones", "smith - jones"),
        ("Smith‐Jones", "smith-jones"),
        ("  John   SMITH  ", "john smith"),
        ("John\tSmith\n", "john smith"),
        ("J. R. R.", "j r r"),
        ("Smith, John", "smith john"),
        ("smith/jones", "smith jones"),
        ("Jo\x00hn", "john"),
        ("Mül\xadler", "muller"),
        ("Ｊｏｈｎ", "john"),
        ("ﬁnn", "finn"),
        ("İpek", "ipek"),
        ("Paral·lel", "parallel"),
        ("Иван", "иван"),
        ("李小龍", "李小龍"),
        ("", ""),
        ("   ", ""),
        ("!!!", ""),
        ("A1", "a1"),
    ],
)
def test_fold(raw: str, folded: str) -> None:
    assert fold(raw) == folded
    assert fold(folded) == folded


def test_fold_is_total_on_non_str() -> None:
    assert fold(None) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("٣/١٤/٨٥", "3/14/85"), ("５５５", "555"), ("abc", "abc"), ("", "")],
)
def test_ascii_digits(raw: str, expected: str) -> None:
    assert ascii_digits(raw) == expected


def test_digits_only() -> None:
    assert digits_only("(555) ٠١٠-2233") == "5550102233"


def test_ascii_fold_fast_path_equals_the_general_fold_on_every_pair() -> None:
    """The table lookup for ASCII text gives what the Unicode pipeline gives."""
    ascii_chars = [chr(c) for c in range(128)]
    for pair in itertools.product(ascii_chars, repeat=2):
        text = "".join(pair)
        assert fold(text) == _fold_general(text), repr(text)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_ascii_fold_fast_path_equals_the_general_fold(text: str) -> None:
    assert fold(text) == _fold_general(text)
