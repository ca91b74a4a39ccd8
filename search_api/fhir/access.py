"""Who is asking on /fhir: the key (Bearer or X-API-Key), its clinics, and what it was shown.

`fhir_access(action)` is the one dependency every /fhir patient-data route uses
(actions read, search, match). Routes report the patients they return with
`caller.returned(ids)`, so the shared access check (scope `fhir`, rate limits,
audit trail) slots in here without touching the routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header

from core.apikeys import ApiKey
from search_api.dependencies import State, authenticate
from search_api.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fhir"'}


@dataclass
class Caller:
    key: ApiKey
    patient_ids: list[str] = field(default_factory=list)

    @property
    def clinics(self) -> tuple[str, ...]:
        return self.key.clinics

    def returned(self, patient_ids: Iterable[str]) -> None:
        self.patient_ids.extend(patient_ids)


def bearer_or_api_key(
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> str:
    """FHIR clients send the API key as a bearer token; X-API-Key works as on /v1."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise ApiError(401, "unauthorized", "use Authorization: Bearer <api key>", _CHALLENGE)
    if x_api_key:
        return x_api_key
    raise ApiError(401, "unauthorized", "send Authorization: Bearer <api key>", _CHALLENGE)


def fhir_access(action: str) -> Callable[..., Caller]:
    """The dependency of a /fhir route doing `action` (read, search or match)."""

    def dependency(state: State, credential: Annotated[str, Depends(bearer_or_api_key)]) -> Caller:
        return Caller(authenticate(state, credential))

    return dependency
