"""E-mail addresses -> canonical form."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizers.emails import _LOCAL_ATOM, Email, _local_ok, normalize_email


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("john.smith@example.com", "john.smith@example.com"),
        ("John.Smith@Example.COM", "john.smith@example.com"),
        ("  john@example.com \n", "john@example.com"),
        ("mailto:john@example.com", "john@example.com"),
        ("MAILTO:John@Example.com", "john@example.com"),
        ("<john@example.com>", "john@example.com"),
        ("john+clinic@example.co.uk", "john+clinic@example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("first_last-1@sub.example.org", "first_last-1@sub.example.org"),
        ("john@example.com.", "john@example.com"),
        ("anna@bücher.de", "anna@xn--bcher-kva.de"),
        ("anna@BÜCHER.de", "anna@xn--bcher-kva.de"),
        ("anna@xn--bcher-kva.de", "anna@xn--bcher-kva.de"),
        ("user@münchen.example", "user@xn--mnchen-3ya.example"),
        ("josé@example.com", "josé@example.com"),
        ("a@b.co", "a@b.co"),
        ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    ],
)
def test_valid(raw: str, canonical: str) -> None:
    email = normalize_email(raw)
    assert email == Email(raw=raw, canonical=canonical, valid=True)
    assert normalize_email(canonical).canonical == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "john",
        "john@",
        "@example.com",
        "john@example",
        "john@@example.com",
        "john@doe@example.com",
        "john smith@example.com",
        "john@exa mple.com",
        ".john@example.com",
        "john.@example.com",
        "jo..hn@example.com",
        "john@example..com",
        "john@-example.com",
        "john@example-.com",
        "john@exam_ple.com",
        "john@1.2.3.4",
        "john@example.c",
        "x" * 65 + "@example.com",
        "john@" + "a" * 64 + ".com",
        "john@" + "a." * 130 + "com",
        "jo\x00hn@example.com",
        "john@exa\x00mple.com",
        "john@.com",
        "john@example.com, mary@example.com",
    ],
)
def test_invalid(raw: str) -> None:
    email = normalize_email(raw)
    assert email == Email(raw=raw, canonical=None, valid=False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_total_and_idempotent(raw: str) -> None:
    email = normalize_email(raw)
    assert email.valid == (email.canonical is not None)
    if email.canonical is not None:
        assert normalize_email(email.canonical).canonical == email.canonical


@settings(max_examples=200, deadline=None)
@given(st.emails())
def test_generated_addresses_are_valid(raw: str) -> None:
    email = normalize_email(raw)
    assert email.valid, raw
    assert email.canonical == email.canonical.lower()  # type: ignore[union-attr]


def _local_ok_by_category(local: str) -> bool:
    """_local_ok as written before its ASCII shortcut: a category lookup per character."""
    if not local or len(local) > 64:
        return False
    if any(unicodedata.category(ch)[0] in ("C", "Z") for ch in local):
        return False
    return all(part and _LOCAL_ATOM.match(part) for part in local.split("."))


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=70))
def test_ascii_local_parts_take_a_shortcut_to_the_same_answer(local: str) -> None:
    assert _local_ok(local) == _local_ok_by_category(local)


def test_ascii_shortcut_on_every_character() -> None:
    for code in range(128):
        local = f"ab{chr(code)}c"
        assert _local_ok(local) == _local_ok_by_category(local), code
