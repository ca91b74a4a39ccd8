"""FHIR R4 facade under /fhir: Patient read, search and $match over the service's own search."""

from __future__ import annotations

from fastapi import FastAPI

from search_api.errors import use_error_format
from search_api.fhir.errors import outcome_response
from search_api.fhir.routes import router

__all__ = ["answer_errors_as_outcomes", "router"]


def answer_errors_as_outcomes(app: FastAPI) -> None:
    """Every error under /fhir, the framework's included, becomes an OperationOutcome."""
    use_error_format(app, router.prefix, outcome_response)
