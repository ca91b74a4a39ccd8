"""Name tokens, keys, nicknames and phonetic codes."""

import pytest

from normalizers.names import (
    folded_nicknames_meet,
    is_particle,
    name_keys,
    name_tokens,
    nickname_group,
    nickname_match,
    nickname_table,
    phonetic_keys,
    typo_distance,
)


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("Smith-Jones", ["smith", "jones"]),
        ("de la Cruz", ["de", "la", "cruz"]),
        ("O'Brien", ["obrien"]),
        ("O’Brien", ["obrien"]),
        ("Mc Donald", ["mc", "donald"]),
        ("McDonald", ["mcdonald"]),
        ("J.", ["j"]),
        ("John Q. Public", ["john", "q", "public"]),
        ("Dr. John Smith", ["john", "smith"]),
        ("Mrs Mary Smith", ["mary", "smith"]),
        ("Prof. Dr. Müller", ["muller"]),
        ("Rev. Martin Luther King Jr.", ["martin", "luther", "king"]),
        ("John Smith III", ["john", "smith"]),
        ("John Smith, MD", ["john", "smith"]),
        ("Jane Doe PhD", ["jane", "doe"]),
        ("Sr. Juan Pérez", ["juan", "perez"]),
        ("Dr", ["dr"]),
        ("Jr", ["jr"]),
        ("Mr Jr", ["mr", "jr"]),
        ("José  María", ["jose", "maria"]),
        ("van der Berg", ["van", "der", "berg"]),
        ("Anne-Marie", ["anne", "marie"]),
        ("  ", []),
        ("", []),
        (None, []),
        ("---", []),
        ("Do", ["do"]),
        ("V", ["v"]),
    ],
)
def test_name_tokens(raw: str | None, tokens: list[str]) -> None:
    assert name_tokens(raw) == tokens


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ("Smith-Jones", ["jones", "smith", "smithjones"]),
        ("Smith Jones", ["jones", "smith", "smithjones"]),
        ("de la Cruz", ["cruz", "de", "delacruz", "la"]),
        ("De La Cruz", ["cruz", "de", "delacruz", "la"]),
        ("van der Berg", ["berg", "der", "van", "vanderberg"]),
        ("Vanderberg", ["vanderberg"]),
        ("Mc Donald", ["donald", "mc", "mcdonald"]),
        ("McDonald", ["mcdonald"]),
        ("O'Brien", ["brien", "o", "obrien"]),
        ("D’Angelo", ["angelo", "d", "dangelo"]),
        ("Garcia de la Cruz", ["cruz", "de", "garcia", "garciacruz", "garciadelacruz", "la"]),
        ("St. John", ["john", "st", "stjohn"]),
        ("Smith", ["smith"]),
        ("Dr. Smith Jr.", ["smith"]),
        ("de", ["de"]),
        ("", []),
        (None, []),
    ],
)
def test_name_keys(raw: str | None, keys: list[str]) -> None:
    assert name_keys(raw) == keys


def test_compound_spellings_share_a_key() -> None:
    assert set(name_keys("Mc Donald")) & set(name_keys("McDonald")) == {"mcdonald"}
    assert "delacruz" in set(name_keys("de la cruz")) & set(name_keys("DeLaCruz"))
    assert "cruz" in set(name_keys("de la Cruz")) & set(name_keys("Cruz"))
    assert "smithjones" in set(name_keys("Smith-Jones")) & set(name_keys("Smithjones"))


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("de", True),
        ("De", True),
        ("van", True),
        ("von", True),
        ("la", True),
        ("st", True),
        ("smith", False),
        ("", False),
        ("mc", False),
        ("d", False),
    ],
)
def test_is_particle(token: str, expected: bool) -> None:
    assert is_particle(token) is expected


@pytest.mark.parametrize(
    ("token", "must_include"),
    [
        ("bill", {"bill", "william"}),
        ("Bill", {"bill", "william"}),
        ("billy", {"billy", "william"}),
        ("peggy", {"peggy", "margaret"}),
        ("liz", {"liz", "elizabeth"}),
        ("beth", {"beth", "elizabeth"}),
        ("bob", {"bob", "robert"}),
        ("jim", {"jim", "james"}),
        ("mike", {"mike", "michael"}),
        ("jon", {"jon", "john"}),
        ("kate", {"kate", "katherine"}),
    ],
)
def test_nickname_group_includes_canonical(token: str, must_include: set[str]) -> None:
    assert must_include <= nickname_group(token)


