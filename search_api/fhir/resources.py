"""FHIR R4 (4.0.1) JSON built from the service's own records: Patient, Bundle, OperationOutcome.

Only elements that R4 defines are emitted: strict parsers (fhir.resources,
fhirclient) reject any other key, and empty strings or lists are left out.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
_MR_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
    "text": "Medical record number",
}
_GENDERS = frozenset({"male", "female", "other", "unknown"})
_CONTACT_USES = frozenset({"home", "work", "temp", "old", "mobile"})

# -- ids --------------------------------------------------------------------------
# A FHIR id is [A-Za-z0-9-.]{1,64}; a source id may be any text. Ids that do not fit,
# or that start with the marker, travel base64url-encoded after the marker, with "."
# for "_" (reversibly; fits 64 characters for source ids of up to 46 bytes).
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MARKER = "x."


def fhir_id(source_id: str) -> str:
    if _FHIR_ID.fullmatch(source_id) and not source_id.startswith(_MARKER):
        return source_id
    encoded = base64.urlsafe_b64encode(source_id.encode("utf-8", "surrogatepass"))
    return _MARKER + encoded.decode("ascii").rstrip("=").replace("_", ".")


def source_id(resource_id: str) -> str | None:
    """The source id a FHIR id stands for; None when it cannot be one of ours."""
    if not _FHIR_ID.fullmatch(resource_id):
        return None
    if not resource_id.startswith(_MARKER):
        return resource_id
    payload = resource_id[len(_MARKER) :].replace(".", "_")
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        return decoded.decode("utf-8")
    except (ValueError, binascii.Error):
        return None


# -- Patient ----------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A FHIR string: non-empty, no surrounding whitespace."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _telecom(patient: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for system, key in (("phone", "phones"), ("email", "emails")):
        for contact in patient.get(key) or ():
            value = _text(contact.get("value"))
            if not value:
                continue
            point: dict[str, Any] = {"system": system, "value": value}
            use = str(contact.get("use") or "").lower()
            if use in _CONTACT_USES:
                point["use"] = use
            out.append(point)
    return out


def _name(patient: Mapping[str, Any]) -> list[dict[str, Any]]:
    family = _text(patient.get("family_name"))
    given = [g for g in (_text(patient.get(k)) for k in ("given_name", "middle_name")) if g]
    name: dict[str, Any] = {"use": "official"}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    return [name] if len(name) > 1 else []


def patient_resource(patient: Mapping[str, Any], mrn_system: str) -> dict[str, Any]:
    """The stored display record as a FHIR Patient (values as the source holds them)."""
    resource: dict[str, Any] = {"resourceType": "Patient", "id": fhir_id(str(patient["id"]))}
    mrn = _text(patient.get("mrn"))
    if mrn:
        resource["identifier"] = [
            {"use": "usual", "type": _MR_TYPE, "system": mrn_system, "value": mrn}
        ]
    resource["active"] = bool(patient.get("active", True))
    optional: dict[str, Any] = {
        "name": _name(patient),
        "telecom": _telecom(patient),
        "gender": str(patient.get("sex") or "").lower() or None,
        "birthDate": _text(patient.get("birth_date")),
        "address": [{"postalCode": pc}] if (pc := _text(patient.get("postal_code"))) else [],
    }
    if optional["gender"] not in _GENDERS:
        optional["gender"] = None
    resource.update({k: v for k, v in optional.items() if v})
    return resource


# -- Bundle -----------------------------------------------------------------------


def bundle_entry(
    base: str,
    patient: Mapping[str, Any],
    mrn_system: str,
    score: float,
    grade: str | None = None,
) -> dict[str, Any]:
    resource = patient_resource(patient, mrn_system)
    search: dict[str, Any] = {"mode": "match", "score": round(min(max(score, 0.0), 1.0), 4)}
    if grade:
        search["extension"] = [{"url": MATCH_GRADE_URL, "valueCode": grade}]
    return {"fullUrl": f"{base}/Patient/{resource['id']}", "resource": resource, "search": search}


def searchset(
    entries: Sequence[dict[str, Any]],
    links: Sequence[tuple[str, str]],
    total: int | None = None,
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    if links:
        bundle["link"] = [{"relation": rel, "url": url} for rel, url in links]
    if entries:
        bundle["entry"] = list(entries)
    return bundle


def outcome_entry(code: str, message: str) -> dict[str, Any]:
    """An OperationOutcome inside a searchset (search.mode = outcome): a warning, not an error."""
    return {
        "resource": operation_outcome(code, message, severity="warning"),
        "search": {"mode": "outcome"},
    }


def monotone_scores(scores: Sequence[float]) -> list[float]:
    """Scores in [0, 1], never increasing down the page (the page is in ranked order)."""
    out: list[float] = []
    for s in scores:
        s = min(max(s, 0.0), 1.0)
        out.append(min(s, out[-1]) if out else s)
    return out


# -- OperationOutcome -------------------------------------------------------------


def operation_outcome(code: str, message: str, *, severity: str = "error") -> dict[str, Any]:
    """`message` must name parameters, never echo their values (they may be patient data)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }
