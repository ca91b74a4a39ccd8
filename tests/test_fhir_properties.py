"""Any query string, form body or $match body: no 5xx, strict R4 answers, no other clinic's
patient, and no searched value repeated in an error message."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from search_api.fhir.params import MODIFIERS
from tests.fhir_support import CLINIC_B, PATIENTS, Fhir

CLINIC_A = {p["id"] for p in PATIENTS} - CLINIC_B
# Values that are patient data: an error message must never repeat them.
PATIENT_VALUES = [
    "Smith",
    "smi",
    "Garcia",
    "John",
    "1974-03-14",
    "5551234567",
    "(555) 123-4567",
    "john.smith@example.com",
    "00412",
    "02139",
]
KEYS = sorted(
    {*MODIFIERS, *(f"{p}:{m}" for p, ms in MODIFIERS.items() for m in ms if m)}
    | {"_count", "_sort", "_total", "_format", "_cursor", "name:fuzzy", "address-city"}
)
DATES = st.from_regex(r"(eq|ne|gt|lt|ge|le|sa|eb|ap|xx)?\d{4}(-\d{2}(-\d{2})?)?", fullmatch=True)
VALUES = st.one_of(
    st.sampled_from(PATIENT_VALUES),
    DATES,
    st.sampled_from(["true", "false", "female", "male,female", "-birthdate", "accurate", "0"]),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
)
# Parameters that find patients in both clinics, so isolation is tested on real hits.
HITS = st.sampled_from(
    [
        ("name", "smi"),
        ("family", "garcia"),
        ("name", "john smith"),
        ("identifier", "00412"),
        ("phone", "5551234567"),
        ("birthdate", "1974"),
        ("name:contains", "ar"),
        ("_id", "b1,f1,g01,b2"),
        ("given", "ana"),
    ]
)
RANDOM = st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), VALUES)
ITEMS = st.builds(
    lambda hits, noise: [*hits, *noise],
    st.lists(HITS, max_size=2),
    st.lists(RANDOM, max_size=4),
)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(response: Any, own: set[str], items: list[tuple[str, str]]) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    event(f"{response.status_code} {body['resourceType']}{' with entries' * ('entry' in body)}")
    if body["resourceType"] == "Bundle":
        found = {e["resource"]["id"] for e in body.get("entry", []) if "id" in e["resource"]}
        assert found <= own, found - own
        return
    assert body["resourceType"] == "OperationOutcome"
    message = body["issue"][0]["diagnostics"]
    for _key, value in items:
        if value in PATIENT_VALUES:
            assert value not in message, message


@SETTINGS
@given(items=ITEMS)
def test_any_query_string_stays_in_the_clinic(fhir: Fhir, items: list[tuple[str, str]]) -> None:
    response = fhir.get("/fhir/Patient?" + urlencode(items))
    _check(response, CLINIC_A, items)


@SETTINGS
@given(items=ITEMS, strict=st.booleans())
def test_any_form_body_stays_in_the_clinic(
    fhir_b: Fhir, items: list[tuple[str, str]], strict: bool
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if strict:
        headers["Prefer"] = "handling=strict"
    response = fhir_b.post("/fhir/Patient/_search", content=urlencode(items), headers=headers)
    _check(response, CLINIC_B, items)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
PATIENT = st.fixed_dictionaries(
    {"resourceType": st.just("Patient")},
    optional={
        "name": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "family": st.sampled_from(["Smith", "Garcia", "", "S"]) | JSON,
                    "given": st.lists(st.sampled_from(["John", "Ana", "Jo"]), max_size=2) | JSON,
                },
            ),
            max_size=2,
        )
        | JSON,
        "birthDate": DATES | JSON,
        "gender": st.sampled_from(["male", "female", "unknown"]) | JSON,
        "identifier": st.just([{"value": "00412"}]) | JSON,
        "telecom": st.just([{"system": "phone", "value": "5551234567"}]) | JSON,
    },
)


@SETTINGS
@given(
    patient=PATIENT | JSON,
    count=st.integers(-2, 500) | JSON,
    only=st.booleans() | JSON,
)
def test_any_match_body_answers_4xx_or_a_bundle_of_own_patients(
    fhir: Fhir, patient: Any, count: Any, only: Any
) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": patient},
            {"name": "count", "valueInteger": count},
            {"name": "onlyCertainMatches", "valueBoolean": only},
        ],
    }
    response = fhir.post("/fhir/Patient/$match", json=body)
    _check(response, CLINIC_A, [])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    base=st.sampled_from(
        [
            [("family", "garcia")],
            [("name", "smi")],
            [("birthdate", "ge1955"), ("birthdate", "lt1975")],
            [("name:contains", "a"), ("gender", "female")],
        ]
    ),
    count=st.integers(1, 9),
    sort=st.sampled_from([None, "-_score", "family", "-birthdate", "given,-birthdate"]),
)
def test_pages_cover_the_single_page_answer_exactly_once(
    fhir: Fhir, base: list[tuple[str, str]], count: int, sort: str | None
) -> None:
    params = [*base, *([("_sort", sort)] if sort else [])]
    whole = [
        e["resource"]["id"] for e in fhir.search([*params, ("_count", "100")]).get("entry", [])
    ]
    seen: list[str] = []
    body = fhir.search([*params, ("_count", str(count))])
    while True:
        page = [e["resource"]["id"] for e in body.get("entry", [])]
        assert len(page) <= count
        seen += page
        nxt = [lk["url"] for lk in body["link"] if lk["relation"] == "next"]
        if not nxt:
            break
        body = fhir.get(nxt[0]).json()
    assert seen == whole  # same order, every match once
