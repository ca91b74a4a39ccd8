"""The FHIR R4 facade on real PostgreSQL: read, search, paging, errors; every answer strict R4."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from search_api.fhir.params import MODIFIERS
from tests.fhir_support import CLINIC_B, GARCIAS, Fhir, ids


def outcome(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == code, body
    diagnostics: str = issue["diagnostics"]
    return diagnostics


def scores(bundle: dict[str, Any]) -> list[float]:
    return [e["search"]["score"] for e in bundle.get("entry", [])]


# -- metadata and read ------------------------------------------------------------------


def test_metadata_lists_every_parameter_modifier_and_match(fhir: Fhir) -> None:
    response = fhir.client.get("/fhir/metadata")  # no key needed: no patient data
    assert response.status_code == 200
    body = response.json()
    from tests.fhir_support import strict_parse

    strict_parse(body)
    assert body["fhirVersion"] == "4.0.1"
    (patient,) = body["rest"][0]["resource"]
    assert patient["type"] == "Patient"
    assert {i["code"] for i in patient["interaction"]} == {"read", "search-type"}
    params = {p["name"]: p for p in patient["searchParam"]}
    assert set(params) == set(MODIFIERS)
    for name, modifiers in MODIFIERS.items():
        for modifier in modifiers - {""}:
            assert f":{modifier}" in params[name]["documentation"]
    assert "urn:oid:1.2.3.4.5" in params["identifier"]["documentation"]
    assert patient["operation"][0]["name"] == "match"


def test_read_patient_and_the_same_404_for_another_clinic(fhir: Fhir) -> None:
    body = fhir.get("/fhir/Patient/f1").json()
    assert body["id"] == "f1"
    assert body["identifier"][0] == {
        "use": "usual",
        "type": body["identifier"][0]["type"],
        "system": "urn:oid:1.2.3.4.5",
        "value": "00412",
    }
    assert body["name"] == [{"use": "official", "family": "Smith", "given": ["John"]}]
    assert body["gender"] == "male" and body["birthDate"] == "1974-03-14"
    assert body["address"] == [{"postalCode": "02139"}]
    assert {t["system"] for t in body["telecom"]} == {"phone", "email"}
    other = fhir.get("/fhir/Patient/b1")
    missing = fhir.get("/fhir/Patient/nobody")
    assert outcome(other, 404, "not-found") == outcome(missing, 404, "not-found")
    assert other.content == missing.content


def test_ids_that_are_not_fhir_ids_round_trip(fhir: Fhir) -> None:
    (entry,) = fhir.search({"family": "quill"})["entry"]
    resource_id = entry["resource"]["id"]
    assert resource_id != "weird id/1"
    assert fhir.get(f"/fhir/Patient/{resource_id}").json()["name"][0]["family"] == "Quill"
    assert ids(fhir.search({"_id": resource_id})) == [resource_id]


# -- parameter semantics ------------------------------------------------------------------


def test_name_is_a_case_and_accent_insensitive_prefix(fhir: Fhir) -> None:
    found = set(ids(fhir.search({"name": "smi"})))
    assert {"f1", "f2", "f3", "f4", "f7"} <= found  # Smith, SMITH, Smíth, smith, Smithers
    assert not found & CLINIC_B


def test_name_exact_counts_case_and_accents(fhir: Fhir) -> None:
    assert ids(fhir.search({"name:exact": "Smith"})) == ["f1"]
    assert ids(fhir.search({"family:exact": "smith"})) == ["f4"]
    assert ids(fhir.search({"family:exact": "Smíth"})) == ["f3"]
    assert set(ids(fhir.search({"name:exact": "John Smith"}))) == {"f1"}


def test_name_contains_finds_letters_inside(fhir: Fhir) -> None:
    found = set(ids(fhir.search({"name:contains": "mit"})))
    assert found == {"f1", "f2", "f3", "f4", "f7"}
    assert set(ids(fhir.search({"given:contains": "ete"}))) == {"f4"}
    assert ids(fhir.search({"family:contains": "ete"})) == []


def test_default_name_search_keeps_typo_tolerance_but_every_word_must_agree(fhir: Fhir) -> None:
    assert "f1" in ids(fhir.search({"name": "jon smyth"}))  # nickname/typo tolerance
    assert ids(fhir.search({"given": "john", "family": "smith"})) == ["f1"]
    assert ids(fhir.search({"family": "john"})) == []  # a given name is not a family name


def test_birthdate_partial_dates_are_ranges(fhir: Fhir) -> None:
    assert set(ids(fhir.search({"birthdate": "1974"}))) == {"f1", "f2", "f5"}
    assert set(ids(fhir.search({"birthdate": "1974-12"}))) == {"f2"}
    assert ids(fhir.search({"birthdate": "1974-03-14"})) == ["f1"]
    bounded = fhir.search([("birthdate", "ge1974-06-01"), ("birthdate", "le1975-01-01")])
    assert set(ids(bounded)) == {"f2", "f5", "f6"}
    assert set(ids(fhir.search([("family", "smith"), ("birthdate", "lt1974")]))) == {"f7"}
    assert set(ids(fhir.search([("family", "smith"), ("birthdate", "ne1974")]))) == {
        "f3",
        "f4",
        "f7",
    }
    assert set(ids(fhir.search([("family", "smith"), ("birthdate", "sa1980")]))) == {"f4"}
    assert set(ids(fhir.search([("family", "smith"), ("birthdate", "eb1974")]))) == {"f7"}
    assert set(ids(fhir.search([("family", "smith"), ("birthdate", "gt1980-06-01")]))) == {"f4"}
    assert "f1" in ids(fhir.search([("family", "smith"), ("birthdate", "ap1974-04-01")]))


def test_phone_in_any_format_email_and_telecom(fhir: Fhir) -> None:
    for typed in ("5551234567", "(555) 123-4567", "+1 555 123 4567", "555.123.4567"):
        assert ids(fhir.search({"phone": typed})) == ["f1"], typed
    assert ids(fhir.search({"email": "john.smith@example.com"})) == ["f1"]
    assert ids(fhir.search({"telecom": "phone|555-123-4567"})) == ["f1"]
    assert ids(fhir.search({"telecom": "JOHN.SMITH@example.com"})) == ["f1"]
    assert ids(fhir.search({"telecom": "fax|5551234567"})) == []


def test_identifier_with_and_without_system(fhir: Fhir) -> None:
    bare = fhir.search({"identifier": "00412"})
    assert ids(bare) == ["f1"] and scores(bare) == [1.0]
    assert ids(fhir.search({"identifier": "urn:oid:1.2.3.4.5|00412"})) == ["f1"]
    assert ids(fhir.search({"identifier": "urn:other|00412"})) == []
    assert ids(fhir.search({"identifier": "00412", "family": "jones"})) == []


def test_gender_active_postal_code_and_id(fhir: Fhir) -> None:
    smiths = {"family": "smith"}
    assert set(ids(fhir.search({**smiths, "gender": "female"}))) == {"f2", "f3"}
    assert set(ids(fhir.search({**smiths, "gender:not": "female"}))) == {"f1", "f4", "f7"}
    assert set(ids(fhir.search({**smiths, "gender": "female,male"}))) >= {"f1", "f2", "f3"}
    assert set(ids(fhir.search({"birthdate": "1974", "active": "true"}))) == {"f1", "f2"}
    assert ids(fhir.search({"birthdate": "1974", "active": "false"})) == ["f5"]
    assert set(ids(fhir.search({"address-postalcode": "0213"}))) == {"f1"}
    assert set(ids(fhir.search({"address-postalcode": "0214"}))) == {"f5"}
    assert ids(fhir.search({"address-postalcode:exact": "0213"})) == []
    assert set(ids(fhir.search({"_id": "f1,f2,b1"}))) == {"f1", "f2"}


def test_scores_in_unit_interval_and_non_increasing(fhir: Fhir) -> None:
    for params in ({"name": "smi"}, {"family": "garcia"}, {"name": "jon smyth"}):
        found = scores(fhir.search({**params, "_count": "50"}))
        assert found and all(0 <= s <= 1 for s in found)
        assert found == sorted(found, reverse=True)


def test_sort_by_family_given_and_birthdate(fhir: Fhir) -> None:
    def births(bundle: dict[str, Any]) -> list[str]:
        return [e["resource"]["birthDate"] for e in bundle["entry"]]

    smiths = fhir.search({"name": "smi", "_sort": "birthdate"})
    assert births(smiths) == sorted(births(smiths))
    down = fhir.search({"name": "smi", "_sort": "-birthdate"})
    assert births(down) == sorted(births(down), reverse=True)
    garcias = fhir.search({"family": "garcia", "_sort": "given", "_count": "50"})
    given = [e["resource"]["name"][0]["given"][0] for e in garcias["entry"]]
    assert given == sorted(given)


def test_get_and_post_search_return_the_same_ids(fhir: Fhir) -> None:
    cases = [
        [("name", "smi")],
        [("family", "garcia"), ("_count", "5")],
        [("birthdate", "1974")],
        [("phone", "(555) 123-4567")],
        [("name:contains", "arc"), ("gender", "female")],
    ]
    for params in cases:
        got = fhir.search(params)
        posted = fhir.post(
            "/fhir/Patient/_search",
            content="&".join(f"{k}={v}" for k, v in params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).json()
        assert ids(got) == ids(posted), params
        # POST keeps the search values out of every URL it hands back.
        for link in posted["link"]:
            assert all(v not in link["url"] for _, v in params if len(v) > 2), link


# -- paging --------------------------------------------------------------------------------


def _pages(fhir: Fhir, first: dict[str, Any]) -> list[dict[str, Any]]:
    pages = [first]
    while nxt := [lk["url"] for lk in pages[-1]["link"] if lk["relation"] == "next"]:
        url = urlsplit(nxt[0])
        assert url.scheme == "http" and url.netloc == "testserver"  # absolute
        pages.append(fhir.get(f"{url.path}?{url.query}").json())
        assert len(pages) < 20
    return pages


def test_paging_covers_every_match_exactly_once(fhir: Fhir) -> None:
    first = fhir.search({"family": "garcia", "_count": "4", "_total": "accurate"})
    assert first["total"] == len(GARCIAS)
    pages = _pages(fhir, first)
    seen = [i for page in pages for i in ids(page)]
    assert len(seen) == len(set(seen)) == len(GARCIAS)
    assert set(seen) == GARCIAS
    assert all(len(ids(p)) == 4 for p in pages[:-1])
    for page in pages[1:]:
        for link in page["link"]:
            assert "garcia" not in link["url"].lower()
            assert set(dict(parse_qsl(urlsplit(link["url"]).query))) == {"_cursor"}


def test_a_cursor_of_clinic_a_is_not_found_with_clinic_b_key(fhir: Fhir, fhir_b: Fhir) -> None:
    first = fhir.search({"family": "garcia", "_count": "3"})
    (nxt,) = [lk["url"] for lk in first["link"] if lk["relation"] == "next"]
    url = urlsplit(nxt)
    outcome(fhir_b.get(f"{url.path}?{url.query}"), 404, "not-found")
    assert fhir.get(f"{url.path}?{url.query}").status_code == 200
    outcome(fhir.get("/fhir/Patient?_cursor=notarealcursor"), 404, "not-found")


def test_total_beyond_the_window_is_a_warning_not_a_guess(fhir: Fhir) -> None:
    first = fhir.search({"family": "lee", "_total": "accurate", "_count": "100"})
    assert "total" not in first
    (warning,) = [e for e in first["entry"] if e["search"]["mode"] == "outcome"]
    assert warning["resource"]["issue"][0]["code"] == "too-costly"
    pages = _pages(fhir, first)
    seen = [i for page in pages for i in ids(page)]
    # Pages are cut from one window of 200 candidates (one of them, a Nora found through
    # the nickname group of "Lee", is no family-name match): each Lee at most once.
    assert len(seen) == len(set(seen))
    assert {i[:3] for i in seen} == {"lee"} and 195 <= len(seen) <= 200


def test_count_is_clamped_and_zero_returns_no_entries(fhir: Fhir) -> None:
    assert len(ids(fhir.search({"family": "garcia", "_count": "100000"}))) == len(GARCIAS)
    empty = fhir.search({"family": "garcia", "_count": "0", "_total": "accurate"})
    assert ids(empty) == [] and empty["total"] == len(GARCIAS)


# -- unknown parameters, strictness, bad values, auth ---------------------------------


def test_unknown_parameters_are_ignored_and_left_out_of_self(fhir: Fhir) -> None:
    body = fhir.search({"family": "smith", "shoe-size": "42", "_elements": "name"})
    (self_link,) = [lk["url"] for lk in body["link"] if lk["relation"] == "self"]
    assert dict(parse_qsl(urlsplit(self_link).query)) == {"family": "smith"}
    strict = fhir.get(
        "/fhir/Patient",
        params={"family": "smith", "shoe-size": "42"},
        headers={"Prefer": "handling=strict"},
    )
    assert "shoe-size" in outcome(strict, 400, "invalid")


@pytest.mark.parametrize(
    ("params", "named", "code"),
    [
        ({"birthdate": "1974-13"}, "birthdate", "invalid"),
        ({"birthdate": "1974-02-30"}, "birthdate", "invalid"),
        ({"birthdate": "xx1974"}, "birthdate", "invalid"),
        ({"gender": "maybe", "family": "smith"}, "gender", "invalid"),
        ({"active": "yes", "family": "smith"}, "active", "invalid"),
        ({"_count": "-1", "family": "smith"}, "_count", "invalid"),
        ({"_count": "²", "family": "smith"}, "_count", "invalid"),
        ({"birthdate": "١٩٧٤"}, "birthdate", "invalid"),
        ({"_sort": "shoe", "family": "smith"}, "_sort", "invalid"),
        ({"name:fuzzy": "smith"}, "name:fuzzy", "not-supported"),
        ({"phone": "ab"}, "phone", "invalid"),
        ({"name": "!!!"}, "name", "invalid"),
        ({"gender": "female"}, "too broad", "too-costly"),
        ({}, "too broad", "too-costly"),
    ],
)
def test_bad_values_are_400_naming_the_parameter(
    fhir: Fhir, params: dict[str, str], named: str, code: str
) -> None:
    message = outcome(fhir.get("/fhir/Patient", params=params), 400, code)
    assert named in message
    for value in params.values():
        if len(value) > 3:
            assert value not in message


def test_format_other_than_json_is_refused(fhir: Fhir) -> None:
    response = fhir.get("/fhir/Patient", params={"family": "smith", "_format": "xml"})
    outcome(response, 406, "not-supported")
    outcome(fhir.get("/fhir/Patient/f1", params={"_format": "xml"}), 406, "not-supported")
    xml_only = fhir.get("/fhir/Patient/f1", headers={"Accept": "application/fhir+xml"})
    outcome(xml_only, 406, "not-supported")
    for accept in ("application/fhir+json", "application/json;q=0.9", "text/html, */*;q=0.1"):
        assert fhir.get("/fhir/Patient/f1", headers={"Accept": accept}).status_code == 200
    assert fhir.search({"family": "smith", "_format": "json"})["entry"]


def test_authentication_bearer_or_api_key(fhir: Fhir) -> None:
    client = fhir.client
    assert client.get("/fhir/Patient/f1", headers={"X-API-Key": fhir.key}).status_code == 200
    for headers in ({}, {"Authorization": "Bearer psk_nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/fhir/Patient/f1", headers=headers)
        outcome(response, 401, "security")
        assert response.headers["content-type"].startswith("application/fhir+json")


def test_errors_outside_the_routes_are_operation_outcomes(fhir: Fhir) -> None:
    outcome(fhir.get("/fhir/Observation"), 404, "not-found")
    outcome(fhir.client.delete("/fhir/Patient/f1"), 405, "not-supported")
    bad_type = fhir.post(
        "/fhir/Patient/_search", content=b"{}", headers={"Content-Type": "application/json"}
    )
    outcome(bad_type, 415, "not-supported")
    # /v1 keeps its own error shape.
    assert fhir.client.get("/v1/patients/f1").json()["error"]["code"] == "unauthorized"
