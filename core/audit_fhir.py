"""One audit row as a FHIR R4 AuditEvent in the IHE BALP shape (PatientQuery / PatientRead).

BALP (Basic Audit Log Patterns) profiles the RESTful interactions: the client
is the Source Role ID agent, this service the Destination Role ID agent, the
staff member the requesting agent with the purpose of use, the raw request
goes base64-encoded into the Query entity, the request id into an XrequestId
entity, and each returned patient is an entity with role Patient. A request
that returned no patient uses the plain Query / Read profile.
"""

from __future__ import annotations

import base64
from typing import Any

from core.audit import StoredRecord, iso_utc

_BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
KEY_SYSTEM = "urn:patient-search:api-key"
USER_SYSTEM = "urn:patient-search:staff-user"

# action -> (restful interaction, AuditEvent.action, profile when a patient is known)
_KINDS = {
    "search": ("search", "E", "PatientQuery"),
    "lookup": ("search", "E", "PatientQuery"),
    "match": ("operation", "E", "PatientQuery"),
    "audit": ("search", "E", "PatientQuery"),
    "read": ("read", "R", "PatientRead"),
}


def _outcome(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious failure."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _agents(r: StoredRecord, server: str) -> list[dict[str, Any]]:
    rec = r.record
    client: dict[str, Any] = {
        "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
        "who": {
            "identifier": {"system": KEY_SYSTEM, "value": str(rec.key_id or "unknown")},
            "display": "API key " + (str(rec.key_id) if rec.key_id else "(not authenticated)"),
        },
        "requestor": rec.staff_user is None,
    }
    if rec.source:
        client["network"] = {"address": rec.source, "type": "2"}
    agents = [
        client,
        {
            "type": {"coding": [_coding(_DCM, "110152", "Destination Role ID")]},
            "who": {"display": server},
            "requestor": False,
        },
    ]
    if rec.staff_user is not None:
        user: dict[str, Any] = {
            "type": {"coding": [_coding(_PARTICIPATION, "IRCP", "information recipient")]},
            "who": {"identifier": {"system": USER_SYSTEM, "value": rec.staff_user}},
            "requestor": True,
        }
        if rec.purpose:
            user["purposeOfUse"] = [{"coding": [_coding(_ACT_REASON, rec.purpose)]}]
        agents.append(user)
    return agents


def _entities(r: StoredRecord) -> list[dict[str, Any]]:
    rec = r.record
    entities: list[dict[str, Any]] = [
        {
            "type": _coding(_ENTITY_TYPE, "2", "System Object"),
            "role": _coding(_OBJECT_ROLE, "24", "Query"),
            "query": base64.b64encode(rec.request.encode("utf-8")).decode("ascii"),
        },
        {
            "what": {"identifier": {"value": rec.request_id}},
            "type": _coding(_BALP_ENTITY, "XrequestId"),
        },
    ]
    for patient_id in rec.patient_ids:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient_id}"},
                "type": _coding(_ENTITY_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
            }
        )
    return entities


def audit_event(r: StoredRecord, server: str) -> dict[str, Any]:
    rec = r.record
    interaction, action, patient_profile = _KINDS.get(rec.action, _KINDS["search"])
    plain = "Read" if interaction == "read" else "Query"
    profile = _BALP + (patient_profile if rec.patient_ids else plain)
    description = f"HTTP {rec.outcome}" + (f"; {rec.note}" if rec.note else "")
    return {
        "resourceType": "AuditEvent",
        "id": f"audit-{r.seq}",
        "meta": {"profile": [profile]},
        "type": _coding(_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [_coding(_INTERACTION, interaction, interaction)],
        "action": action,
        "recorded": iso_utc(rec.at),
        "outcome": _outcome(rec.outcome),
        "outcomeDesc": description,
        "agent": _agents(r, server),
        "source": {
            "site": server,
            "observer": {"display": server},
            "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": _entities(r),
    }
