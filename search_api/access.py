"""Accountable access: ONE mechanism every patient-data route uses.

A route declares what it does with the `require` dependency and reports the
patients it returned; everything else happens here:

    from search_api.access import Access, require

    @router.post("/v1/patients/lookup")
    def lookup(body: ..., access: Annotated[Access, Depends(require("lookup", strict=True))]):
        found = engine.lookup(..., access.clinics)   # the key's clinics, nothing else
        access.returned(c.id for c in found)         # the ids on this page, for the trail
        ...

A router whose routes use it is an `APIRouter(route_class=AccessRoute)`: `require` reads
its headers itself, and AccessRoute lists them in the OpenAPI schema.

`require(action, scope=None, strict=False)` returns a dependency that, in order:
  1. fails closed with 503 when the audit trail cannot be written
     (PATIENT_SEARCH_AUDIT_ON_FAILURE=serve serves and alarms instead);
  2. authenticates `X-API-Key` or `Authorization: Bearer <key>` (401), through a
     per-process cache that LISTEN/NOTIFY empties within a second of a
     revoke or rotate in any process;
  3. checks the key's scope (`scope` defaults to the action's: search, lookup,
     read, fhir, audit) (403);
  4. reads `X-Staff-User` and `X-Purpose-Of-Use` (400 when malformed, or when
     the key requires a user and none is given);
  5. takes tokens from the shared rate-limit buckets (429 with Retry-After,
     RateLimit-Policy, RateLimit); `strict=True` adds the stricter buckets
     of lookup and FHIR $match.
Errors are raised as search_api.errors.ApiError; a facade with its own error
format (FHIR OperationOutcome) maps ApiError in its exception handler.

AccessMiddleware (installed once per app by `install_access`) then writes one
audit record per request to such a route at the moment the response starts:
time, request id (echoed as X-Request-Id on every response), key, clinics,
staff user, purpose, source address, action, HTTP status, the request as
received and `access.patient_ids`. Requests refused before the dependency ran
(malformed JSON, for instance) are recorded too, from the route's declaration.
If the record cannot be queued the response is replaced by a 503 before any
patient data leaves.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from psycopg_pool import ConnectionPool

from core.apikeys import NOTIFY_CHANNEL, ApiKey, find_key, hash_key, plausible_key
from core.audit import AuditRecord, AuditUnavailable, AuditWriter
from core.settings import Settings
from search_api.edge import Message, Receive, Scope, Send
from search_api.errors import ApiError
from search_api.handlers import HandlerThreads
from search_api.metrics import AUDIT_FAILURES, AUDIT_PENDING
from search_api.ratelimit import RateLimiter
from search_api.specificity import ClinicSizes

log = logging.getLogger(__name__)

ACCESS_KEY = "patient_search.access"  # where the request's Access lives in the ASGI scope
REQUEST_ID_KEY = "patient_search.request_id"
MAX_RECORDED_BODY = 16_384
KEY_CACHE_SECONDS = 30.0  # a safety net: LISTEN/NOTIFY normally empties the cache at once
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_PURPOSE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="patient-search"'}
_SCOPE_OF = {"search": "search", "lookup": "lookup", "read": "read", "match": "fhir"}


# --- the per-request context ------------------------------------------------------------


@dataclass
class Access:
    """Who is asking for what on this request, and which patients it was shown."""

    action: str
    request_id: str
    source: str | None
    started: dt.datetime
    key: ApiKey | None = None
    staff_user: str | None = None
    purpose: str | None = None
    patient_ids: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def clinics(self) -> tuple[str, ...]:
        """The clinics this request may see: the key's, and nothing before authentication."""
        return self.key.clinics if self.key is not None else ()

    def returned(self, patient_ids: Iterable[str]) -> None:
        """Report the patients on the page being answered (called once per response)."""
        self.patient_ids.extend(patient_ids)

    def noted(self, note: str) -> None:
        """A short, data-free remark for the trail (e.g. "identifier locked")."""
        self.note = note if self.note is None else f"{self.note}; {note}"


# --- API keys, cached per process and invalidated by NOTIFY -----------------------------


