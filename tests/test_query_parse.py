"""Query understanding: what the search box input was read as."""

import datetime
import json
from typing import Any

import pytest

from normalizers.query import MAX_QUERY_CHARS, ParsedQuery, parse_query

TODAY = datetime.date(2026, 3, 1)
YEAR_1980 = {"phone_fragments": ["1980"], "mrns": ["1980"], "birth_years": [1980]}
US = "+15550102233"
UK = "+442079460958"


def read(text: str, **kwargs: Any) -> dict[str, object]:
    """The non-empty fields of the parse, as the API shows them."""
    parsed = parse_query(text, today=TODAY, **kwargs)
    return {k: v for k, v in parsed.to_dict().items() if v and k != "text"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # names
        ("smith", {"names": ["smith"]}),
        ("smith jo", {"names": ["smith", "jo"]}),
        ("Jon Smyth", {"names": ["jon", "smyth"]}),
        ("maria garcia-lopez", {"names": ["maria", "garcia", "lopez"]}),
        ("José Müller", {"names": ["jose", "muller"]}),
        ("Dr. John Smith", {"names": ["john", "smith"]}),
        ("mc donald", {"names": ["mc", "donald"]}),
        ("de la cruz maria", {"names": ["de", "la", "cruz", "maria"]}),
        ("J. Smith", {"names": ["j", "smith"]}),
        ("may smith", {"names": ["may", "smith"]}),
        (
            "april jones 1/2/1990",
            {"names": ["april", "jones"], "birth_dates": ["1990-01-02", "1990-02-01"]},
        ),
        # Last, First
        ("Garcia, Maria", {"names": ["garcia", "maria"], "family": ["garcia"], "given": ["maria"]}),
        ("garcia,maria", {"names": ["garcia", "maria"], "family": ["garcia"], "given": ["maria"]}),
        (
            "O'Brien, Mary Jr",
            {"names": ["obrien", "mary"], "family": ["obrien"], "given": ["mary"]},
        ),
        (
            "Smith-Jones, Anne Marie",
            {
                "names": ["smith", "jones", "anne", "marie"],
                "family": ["smith", "jones"],
                "given": ["anne", "marie"],
            },
        ),
        (
            "Garcia, Maria 3/14/85",
            {
                "names": ["garcia", "maria"],
                "family": ["garcia"],
                "given": ["maria"],
                "birth_dates": ["1985-03-14"],
            },
        ),
        ("smith,", {"names": ["smith"]}),
        (", smith", {"names": ["smith"]}),
        # dates
        ("Jon Smyth 3/14/1985", {"names": ["jon", "smyth"], "birth_dates": ["1985-03-14"]}),
        ("smith 3/14/85", {"names": ["smith"], "birth_dates": ["1985-03-14"]}),
        ("Mar 14 1985 smith", {"names": ["smith"], "birth_dates": ["1985-03-14"]}),
        ("smith March 14, 1985", {"names": ["smith"], "birth_dates": ["1985-03-14"]}),
        ("14 March 1985 lee", {"names": ["lee"], "birth_dates": ["1985-03-14"]}),
        ("lee 14th of March 1985", {"names": ["lee"], "birth_dates": ["1985-03-14"]}),
        ("14-Mar-1985 lee", {"names": ["lee"], "birth_dates": ["1985-03-14"]}),
        ("1985-03-14", {"birth_dates": ["1985-03-14"]}),
        ("14.03.1985 müller", {"names": ["muller"], "birth_dates": ["1985-03-14"]}),
        ("garcia 03/04/1985", {"names": ["garcia"], "birth_dates": ["1985-03-04", "1985-04-03"]}),
        ("dob 3/14/85 smith", {"names": ["smith"], "birth_dates": ["1985-03-14"]}),
        ("DOB: 3/14/85", {"birth_dates": ["1985-03-14"]}),
        ("smith 2/30/1985", {"names": ["smith"], "mrns": ["2301985"]}),
        ("3/14/85 3/14/1985", {"birth_dates": ["1985-03-14"]}),
        # phones
        ("(555) 010-2233", {"phones": [US]}),
        ("(555) 010 2233", {"phones": [US]}),
        ("555 010 2233", {"phones": [US]}),
        ("555-010-2233", {"phones": [US]}),
        ("555.010.2233", {"phones": [US]}),
        ("5550102233", {"phones": [US]}),
        ("+1 555 010 2233", {"phones": [US]}),
        ("1-555-010-2233", {"phones": [US]}),
        ("tel:+15550102233", {"phones": [US]}),
        ("(555) 010-2233 x12", {"phones": [US]}),
        ("(555) 010-2233 ext. 12", {"phones": [US]}),
        ("(555) 010-2233 #12", {"phones": [US]}),
        ("+44 20 7946 0958", {"phones": [UK]}),
        ("00 44 20 7946 0958", {"phones": [UK]}),
        ("jane doe +44 20 7946 0958", {"names": ["jane", "doe"], "phones": [UK]}),
        (
            "smith (555) 010-2233 3/14/85",
            {"names": ["smith"], "phones": [US], "birth_dates": ["1985-03-14"]},
        ),
        ("555 010 2233 1985", {"phones": [US], "phone_fragments": ["1985"], "mrns": ["1985"]}),
        ("(555) 010-2233 (555) 010-2233", {"phones": [US]}),
        # phone fragments
        (
            "smith 3/14/85 555-0102",
            {
                "names": ["smith"],
                "birth_dates": ["1985-03-14"],
                "phone_fragments": ["5550102"],
                "mrns": ["5550102"],
            },
        ),
        ("0102", {"phone_fragments": ["0102"], "mrns": ["0102"]}),
        ("2233 smith", {"names": ["smith"], "phone_fragments": ["2233"], "mrns": ["2233"]}),
        ("010-2233", {"phone_fragments": ["0102233"], "mrns": ["0102233"]}),
        ("010 2233", {"phone_fragments": ["2233", "0102233"], "mrns": ["010", "2233"]}),
        # four digits with a name: a year of birth too ("smith 1980"), never alone
        ("john smith 1980", {**YEAR_1980, "names": ["john", "smith"]}),
        ("1980 smith", {**YEAR_1980, "names": ["smith"]}),
        (
            "smith, john 1980",
            {**YEAR_1980, "names": ["smith", "john"], "given": ["john"], "family": ["smith"]},
        ),
        ("1980", {"phone_fragments": ["1980"], "mrns": ["1980"]}),
        ("smith 2027", {"names": ["smith"], "phone_fragments": ["2027"], "mrns": ["2027"]}),
        ("smith 1879", {"names": ["smith"], "phone_fragments": ["1879"], "mrns": ["1879"]}),
        ("smith 01980", {"names": ["smith"], "phone_fragments": ["01980"], "mrns": ["01980"]}),
        # MRNs
        ("mrn 00412", {"mrns": ["00412"]}),
        ("MRN 00412", {"mrns": ["00412"]}),
        ("mrn:00412", {"mrns": ["00412"]}),
        ("mrn: 00412", {"mrns": ["00412"]}),
        ("MRN# 00-412", {"mrns": ["00412"]}),
        ("MRN # 00412", {"mrns": ["00412"]}),
        ("#00412", {"mrns": ["00412"]}),
        ("# 00412 smith", {"names": ["smith"], "mrns": ["00412"]}),
        ("mrn 5550102233", {"mrns": ["5550102233"]}),
        ("mrn 19850314", {"mrns": ["19850314"]}),
        ("A12345", {"mrns": ["A12345"]}),
        ("smith a12345", {"names": ["smith"], "mrns": ["A12345"]}),
        ("19850314", {"birth_dates": ["1985-03-14"], "mrns": ["19850314"]}),
        ("12345678", {"mrns": ["12345678"]}),
        ("123456789", {"mrns": ["123456789"]}),
        ("0012345678", {"mrns": ["0012345678"]}),
        # e-mails
        ("john.smith@example.com", {"emails": ["john.smith@example.com"]}),
        (
            "John.Smith@Example.COM smith",
            {"names": ["smith"], "emails": ["john.smith@example.com"]},
        ),
        ("<anna@bücher.de>", {"emails": ["anna@xn--bcher-kva.de"]}),
        ("smith john@", {"names": ["smith"]}),
        # full-width and other scripts
        ("Ｓｍｉｔｈ　５５５－０１０－２２３３", {"names": ["smith"], "phones": [US]}),
        ("иван петров", {"names": ["иван", "петров"]}),
        # nothing searchable
        ("", {}),
        ("   ", {}),
        ("!!! ,,, ---", {}),
        ("mrn", {}),
        ("Dr", {"names": ["dr"]}),
    ],
)
def test_parse(text: str, expected: dict[str, object]) -> None:
    assert read(text) == expected


