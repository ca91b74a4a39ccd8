"""FHIR R4 facade under /fhir: Patient read, search and $match over the service's own search."""

from __future__ import annotations

from fastapi import FastAPI

from search_api.errors import use_error_format
from search_api.fhir.errors import outcome_response
from search_api.fhir.routes import router

__all__ = ["install", "router"]


def install(app: FastAPI) -> None:
    """Mount the routes; every error under /fhir becomes an OperationOutcome."""
    use_error_format(app, router.prefix, outcome_response)
    app.include_router(router)
