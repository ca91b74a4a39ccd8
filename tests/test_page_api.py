"""What the search page needs from /v1 (highlights, phones as the clinic writes them,
possible-duplicate marks) and how the page itself is served, on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import phonenumbers
import pytest
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.documents import build_document
from core.settings import Settings
from normalizers.phones import normalize_phone
from search_api.annotate import duplicate_reason, format_phone, names_near
from search_api.app import create_app
from tests.factories import JOHN_SMITH, patient, seed

PATIENTS: list[dict[str, Any]] = [
    dict(
        JOHN_SMITH,
        id="p1",
        phones=["555.010.2233", "+44 20 7946 0958"],
        emails=["John.Smith@Example.com"],
    ),
    patient("p2", "Jon", "Smyth", "1985-03-14"),
    patient("p3", "José", "Núñez", "2001-01-09"),
    patient("p4", "Katherine", "O'Connell", phones=["555 010 4455"]),
    patient("p5", "Kathy", "OConnell", phones=["(555) 010-4455"]),
    patient("p6", "Peter", "Smith", "1985-03-14"),
    patient("p7", "Ronald", "McDonald", "1970-01-02"),
]


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    settings = Settings(pool_min_size=1, pool_max_size=2)
    key = seed(db_url, PATIENTS, settings, lambda c: create_key(c, ["clinic-a"]))
    with TestClient(create_app(settings, db_url), raise_server_exceptions=False) as c:
        c.headers["X-API-Key"] = key
        yield c


def results(client: TestClient, q: str) -> dict[str, dict[str, Any]]:
    response = client.post("/v1/patients/search", json={"q": q, "limit": 10})
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in response.json()["results"]}


def marked(result: dict[str, Any]) -> dict[str, list[str]]:
    """The highlighted text per field, as the page would show it."""
    out: dict[str, list[str]] = {}
    for h in result["highlights"]:
        if h["field"] == "phones":
            value = result["phones_formatted"][h["index"]]
        elif h["field"] == "emails":
            value = result["patient"]["emails"][h["index"]]["value"]
        else:
            value = result["patient"][h["field"]]
        out.setdefault(h["field"], []).append(value[h["start"] : h["end"]])
    return out


def test_highlights_mark_what_matched(client: TestClient) -> None:
    found = results(client, "jo smyth")
    assert marked(found["p2"]) == {"given_name": ["Jo"], "family_name": ["Smyth"]}
    assert marked(found["p1"])["family_name"] == ["Smith"]  # a sound-alike: the whole word

    accents = results(client, "jose nun")
    assert marked(accents["p3"]) == {"given_name": ["José"], "family_name": ["Núñ"]}

    by_date = results(client, "smith 3/14/1985")
    assert marked(by_date["p1"])["birth_date"] == ["1985-03-14"]

    by_phone = results(client, "2233")  # the last four digits
    assert marked(by_phone["p1"]) == {"phones": ["2233"]}
    by_full_phone = results(client, "(555) 010-2233")
    assert marked(by_full_phone["p1"]) == {"phones": ["(555) 010-2233"]}

    assert marked(results(client, "ronald mc donald")["p7"]) == {
        "given_name": ["Ronald"],
        "family_name": ["McDonald"],
    }
    assert marked(results(client, "MRN 00412")["p1"]) == {"mrn": ["00412"]}
    by_email = results(client, "john.smith@example.com")
    assert marked(by_email["p1"]) == {"emails": ["John.Smith@Example.com"]}


def test_phones_formatted_for_the_region(client: TestClient) -> None:
    found = results(client, "john smith")["p1"]
    assert found["phones_formatted"] == ["(555) 010-2233", "+44 20 7946 0958"]
    # The record keeps the values as stored: the contract only grows.
    assert [p["value"] for p in found["patient"]["phones"]] == ["555.010.2233", "+44 20 7946 0958"]
    read = client.get("/v1/patients/p1").json()
    assert read["phones_formatted"] == ["(555) 010-2233", "+44 20 7946 0958"]
    assert read["patient"]["id"] == "p1"


def test_duplicate_marks_on_the_page(client: TestClient) -> None:
    found = results(client, "smith 3/14/1985")
    assert found["p1"]["duplicates"] == [
        {"id": "p2", "why": "same date of birth and a similar name"}
    ]
    assert found["p2"]["duplicates"] == [
        {"id": "p1", "why": "same date of birth and a similar name"}
    ]
    # Same family name and date, a different given name: not one person (nor twins marked).
    assert found["p6"]["duplicates"] == []

    by_phone = results(client, "555 010 4455")
    assert by_phone["p4"]["duplicates"] == [{"id": "p5", "why": "same phone and a similar name"}]
    assert by_phone["p5"]["duplicates"] == [{"id": "p4", "why": "same phone and a similar name"}]


def _match(**row: Any) -> dict[str, Any]:
    base = {"id": "x", "clinic_id": "c", "birth_date": None, "mrn": None}
    return dict(build_document({**base, **row}, []).match)


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [
        (("John", "Smith"), ("Jon", "Smyth"), True),
        (("Robert", "Jones"), ("Bob", "Jones"), True),
        (("J", "Garcia"), ("Juan", "Garcia"), True),
        (("Lee", "Wong"), ("Wong", "Lee"), True),  # swapped at registration
        (("Peter", "Smith"), ("John", "Smith"), False),
        (("John", "Smith"), ("John", "Brown"), False),
        ((None, "Smith"), ("John", "Smith"), False),
    ],
)
def test_names_near(a: tuple[str | None, str], b: tuple[str | None, str], near: bool) -> None:
    """(given name, family name) pairs."""
    first = _match(given_name=a[0], family_name=a[1])
    second = _match(given_name=b[0], family_name=b[1])
    assert names_near(first, second) is near


def test_duplicate_reason_needs_a_shared_identifier() -> None:
    a = _match(given_name="John", family_name="Smith", birth_date=dt.date(1985, 3, 14))
    b = _match(given_name="Jon", family_name="Smith", birth_date=dt.date(1985, 3, 15))
    assert duplicate_reason(a, b) is None  # near names alone are namesakes, not duplicates
    assert duplicate_reason(a, a) == "same date of birth and a similar name"


def test_format_phone() -> None:
    assert format_phone("555.010.2233", "US") == "(555) 010-2233"
    assert format_phone("+1 555 010 2233 x12", "US") == "(555) 010-2233 ext. 12"
    assert format_phone("020 7946 0958", "GB") == "020 7946 0958"
    assert format_phone("+1 (555) 010-2233", "GB") == "+1 555-010-2233"
    assert format_phone("call the office", "US") == "call the office"


def test_page_is_served_with_its_assets_and_the_clinic_settings(db_url: str) -> None:
    settings = Settings(pool_min_size=1, pool_max_size=2, date_order="DMY", default_region="GB")
    with TestClient(create_app(settings, db_url)) as c:
        page = c.get("/")
        assert page.status_code == 200
        assert '<meta name="clinic-date-order" content="DMY">' in page.text
        assert '<meta name="clinic-region" content="GB">' in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script>" not in page.text  # no inline script: the CSP forbids it
        for name, kind in (("search_page.js", "javascript"), ("search_page.css", "css")):
            asset = c.get(f"/page/{name}")
            assert asset.status_code == 200 and kind in asset.headers["content-type"]
        missing = c.get("/page/../app.py")
        assert missing.status_code == 404
        assert c.get("/page/secret.py").json()["error"]["code"] == "not_found"


def test_the_page_keeps_the_key_out_of_the_url() -> None:
    """The script reads the key from sessionStorage only (never location), and sends it
    as a header; patient data is never written to the URL or history state."""
    from search_api.page import asset_text

    script = asset_text("search_page.js")
    assert "location.hash" not in script and "location.search" not in script
    assert "URLSearchParams" not in script and "localStorage" not in script
    assert "sessionStorage.setItem(KEY_ITEM" in script
    assert "history.pushState({ panel: 'detail' }, '')" in script


def test_north_american_phones_are_laid_out_as_libphonenumber_does() -> None:
    """format_phone lays out NANP numbers without libphonenumber; the layout must be its."""
    rng = random.Random(7)
    for _ in range(3000):
        digits = f"{rng.randint(0, 999):03d}{rng.randint(0, 999):03d}{rng.randint(0, 9999):04d}"
        if not normalize_phone("+1" + digits, "US").e164:
            continue  # not a number we read: shown as typed, as before
        expected = phonenumbers.format_number(
            phonenumbers.parse("+1" + digits, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
        assert format_phone("+1" + digits, "US") == expected
    assert format_phone("+1 202 555 0143 ext 12", "US") == "(202) 555-0143 ext. 12"
    assert format_phone("+1 202 555 0143", "GB") == "+1 202-555-0143"  # abroad: international
