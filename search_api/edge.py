"""The HTTP edge, as a plain ASGI middleware: cheap refusals before any parsing.

- A body larger than `max_body_bytes` is refused with 413 from its declared
  length, or as soon as a streamed (chunked) body passes the limit, so a 100 MB
  upload is never read into memory or handed to the JSON parser.
- A header block larger than `max_header_bytes` is refused with 431.
- Every answer says `Cache-Control: no-store`: answers carry patient data, and
  neither a browser nor a proxy may keep them.
- Latency and outcome per route template (never the raw path) go to Prometheus.

Pure ASGI rather than a Starlette `BaseHTTPMiddleware`, which costs a task and
a memory stream per request on the hot path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from search_api.metrics import ERRORS, REQUEST_SECONDS, REQUESTS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

NO_STORE = (b"cache-control", b"no-store")


class BodyTooLarge(HTTPException):
    """A streamed body passed the limit: FastAPI answers it like any HTTP error (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def _error(status: int, code: str, message: str) -> tuple[dict[str, Any], bytes]:
    ERRORS.labels(code=code).inc()
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            NO_STORE,
        ],
    }
    return start, body


class Edge:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int = 64 * 1024, max_header_bytes: int = 16 * 1024
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_headers = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._answer(send, *refusal)
            REQUESTS.labels(endpoint="refused", status=str(refusal[0])).inc()
            return
        seen = 0
        started = False
        status, engine = 500, "none"

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def send_no_store(message: Message) -> None:
            nonlocal started, status, engine
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = []
                for name, value in message.get("headers", []):
                    if name == b"x-search-engine":
                        engine = value.decode("latin-1")
                    if name != b"cache-control":
                        headers.append((name, value))
                message["headers"] = [*headers, NO_STORE]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_no_store)
        except BodyTooLarge:
            if not started:
                status = 413
                await self._answer(send, *self._too_large())
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_SECONDS.labels(endpoint=endpoint, engine=engine).observe(
                time.perf_counter() - begun
            )
            REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        size = 0
        for name, value in scope.get("headers", ()):
            size += len(name) + len(value) + 4
            if name == b"content-length":
                if not value.isdigit():
                    return 400, "bad_request", "invalid Content-Length"
                if int(value) > self.max_body:
                    return self._too_large()
        if size > self.max_headers:
            return 431, "headers_too_large", "request headers too large"
        return None

    def _too_large(self) -> tuple[int, str, str]:
        return 413, "payload_too_large", f"request body larger than {self.max_body} bytes"

    @staticmethod
    async def _answer(send: Send, status: int, code: str, message: str) -> None:
        start, body = _error(status, code, message)
        await send(start)
        await send({"type": "http.response.body", "body": body})
