"""The facade driven by the `fhirclient` package over real HTTP, as an integrating developer would.

fhirclient parses every answer into its FHIR 4.0.1 models (strictly: unknown keys
are errors) and follows the Bundle's absolute `next` links on its own.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fhirclient import client
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException

from core.settings import Settings
from search_api.app import create_app
from tests.fhir_support import GARCIAS
from tests.fixtures import serve_app


@pytest.fixture(scope="module")
def base_url(fhir_db: tuple[str, str, str], fhir_settings: Settings) -> Iterator[str]:
    with serve_app(create_app(fhir_settings, fhir_db[0])) as base:
        yield f"{base}/fhir/"


@pytest.fixture(scope="module")
def smart(base_url: str, fhir_db: tuple[str, str, str]) -> client.FHIRClient:
    fhir = client.FHIRClient(settings={"app_id": "tests", "api_base": base_url})
    fhir.server.session.headers["Authorization"] = f"Bearer {fhir_db[1]}"
    return fhir


def test_capability_statement_reads_as_fhir_4_0_1(smart: client.FHIRClient) -> None:
    statement = CapabilityStatement.read_from("metadata", smart.server)
    assert statement.fhirVersion == "4.0.1"
    (patient,) = statement.rest[0].resource
    assert {p.name for p in patient.searchParam} >= {"name", "birthdate", "identifier"}
    assert patient.operation[0].name == "match"


def test_read_and_search_with_fhirclient(smart: client.FHIRClient) -> None:
    john = Patient.read("f1", smart.server)
    assert john.name[0].family == "Smith" and john.birthDate.isostring == "1974-03-14"
    search = Patient.where(struct={"name": "smi", "birthdate": "1974"})
    found = {p.id for p in search.perform_resources_iter(smart.server)}
    assert found == {"f1", "f2"}


def test_fhirclient_pages_through_every_match_once(smart: client.FHIRClient) -> None:
    search = Patient.where(struct={"family": "garcia", "_count": "5"})
    bundles = list(search.perform_iter(smart.server))
    assert len(bundles) == -(-len(GARCIAS) // 5)
    seen = [e.resource.id for b in bundles for e in b.entry or []]
    assert len(seen) == len(set(seen)) and set(seen) == GARCIAS
    for bundle in bundles:
        scores = [e.search.score for e in bundle.entry]
        assert scores == sorted(scores, reverse=True)


def test_unknown_patient_raises_like_any_fhir_server_404(smart: client.FHIRClient) -> None:
    with pytest.raises(FHIRNotFoundException) as caught:
        Patient.read("b1", smart.server)  # another clinic's patient
    assert caught.value.response.json()["resourceType"] == "OperationOutcome"