class KeyCache:
    """Key lookups cached per process; a NOTIFY from revoke/rotate empties the cache.

    While the process's listener (core.listener) is down the cache keeps entries one
    second only, so revocation still takes effect within a second.
    """

    channels = (NOTIFY_CHANNEL,)

    def __init__(self, pool: ConnectionPool, ttl_s: float = KEY_CACHE_SECONDS) -> None:
        self.pool, self.ttl_s = pool, ttl_s
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._generation = 0
        self._following = False

    def forget(self) -> None:
        self._generation += 1
        self._entries.clear()

    def heard(self, channel: str, payload: str) -> None:
        """A key was revoked or rotated (core.apikeys)."""
        self.forget()

    def follow(self, live: bool) -> None:
        """The listener is up or lost: either way a revocation may have gone unheard."""
        self._following = live
        self.forget()

    def cached(self, presented: str) -> tuple[bool, ApiKey | None]:
        """(True, key or None) when the answer is known without the database."""
        if not plausible_key(presented):  # refused before the cache or the database sees it
            return True, None
        cached = self._entries.get(hash_key(presented))
        ttl = self.ttl_s if self._following else 1.0
        if cached is None or time.monotonic() - cached[0] > ttl:
            return False, None
        return True, cached[1]

    def get(self, presented: str) -> ApiKey | None:
        known, key = self.cached(presented)
        if known:
            return key
        now, generation = time.monotonic(), self._generation
        with self.pool.connection() as conn:
            key = find_key(conn, presented)
        if generation == self._generation:  # no NOTIFY arrived meanwhile
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[hash_key(presented)] = (now, key)
        return key


# --- the state one app holds ------------------------------------------------------------


@dataclass
class AccessControl:
    """Keys, limits and the audit writer of one API process (app.state.search.access)."""

    settings: Settings
    keys: KeyCache
    limiter: RateLimiter
    audit: AuditWriter
    pool: ConnectionPool
    sizes: ClinicSizes
    state_pool: ConnectionPool

    @classmethod
    def start(cls, settings: Settings, url: str, pool: ConnectionPool) -> AccessControl:
        """`pool` serves the audit queries; keys, buckets and lockout use an autocommit pool."""
        audit = AuditWriter(
            url,
            queue_size=settings.audit_queue_size,
            flush_ms=settings.audit_flush_ms,
            batch_size=settings.audit_batch_size,
        ).start()
        state_pool = _autocommit_pool(url, settings)
        return cls(
            settings=settings,
            keys=KeyCache(state_pool),
            limiter=RateLimiter.from_settings(settings, state_pool),
            audit=audit,
            pool=pool,
            sizes=ClinicSizes(state_pool),
            state_pool=state_pool,
        )

    def close(self) -> None:
        """On shutdown (SIGTERM included): write every queued record."""
        self.audit.close()
        self.state_pool.close()

    @property
    def fail_closed(self) -> bool:
        return self.settings.audit_on_failure == "reject"


def _autocommit_pool(url: str, settings: Settings) -> ConnectionPool:
    """One round trip per key lookup or token draw (no BEGIN/COMMIT around it)."""
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=settings.pool_size,
        timeout=settings.pool_timeout_s,
        kwargs={
            "autocommit": True,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
            "application_name": "patient-search-access",
        },
        name="access",
        open=False,
        reconnect_timeout=60,
    )
    pool.open(wait=False)
    return pool


def access_control(request: Request) -> AccessControl:
    control: AccessControl = request.app.state.search.access
    return control


def handlers(request: Request) -> HandlerThreads:
    threads: HandlerThreads = request.app.state.search.handlers
    return threads


# --- the dependency ---------------------------------------------------------------------


def _presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _staff_headers(access: Access, user: str | None, purpose: str | None) -> None:
    if user is not None:
        user = user.strip()
        if not user or len(user) > 128 or not user.isprintable():
            access.noted("invalid X-Staff-User")
            raise ApiError(
                400, "invalid_header", "X-Staff-User must be 1 to 128 printable characters"
            )
        access.staff_user = user
    if purpose is not None:
        if not _PURPOSE.match(purpose.strip()):
            access.noted("invalid X-Purpose-Of-Use")
            raise ApiError(
                400,
                "invalid_header",
                "X-Purpose-Of-Use must be a purpose-of-use code such as TREAT, HPAYMT or ETREAT",
            )
        access.purpose = purpose.strip().upper()


