"""Shared by the FHIR facade tests: a seeded clinic pair, clients, and strict R4 parsing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.apikeys import create_key
from core.settings import Settings
from search_api.app import create_app
from tests.factories import JOHN_SMITH, cloned_database, patient, seed

# The John Smith both clinics hold: the same MRN and phone (f1 in clinic-a, b1 in clinic-b).
_JOHN = dict(JOHN_SMITH, birth_date=dt.date(1974, 3, 14), sex="male", phones=["(555) 123-4567"])
_GARCIA_GIVEN = [
    "Ana",
    "Luis",
    "Maria",
    "Jose",
    "Carmen",
    "Jorge",
    "Rosa",
    "Pedro",
    "Elena",
    "Diego",
    "Lucia",
    "Pablo",
    "Sara",
    "Hugo",
    "Marta",
    "Ivan",
    "Julia",
    "Raul",
    "Alba",
    "Mario",
    "Nora",
    "Tomas",
]

PATIENTS: list[dict[str, Any]] = [
    dict(_JOHN, id="f1", postal_code="02139", emails=["John.Smith@Example.com"]),
    patient("f2", "Mary", "SMITH", "1974-12-25", sex="female"),
    patient("f3", "Ana", "Smíth", "1980-06-01", sex="female"),
    patient("f4", "Peter", "smith", "1990-01-01", sex="male"),
    patient("f5", "Ada", "Jones", "1974-07-04", sex="female", active=False, postal_code="02140"),
    patient("f6", "Bob", "Brown", "1975-01-01", sex="male"),
    patient("f7", "Carl", "Smithers", "1960-05-05", sex="male"),
    patient("weird id/1", "Zoe", "Quill", "2000-02-02"),
    # Namesakes enough for several pages.
    *(
        patient(
            f"g{i:02d}",
            given,
            "Garcia",
            birth_date=dt.date(1950 + i, 1 + i % 12, 1 + i % 28),
            sex="female" if i % 2 else "male",
        )
        for i, given in enumerate(_GARCIA_GIVEN)
    ),
    # More namesakes than the ranking window holds (200).
    *(patient(f"lee{i:03d}", f"Kim{i:03d}", "Lee", "1980-01-01") for i in range(205)),
    # Another clinic: the same John Smith, the same MRN and phone. Never seen by clinic-a.
    dict(_JOHN, id="b1", clinic_id="clinic-b"),
    patient("b2", "Ana", "Garcia", "1974-01-01", clinic_id="clinic-b"),
]
GARCIAS = {p["id"] for p in PATIENTS if p["family"] == "Garcia" and "clinic_id" not in p}
CLINIC_B = {p["id"] for p in PATIENTS if p.get("clinic_id") == "clinic-b"}
# An EHR integration's key: the FHIR facade needs the `fhir` scope (search_api.access).
FHIR_SCOPES = ["fhir", "search", "lookup", "read"]


def strict_parse(body: dict[str, Any]) -> None:
    """Parse with both R4 model sets; each rejects keys FHIR does not define.

    fhirclient's models are generated from FHIR 4.0.1. fhir.resources ships R4B
    (4.3.0) and R5 since version 7; its 4.0.1 models (6.x and older) need pydantic
    1, which cannot share an environment with FastAPI's pydantic 2. R4B's Patient,
    Bundle, OperationOutcome, Parameters and CapabilityStatement agree with R4 on
    every element the facade emits.
    """
    from fhir.resources.R4B import get_fhir_model_class
    from fhirclient.models import fhirelementfactory

    kind = body["resourceType"]
    get_fhir_model_class(kind).model_validate(body)
    fhirelementfactory.FHIRElementFactory.instantiate(kind, body)  # strict by default
    # fhirclient checks elements but not every code; check the ones we emit.
    if kind == "Bundle":
        for entry in body.get("entry", []):
            strict_parse(entry["resource"])


@pytest.fixture(scope="session")
def fhir_settings() -> Settings:
    return Settings(pool_min_size=1, pool_max_size=4, fhir_mrn_system="urn:oid:1.2.3.4.5")


@pytest.fixture(scope="session")
def fhir_db(
    server_url: str, template_db: str, fhir_settings: Settings
) -> Iterator[tuple[str, str, str]]:
    """One seeded database for the FHIR tests: the facade only reads (paging cursors aside)."""
    with cloned_database(server_url, template_db, prefix="fhir") as db_url:
        key_a, key_b = seed(
            db_url,
            PATIENTS,
            fhir_settings,
            lambda c: (
                create_key(c, ["clinic-a"], name="ehr a", scopes=FHIR_SCOPES),
                create_key(c, ["clinic-b"], name="ehr b", scopes=FHIR_SCOPES),
            ),
        )
        yield db_url, key_a, key_b


class Fhir:
    """A TestClient that checks every /fhir answer parses as strict R4."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key

    def _check(self, response: Any) -> Any:
        assert response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        strict_parse(response.json())
        return response

    def get(self, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        return self._check(self.client.get(path, headers=headers, **kw))

    def post(self, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        return self._check(self.client.post(path, headers=headers, **kw))

    def search(self, params: Any, **kw: Any) -> dict[str, Any]:
        response = self.get("/fhir/Patient", params=params, **kw)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def ids(bundle: dict[str, Any]) -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "Patient"
    ]


@pytest.fixture(scope="session")
def app_client(fhir_db: tuple[str, str, str], fhir_settings: Settings) -> Iterator[TestClient]:
    app = create_app(fhir_settings, fhir_db[0])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def fhir(app_client: TestClient, fhir_db: tuple[str, str, str]) -> Fhir:
    return Fhir(app_client, fhir_db[1])


@pytest.fixture(scope="session")
def fhir_b(app_client: TestClient, fhir_db: tuple[str, str, str]) -> Fhir:
    return Fhir(app_client, fhir_db[2])
