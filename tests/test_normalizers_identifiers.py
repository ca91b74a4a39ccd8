"""MRNs -> one comparable spelling."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizers.identifiers import _normalize_general, normalize_mrn


@pytest.mark.parametrize(
    ("raw", "mrn"),
    [
        ("00412", "00412"),
        ("MRN 00412", "00412"),
        ("mrn:00412", "00412"),
        ("MRN: 00412", "00412"),
        ("MRN# 00-412", "00412"),
        ("MRN#00412", "00412"),
        ("mrn-00412", "00412"),
        ("MRN00412", "00412"),
        ("#00412", "00412"),
        ("# 00412", "00412"),
        ("00-412", "00412"),
        ("00.412", "00412"),
        ("00/412", "00412"),
        ("00 412", "00412"),
        ("a12345", "A12345"),
        ("A-123-45", "A12345"),
        ("mrn: a-12-b", "A12B"),
        ("MRNA12", "MRNA12"),
        ("M.R.N. 5", "5"),
        ("  x9  ", "X9"),
        ("ＡＢ１２", "AB12"),
        ("٠٠٤١٢", "00412"),
        ("É12", "E12"),
        ("A" * 64, "A" * 64),
    ],
)
def test_normalize_mrn(raw: str, mrn: str) -> None:
    assert normalize_mrn(raw) == mrn
    assert normalize_mrn(mrn) == mrn


@pytest.mark.parametrize("raw", ["", "   ", "MRN", "mrn:", "#", "---", "./", "A" * 65, "Ω"])
def test_nothing_left(raw: str) -> None:
    assert normalize_mrn(raw) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_total_and_idempotent(raw: str) -> None:
    value = normalize_mrn(raw)
    if value is not None:
        assert 0 < len(value) <= 64
        assert value.isascii() and value.isalnum() and value == value.upper()
        assert normalize_mrn(value) == value


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="MRNmrn#:-./ 0123456789AB", max_size=20))
def test_idempotent_on_label_like_text(raw: str) -> None:
    value = normalize_mrn(raw)
    if value is not None:
        assert normalize_mrn(value) == value


@given(
    st.text(
        alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzMRNmrn", max_size=70
    )
)
def test_plain_mrns_take_a_shortcut_to_the_same_answer(raw: str) -> None:
    """Letters and digits only (most MRNs) skip the label and fold steps, with their result."""
    assert normalize_mrn(raw) == _normalize_general(raw)