def new_access(request: Request, action: str) -> Access:
    """The request's Access, created once and kept in the ASGI scope for the middleware."""
    existing: Access | None = request.scope.get(ACCESS_KEY)
    if existing is not None:
        return existing
    client = request.scope.get("client")
    access = Access(
        action=action,
        request_id=request.scope.get(REQUEST_ID_KEY) or new_request_id(),
        source=client[0] if client else None,
        started=dt.datetime.now(dt.UTC),
    )
    request.scope[ACCESS_KEY] = access
    return access


def require(
    action: str, scope: str | None = None, *, strict: bool = False
) -> Callable[..., Awaitable[Access]]:
    """A FastAPI dependency for a patient-data route; see the module docstring.

    `action` is what the trail records (search, lookup, read, match, audit);
    `scope` the key scope it needs (default: the action's); `strict` draws
    from the stricter lookup/$match rate-limit buckets too.
    """
    needed = scope or _SCOPE_OF.get(action, action)

    async def dependency(request: Request, response: Response) -> Access:
        # Read here, not declared as Header parameters (see AccessRoute).
        headers = request.headers
        access = new_access(request, action)
        control = access_control(request)
        if control.fail_closed and not control.audit.healthy:
            raise ApiError(
                503,
                "audit_unavailable",
                "the audit trail cannot be written; retry shortly",
                {"Retry-After": "2"},
            )
        presented = _presented_key(headers.get("x-api-key"), headers.get("authorization"))
        if not presented:
            raise ApiError(
                401, "unauthorized", "missing X-API-Key header (or Bearer token)", _CHALLENGE
            )
        known, key = control.keys.cached(presented)
        if not known:  # the database only on a cache miss, off the event loop
            key = await handlers(request).run(control.keys.get, presented)
        if key is None or key.expired():
            raise ApiError(401, "unauthorized", "unknown, expired or revoked API key", _CHALLENGE)
        access.key = key
        if needed not in key.scopes:
            raise ApiError(403, "forbidden", f"this API key lacks the '{needed}' scope")
        _staff_headers(access, headers.get("x-staff-user"), headers.get("x-purpose-of-use"))
        if key.require_user and access.staff_user is None:
            raise ApiError(
                400, "staff_user_required", "this API key requires the X-Staff-User header"
            )
        decision = control.limiter.check_leased(key.id, access.staff_user, strict=strict)
        if decision is None:  # no live lease: a draw from the shared buckets
            decision = await handlers(request).run(
                control.limiter.check, key.id, access.staff_user, strict=strict
            )
        if not decision.allowed:
            access.noted("rate limited")
            raise ApiError(
                429, "rate_limited", "too many requests; retry later", decision.headers()
            )
        response.headers.update(decision.headers())
        return access

    dependency.__access__ = (action, needed, strict)  # type: ignore[attr-defined]
    return dependency


# --- the middleware that records ---------------------------------------------------------


_DECLARED: dict[int, str | None] = {}


def _declared_action(scope: Scope) -> str | None:
    """The action a matched route declares through `require`, for requests refused early."""
    route = scope.get("route")
    if route is None:
        return None
    ident = id(route)
    if ident not in _DECLARED:
        found = None
        stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
        while stack and found is None:
            dep = stack.pop()
            spec = getattr(dep.call, "__access__", None)
            found = spec[0] if spec else None
            stack.extend(dep.dependencies)
        _DECLARED[ident] = found
    return _DECLARED[ident]


def _request_text(scope: Scope, body: bytes, truncated: bool) -> str:
    """The request as received, as JSON text; stored in the trail only, never logged."""
    entry: dict[str, Any] = {
        "method": scope.get("method"),
        "path": scope.get("path"),
        "query": scope.get("query_string", b"").decode("latin-1"),
    }
    if body:
        entry["body"] = body.decode("utf-8", "backslashreplace")
    if truncated:
        entry["truncated"] = True
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def _inbound_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID.match(text):
                return text
            break
    return new_request_id()


def new_request_id() -> str:
    """32 hex digits, unique across processes and restarts (a random prefix per process,
    then a counter) without a system call per request: uuid4 read the OS's random source
    each time, a tenth of a cached search's CPU under load (issue 11, nineteenth pass)."""
    return f"{_ids.prefix}{next(_ids.count):016x}"


class _RequestIds:
    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = itertools.count(1)


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.restart)  # a forked child draws its own prefix


