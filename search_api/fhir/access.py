"""Who is asking on /fhir: the shared access check of search_api.access, with scope `fhir`.

`fhir_access(action)` is the one dependency every /fhir patient-data route uses
(actions read, search, match): it is `search_api.access.require(action, "fhir")`,
so the key (Bearer or X-API-Key), the `fhir` scope, the staff user, the rate
limits (the stricter lookup buckets for $match) and the audit record are the
same as on /v1. Routes report the patients they return with `caller.returned(ids)`;
errors raised as ApiError become OperationOutcomes under /fhir.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from search_api.access import Access, require

Caller = Access


def fhir_access(action: str) -> Callable[..., Awaitable[Access]]:
    """The dependency of a /fhir route doing `action` (read, search or match)."""
    return require(action, "fhir", strict=action == "match")