@pytest.mark.parametrize("name", ["william", "elizabeth", "robert", "michael", "margaret"])
def test_canonical_names_are_their_own_group(name: str) -> None:
    assert nickname_group(name) == frozenset({name})


@pytest.mark.parametrize(
    ("a", "b", "meet"),
    [
        ("bill", "william", True),  # a nickname and its canonical
        ("william", "bill", True),
        ("liz", "beth", True),  # two nicknames of one canonical
        ("ann", "ann", True),
        ("bill", "margaret", False),
        ("zqxv", "william", False),
    ],
)
def test_folded_nicknames_meet_as_their_groups_do(a: str, b: str, meet: bool) -> None:
    assert folded_nicknames_meet(a, b) is meet
    assert bool(nickname_group(a) & nickname_group(b)) is meet


@pytest.mark.parametrize(
    ("typed", "stored", "distance"),
    [
        ("jon", "john", 1),
        ("jon", "jonny", None),  # two letters longer: past a short word's one edit
        ("johsua", "joshua", 1),  # a swap is one slip
        ("jonathan", "jo", None),
        ("katherine", "katharina", 2),
        ("katherine", "kat", None),
    ],
)
def test_typo_distance_within_the_budget(typed: str, stored: str, distance: int | None) -> None:
    assert typo_distance(typed, stored) == distance


def test_unknown_and_empty_tokens() -> None:
    assert nickname_group("zqxv") == frozenset({"zqxv"})
    assert nickname_group("Zoë") == frozenset({"zoe"})
    assert nickname_group("") == frozenset()
    assert nickname_group("  ") == frozenset()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("bill", "william", True),
        ("William", "BILL", True),
        ("liz", "beth", True),
        ("peggy", "margaret", True),
        ("jon", "john", True),
        ("bob", "robert", True),
        ("smith", "smith", True),
        ("william", "wilma", False),
        ("john", "mary", False),
        ("bill", "", False),
    ],
)
def test_nickname_match(a: str, b: str, expected: bool) -> None:
    assert nickname_match(a, b) is expected


def test_nickname_overrides() -> None:
    table = nickname_table("# clinic additions\nXimena, Mena ,Xime\n\n,orphan\nwilliam,memo\n")
    assert {"ximena", "mena"} <= nickname_group("Mena", table)
    assert nickname_group("xime", table) >= {"xime", "ximena"}
    assert "william" in nickname_group("memo", table)
    assert nickname_match("memo", "bill", table)
    assert "william" in nickname_group("bill", table)  # package data still there
    assert "ximena" not in nickname_group("mena")  # default table untouched
    assert nickname_group("orphan", table) == frozenset({"orphan"})


@pytest.mark.parametrize("junk", ["", ",,,", "\x00", "a", "é,è", '"x","y"'])
def test_nickname_table_is_total(junk: str) -> None:
    nickname_group("x", nickname_table(junk))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Smith", "Smyth"),
        ("Jon", "John"),
        ("Catherine", "Kathryn"),
        ("Steven", "Stephen"),
        ("Schmidt", "Schmitt"),
        ("Müller", "Muller"),
        ("Philips", "Phillips"),
        ("Gonzalez", "Gonzales"),
    ],
)
def test_phonetic_keys_shared(a: str, b: str) -> None:
    assert set(phonetic_keys(a)) & set(phonetic_keys(b))


def test_phonetic_keys_shape() -> None:
    assert phonetic_keys("Smith") == ("SM0", "XMT")
    assert phonetic_keys("Jon") == ("JN", "AN")
    assert phonetic_keys("Lee") == ("L",)
    assert phonetic_keys("") == ()
    assert phonetic_keys("Иван") == ()
    assert phonetic_keys("123") == ()
    assert not set(phonetic_keys("Smith")) & set(phonetic_keys("Jones"))


def test_configured_overrides_reach_the_default_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.settings import Settings, configure_normalizers
    from normalizers.names import nickname_group, use_nickname_overrides

    assert "xiomara" not in nickname_group("xio")
    extra = tmp_path / "nicknames.csv"
    extra.write_text("xiomara,xio,mara\n", encoding="utf-8")
    try:
        configure_normalizers(Settings(nicknames_file=extra))
        assert "xiomara" in nickname_group("xio")
        assert nickname_group("mara") & nickname_group("xiomara")
    finally:
        use_nickname_overrides(None)
    assert "xiomara" not in nickname_group("xio")