class AccessMiddleware:
    """Echo X-Request-Id on every response; record each patient-data request once."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _inbound_request_id(scope)
        scope[REQUEST_ID_KEY] = request_id
        started = dt.datetime.now(dt.UTC)
        body = bytearray()
        state = {"recorded": False, "replaced": False, "truncated": False}

        async def tee() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                room = MAX_RECORDED_BODY - len(body)
                body.extend(chunk[:room])
                state["truncated"] |= len(chunk) > room
            return message

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not state["recorded"]:
                    state["recorded"] = True
                    if not self._record(scope, message["status"], bytes(body), state, started):
                        state["replaced"] = True
                        await _send_unavailable(send, request_id)
                        return
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            elif state["replaced"]:
                return
            await send(message)

        try:
            await self.app(scope, tee, send_recorded)
        except Exception:
            if not state["recorded"]:
                state["recorded"] = True
                self._record(scope, 500, bytes(body), state, started)
            raise

    def _record(
        self, scope: Scope, status: int, body: bytes, state: dict[str, bool], started: dt.datetime
    ) -> bool:
        """Queue the record; False when the response must become a 503 (fail closed)."""
        access: Access | None = scope.get(ACCESS_KEY)
        action = access.action if access is not None else _declared_action(scope)
        if action is None:
            return True
        app = scope.get("app")
        search = getattr(getattr(app, "state", None), "search", None)
        control: AccessControl | None = getattr(search, "access", None)
        if control is None:
            return True
        if access is None:
            client = scope.get("client")
            access = Access(
                action=action,
                request_id=scope[REQUEST_ID_KEY],
                source=client[0] if client else None,
                started=started,
            )
        # Failing closed: the answer becomes a 503, and the kept record says so.
        refuse = control.fail_closed and status < 500 and not control.audit.healthy
        if refuse:
            status = 503
            access.noted("audit trail unavailable")
        record = AuditRecord(
            at=access.started,
            request_id=access.request_id,
            key_id=access.key.id if access.key else None,
            clinics=access.clinics,
            staff_user=access.staff_user,
            purpose=access.purpose,
            source=access.source,
            action=access.action,
            outcome=status,
            request=_request_text(scope, body, state["truncated"]),
            patient_ids=tuple(access.patient_ids) if status < 400 else (),
            note=access.note,
        )
        try:
            control.audit.submit(record)
        except AuditUnavailable:
            AUDIT_FAILURES.inc()
            log.error("audit record not accepted", extra={"action": action, "status": status})
            refuse = control.fail_closed and status < 500
        finally:
            AUDIT_PENDING.set(control.audit.pending)
        return not refuse


async def _send_unavailable(send: Send, request_id: str) -> None:
    payload = json.dumps(
        {
            "error": {
                "code": "audit_unavailable",
                "message": "the audit trail cannot be written; retry shortly",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"retry-after", b"2"),
                (b"x-request-id", request_id.encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def install_access(app: FastAPI) -> None:
    """Add the recording middleware; AppState.open starts the AccessControl it uses."""
    app.add_middleware(AccessMiddleware)


# The headers `require` reads, as the OpenAPI schema lists them on every route using it.
ACCESS_HEADERS = {
    "X-API-Key": "The API key (or `Authorization: Bearer <key>`).",
    "Authorization": "`Bearer <API key>`, instead of X-API-Key.",
    "X-Staff-User": "The staff member the request is made for (1 to 128 printable "
    "characters), recorded in the audit trail; required by keys created with require_user.",
    "X-Purpose-Of-Use": "Purpose-of-use code recorded in the audit trail (TREAT, HPAYMT, ETREAT).",
}
_HEADER_PARAMETERS = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "description": text,
        "schema": {"type": "string"},
    }
    for name, text in ACCESS_HEADERS.items()
]


def _declares_access(dependant: Any) -> bool:
    return any(hasattr(d.call, "__access__") or _declares_access(d) for d in dependant.dependencies)


class AccessRoute(APIRoute):
    """The route class of routers whose routes use `require`: their OpenAPI operations list
    the headers `require` reads itself (declared as Header parameters, FastAPI validated
    all four on every request, about 0.1 ms)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if _declares_access(self.dependant):
            extra = dict(self.openapi_extra or {})
            extra["parameters"] = [*extra.get("parameters", []), *_HEADER_PARAMETERS]
            self.openapi_extra = extra
