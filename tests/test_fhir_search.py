"""The FHIR R4 facade on real PostgreSQL: every answer parses as strict R4."""

from __future__ import annotations

from tests.fhir_support import Fhir, app_client, fhir, fhir_b, fhir_db, fhir_settings, ids  # noqa: F401


def test_smoke(fhir: Fhir) -> None:
    body = fhir.search({"name": "smi"})
    print(body)
    assert set(ids(body)) >= {"f1", "f2", "f3"}
