"""Patient/$match: ranked, graded, honouring count and onlyCertainMatches; strict R4 answers."""

from __future__ import annotations

from typing import Any

from search_api.fhir.resources import MATCH_GRADE_URL
from tests.fhir_support import CLINIC_B, Fhir, ids


def parameters(patient: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "resource", "resource": {"resourceType": "Patient", **patient}}
    ]
    if "only" in extra:
        params.append({"name": "onlyCertainMatches", "valueBoolean": extra["only"]})
    if "count" in extra:
        params.append({"name": "count", "valueInteger": extra["count"]})
    return {"resourceType": "Parameters", "parameter": params}


def match(fhir: Fhir, body: Any, status: int = 200) -> dict[str, Any]:
    response = fhir.post(
        "/fhir/Patient/$match", json=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def grades(bundle: dict[str, Any]) -> list[str]:
    out = []
    for entry in bundle.get("entry", []):
        (ext,) = entry["search"]["extension"]
        assert ext["url"] == MATCH_GRADE_URL
        out.append(ext["valueCode"])
    return out


JOHN = {"name": [{"family": "Smith", "given": ["John"]}], "birthDate": "1974-03-14"}


def test_match_ranks_by_likelihood_with_grades_and_scores(fhir: Fhir) -> None:
    bundle = match(fhir, parameters(JOHN))
    assert bundle["type"] == "searchset"
    assert ids(bundle)[0] == "f1"
    assert grades(bundle)[0] == "certain"
    found = [e["search"]["score"] for e in bundle["entry"]]
    assert all(0 <= s <= 1 for s in found) and found == sorted(found, reverse=True)
    assert set(grades(bundle)) <= {"certain", "probable", "possible"}
    assert not set(ids(bundle)) & CLINIC_B


def test_typos_still_match_but_grade_lower(fhir: Fhir) -> None:
    bundle = match(fhir, parameters({"name": [{"family": "Smyth", "given": ["Jon"]}]}))
    assert ids(bundle)[0] == "f1"
    assert grades(bundle)[0] != "certain"


def test_only_certain_matches_and_count(fhir: Fhir) -> None:
    smiths = {"name": [{"family": "Smith"}]}
    everyone = match(fhir, parameters(smiths))
    assert len(ids(everyone)) >= 4
    assert len(ids(match(fhir, parameters(smiths, count=2)))) == 2
    certain = match(fhir, parameters(JOHN, only=True))
    assert ids(certain) == ["f1"] and grades(certain) == ["certain"]
    assert "entry" not in match(fhir, parameters(smiths, only=True))


def test_identifier_and_telecom_match(fhir: Fhir) -> None:
    by_mrn = parameters({"identifier": [{"system": "urn:oid:1.2.3.4.5", "value": "00412"}]})
    assert ids(match(fhir, by_mrn)) == ["f1"]
    by_phone = parameters({"telecom": [{"system": "phone", "value": "555 123 4567"}]})
    assert ids(match(fhir, by_phone))[0] == "f1"


def test_contradicting_gender_costs_a_grade(fhir: Fhir) -> None:
    same = grades(match(fhir, parameters({**JOHN, "gender": "male"})))[0]
    other = grades(match(fhir, parameters({**JOHN, "gender": "female"})))[0]
    assert (same, other) == ("certain", "probable")


def test_no_match_is_an_empty_bundle(fhir: Fhir) -> None:
    bundle = match(fhir, parameters({"name": [{"family": "Zzyzx", "given": ["Qwerty"]}]}))
    assert bundle["resourceType"] == "Bundle" and "entry" not in bundle


def test_thin_or_malformed_input_is_400(fhir: Fhir) -> None:
    for body in (
        parameters({"gender": "female"}),
        parameters({"birthDate": "1974-03-14"}),
        parameters({"name": [{"family": "S"}]}),
        parameters({**JOHN, "birthDate": "1974-13-01"}),
        parameters(JOHN, count=0),
        parameters(JOHN, only="yes"),
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 3}]},
        {"resourceType": "Parameters", "parameter": "nope"},
        [1, 2, 3],
    ):
        outcome = match(fhir, body, status=400)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "invalid"
    not_json = fhir.post(
        "/fhir/Patient/$match", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400


def test_match_is_scoped_to_the_keys_clinics(fhir_b: Fhir) -> None:
    assert ids(match(fhir_b, parameters(JOHN))) == ["b1"]
