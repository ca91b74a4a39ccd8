"""Every failure answers {"error": {"code", "message"}}; messages never echo request values."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.base import SearchTimedOut
from search_api.metrics import ERRORS

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# An error answer in another shape (the FHIR facade answers OperationOutcome resources):
# (status, code, message, headers) -> response, chosen by the request path's prefix.
ErrorFormat = Callable[[int, str, str, dict[str, str] | None], JSONResponse]


def use_error_format(app: FastAPI, path_prefix: str, render: ErrorFormat) -> None:
    """Every error under `path_prefix` is answered by `render` instead of {"error": ...}."""
    formats: dict[str, ErrorFormat] = getattr(app.state, "error_formats", {})
    formats[path_prefix] = render
    app.state.error_formats = formats


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    request: Request | None = None,
) -> JSONResponse:
    ERRORS.labels(code=code).inc()
    if request is not None:
        formats: dict[str, ErrorFormat] = getattr(request.app.state, "error_formats", {})
        for prefix, render in formats.items():
            path = request.url.path
            if path == prefix or path.startswith(prefix + "/"):
                return render(status, code, message, headers)
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _retry_later(request: Request, code: str, message: str, seconds: int) -> JSONResponse:
    """503 with Retry-After: the database could not answer now, the request may be repeated."""
    return error_response(503, code, message, {"Retry-After": str(seconds)}, request=request)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers, request=request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc), request=request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code
        headers = getattr(exc, "headers", None)
        return error_response(exc.status_code, code, message, headers, request=request)

    @app.exception_handler(PoolTimeout)
    async def _busy(request: Request, exc: PoolTimeout) -> JSONResponse:
        return _retry_later(request, "busy", "the database is busy; retry shortly", 1)

    @app.exception_handler(SearchTimedOut)
    async def _timed_out(request: Request, exc: SearchTimedOut) -> JSONResponse:
        return _retry_later(request, "busy", "the search ran out of time; retry shortly", 1)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error", extra={"error": type(exc).__name__})
        return _retry_later(request, "unavailable", "the database is unavailable; retry shortly", 2)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", extra={"error": type(exc).__name__})
        return error_response(500, "internal", "internal error", request=request)
