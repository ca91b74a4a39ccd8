"""GET /v1/audit: the trail for keys with the `audit` scope, limited to the key's clinics.

"Who looked at this patient in the last 30 days" is
`GET /v1/audit?patient=ID&from=2026-10-23T00:00:00Z`. The query itself is
audited (action `audit`, with the patient asked about as its subject).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from core.audit import AuditFilter, query, to_fhir_bundle
from search_api.access import Access, AccessRoute, access_control, require
from search_api.errors import ApiError

router = APIRouter(tags=["audit"], route_class=AccessRoute)
AuditAccess = Annotated[Access, Depends(require("audit", "audit"))]


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ApiError(400, "invalid_request", f"'{name}' needs a time zone (e.g. ...Z)")
    return value


@router.get("/v1/audit")
def read_audit(
    request: Request,
    access: AuditAccess,
    patient: Annotated[str | None, Query(max_length=200)] = None,
    user: Annotated[str | None, Query(max_length=128)] = None,
    clinic: Annotated[str | None, Query(max_length=200)] = None,
    start: Annotated[dt.datetime | None, Query(alias="from")] = None,
    end: Annotated[dt.datetime | None, Query(alias="to")] = None,
    after: Annotated[int | None, Query(ge=0, description="continue after this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "fhir"], Query()] = "json",
) -> dict[str, Any]:
    """Audit records in chain order; `next` continues the listing."""
    if clinic is not None and clinic not in access.clinics:
        raise ApiError(403, "forbidden", "this API key does not cover that clinic")
    filters = AuditFilter(
        patient=patient,
        user=user,
        clinic=clinic,
        start=_aware(start, "from"),
        end=_aware(end, "to"),
        within=access.clinics,
        after_seq=after,
    )
    if patient is not None:
        access.returned([patient])
    control = access_control(request)
    with control.pool.connection() as conn:
        records = list(query(conn, filters, limit=limit))
    if format == "fhir":
        return to_fhir_bundle(records, server=str(request.base_url).rstrip("/"))
    return {
        "records": [r.as_dict() for r in records],
        "next": records[-1].seq if len(records) == limit else None,
    }
