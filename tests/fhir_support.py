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
from tests.factories import cloned_database, seed

PATIENTS: list[dict[str, Any]] = [
    dict(
        id="f1",
        given="John",
        family="Smith",
        birth_date=dt.date(1974, 3, 14),
        mrn="00412",
        sex="male",
        postal_code="02139",
        phones=["(555) 123-4567"],
        emails=["John.Smith@Example.com"],
    ),
    dict(id="f2", given="Mary", family="SMITH", birth_date=dt.date(1974, 12, 25), sex="female"),
    dict(id="f3", given="Ana", family="Smíth", birth_date=dt.date(1980, 6, 1), sex="female"),
    dict(id="f4", given="Peter", family="smith", birth_date=dt.date(1990, 1, 1), sex="male"),
    dict(
        id="f5",
        given="Ada",
        family="Jones",
        birth_date=dt.date(1974, 7, 4),
        sex="female",
        active=False,
        postal_code="02140",
    ),
    dict(id="f6", given="Bob", family="Brown", birth_date=dt.date(1975, 1, 1), sex="male"),
    dict(id="f7", given="Carl", family="Smithers", birth_date=dt.date(1960, 5, 5), sex="male"),
    dict(id="weird id/1", given="Zoe", family="Quill", birth_date=dt.date(2000, 2, 2)),
    # Namesakes enough for several pages.
    *(
        dict(
            id=f"g{i:02d}",
            given=given,
            family="Garcia",
            birth_date=dt.date(1950 + i, 1 + i % 12, 1 + i % 28),
            sex="female" if i % 2 else "male",
        )
        for i, given in enumerate(
            [
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
        )
    ),
    # More namesakes than the ranking window holds (200).
    *(
        dict(id=f"lee{i:03d}", given=f"Kim{i:03d}", family="Lee", birth_date=dt.date(1980, 1, 1))
        for i in range(205)
    ),
    # Another clinic: the same John Smith, the same MRN and phone. Never seen by clinic-a.
    dict(
        id="b1",
        clinic_id="clinic-b",
        given="John",
        family="Smith",
        birth_date=dt.date(1974, 3, 14),
        mrn="00412",
        sex="male",
        phones=["(555) 123-4567"],
    ),
    dict(id="b2", clinic_id="clinic-b", given="Ana", family="Garcia", birth_date="1974-01-01"),
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
