"""Every normalizer is total on arbitrary text, and the idempotent ones are idempotent."""

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from normalizers import names
from normalizers.emails import normalize_email
from normalizers.identifiers import normalize_mrn
from normalizers.phones import normalize_phone
from normalizers.text import fold

FAST = settings(max_examples=200, deadline=None)
any_text = st.text()
# Names with the characters that matter: letters with accents, apostrophes, hyphens, dots.
name_text = st.text(alphabet=st.sampled_from("abcJOSÉüßØæ'’ʼ-. ,\t" + "ıİǅﬁ"), max_size=30)


@FAST
@given(any_text)
def test_fold_total_and_idempotent(text: str) -> None:
    folded = fold(text)
    assert fold(folded) == folded
    assert folded == folded.strip()
    assert "  " not in folded
    assert all(ch.isalnum() or ch in " -" or unicodedata.category(ch) == "Mc" for ch in folded)


@FAST
@given(name_text)
def test_fold_idempotent_on_name_like_text(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@FAST
@given(st.one_of(any_text, name_text))
def test_name_tokens_total_and_idempotent(text: str) -> None:
    tokens = names.name_tokens(text)
    assert all(t and " " not in t and "-" not in t for t in tokens)
    assert names.name_tokens(" ".join(tokens)) == tokens
    assert names.name_tokens("-".join(tokens)) == tokens


@FAST
@given(st.one_of(any_text, name_text))
def test_name_keys_total(text: str) -> None:
    keys = names.name_keys(text)
    assert keys == sorted(set(keys))
    assert set(names.name_tokens(text)) <= set(keys)


@FAST
@given(any_text)
def test_name_helpers_total(text: str) -> None:
    names.is_particle(text)
    group = names.nickname_group(text)
    if fold(text):
        assert fold(text) in group
    codes = names.phonetic_keys(text)
    assert all(codes) and len(set(codes)) == len(codes)


@FAST
@given(any_text)
def test_nickname_table_total(text: str) -> None:
    names.nickname_group("bill", names.nickname_table(text))


@FAST
@given(any_text)
def test_other_normalizers_total(text: str) -> None:
    normalize_phone(text)
    normalize_email(text)
    value = normalize_mrn(text)
    if value is not None:
        assert normalize_mrn(value) == value