def test_parsed_query_fields() -> None:
    parsed = parse_query(
        "  Garcia, Maria 3/14/85 (555) 010-2233 x12 maria@example.com  ", today=TODAY
    )
    assert parsed.text == "Garcia, Maria 3/14/85 (555) 010-2233 x12 maria@example.com"
    assert parsed.names == ("garcia", "maria")
    assert parsed.family == ("garcia",)
    assert parsed.given == ("maria",)
    assert parsed.birth_dates == (datetime.date(1985, 3, 14),)
    assert len(parsed.phones) == 1
    assert parsed.phones[0].e164 == US
    assert parsed.phones[0].extension == "12"
    assert parsed.emails[0].canonical == "maria@example.com"
    assert not parsed.is_empty


def test_is_empty() -> None:
    assert parse_query("").is_empty
    assert parse_query(" ,;- ").is_empty
    assert not parse_query("0102").is_empty
    assert ParsedQuery(text="x").is_empty


def test_to_dict_is_json_safe() -> None:
    parsed = parse_query("smith 3/14/85 (555) 010-2233 a@b.com mrn 1", today=TODAY)
    as_dict = parsed.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert set(as_dict) == {
        "text",
        "names",
        "given",
        "family",
        "phones",
        "phone_fragments",
        "emails",
        "birth_dates",
        "mrns",
        "birth_years",
    }


def test_region_and_date_order() -> None:
    uk = parse_query("020 7946 0958 03/04/1985", region="GB", date_order="DMY", today=TODAY)
    assert [p.e164 for p in uk.phones] == [UK]
    assert uk.birth_dates == (datetime.date(1985, 4, 3), datetime.date(1985, 3, 4))
    us = parse_query("03/04/1985", today=TODAY)
    assert us.birth_dates == (datetime.date(1985, 3, 4), datetime.date(1985, 4, 3))


def test_two_digit_year_follows_today() -> None:
    assert parse_query("1/1/24", today=TODAY).birth_dates == (datetime.date(2024, 1, 1),)
    assert parse_query("1/1/24", today=datetime.date(2023, 6, 1)).birth_dates == (
        datetime.date(1924, 1, 1),
    )


def test_long_input_is_truncated() -> None:
    parsed = parse_query("smith " * 1000 + "jones")
    assert len(parsed.text) <= MAX_QUERY_CHARS
    assert "jones" not in parsed.names
    assert set(parsed.names) == {"smith"}
    short = parse_query("smith jones", max_chars=8)  # cut at a space: no half word
    assert short.names == ("smith",)
    assert parse_query("smith jones", max_chars=10_000).names == ("smith", "jones")
