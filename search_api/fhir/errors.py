"""Every error under /fhir is an OperationOutcome; the issue code follows the failure.

The service's errors (search_api.errors.ApiError and the framework's) keep their
status; this module only chooses the FHIR issue type and the body shape.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from search_api.errors import ApiError
from search_api.fhir.resources import FHIR_JSON, operation_outcome

# Service error codes whose FHIR issue type is not the one their status implies.
_BY_CODE = {"too_costly": "too-costly", "not_supported": "not-supported"}
_BY_STATUS = {
    400: "invalid",
    401: "security",
    403: "security",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    410: "not-found",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    503: "transient",
}


class FhirError(ApiError):
    """A 4xx of the facade; `code` is a FHIR issue type (invalid, not-supported, ...)."""

    def __init__(self, status: int, issue: str, message: str) -> None:
        super().__init__(status, issue.replace("-", "_"), message)


def issue_code(status: int, code: str) -> str:
    return _BY_CODE.get(code) or _BY_STATUS.get(status) or "exception"


def outcome_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The ErrorFormat of /fhir (see search_api.errors.use_error_format)."""
    if status == 422:  # FastAPI's validation status; FHIR answers bad requests with 400
        status = 400
    return JSONResponse(
        operation_outcome(issue_code(status, code), message),
        status_code=status,
        headers=headers,
        media_type=FHIR_JSON,
    )
