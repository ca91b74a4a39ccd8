"""GET /fhir/metadata: what the facade supports, as a CapabilityStatement (FHIR 4.0.1).

Built from search_api.fhir.params.MODIFIERS, so the statement cannot drift from
what the parser accepts. R4 has no element for modifiers: each parameter's
documentation lists its own.
"""

from __future__ import annotations

from typing import Any

from search_api.fhir.params import MODIFIERS, SORT_KEYS
from search_api.fhir.resources import FHIR_JSON, FHIR_VERSION

RELEASED = "2026-11-22"
_SP = "http://hl7.org/fhir/SearchParameter/"
# name -> (type, definition, documentation)
_PARAMETERS: dict[str, tuple[str, str, str]] = {
    "_id": ("token", "Resource-id", "Logical id; comma-separated ids are alternatives (OR)."),
    "identifier": (
        "token",
        "Patient-identifier",
        "MRN, as `{system}|value` or a bare value; another system matches nothing.",
    ),
    "name": (
        "string",
        "Patient-name",
        "Any part of the name. Default: case- and accent-insensitive prefix of each word, "
        "with the service's typo, nickname and sound-alike tolerance, ranked by _score. "
        ":exact compares the stored text exactly (case and accents count); :contains finds "
        "the letters anywhere in the name.",
    ),
    "family": (
        "string",
        "individual-family",
        "Family name; default, :exact and :contains as name.",
    ),
    "given": (
        "string",
        "individual-given",
        "Given or middle name; default, :exact and :contains as name.",
    ),
    "phonetic": ("string", "individual-phonetic", "Same as name without modifier (sound-alike)."),
    "birthdate": (
        "date",
        "individual-birthdate",
        "YYYY, YYYY-MM or YYYY-MM-DD (a partial date is a range) with prefixes "
        "eq ne gt lt ge le sa eb ap; repeat the parameter to bound a range.",
    ),
    "gender": ("token", "individual-gender", "male, female, other, unknown; comma = OR; :not."),
    "phone": (
        "token",
        "individual-phone",
        "Any format a person types; normalized as the search box does.",
    ),
    "email": ("token", "individual-email", "E-mail address, compared in canonical form."),
    "telecom": (
        "token",
        "individual-telecom",
        "phone|value, email|value or a bare phone or e-mail.",
    ),
    "address-postalcode": (
        "string",
        "individual-address-postalcode",
        "Case-insensitive prefix; :exact compares exactly; comma = OR.",
    ),
    "active": ("token", "Patient-active", "true or false; without it, active and inactive match."),
}


def _search_params(mrn_system: str) -> list[dict[str, Any]]:
    params = []
    for name in MODIFIERS:
        kind, definition, doc = _PARAMETERS[name]
        modifiers = sorted(m for m in MODIFIERS[name] if m)
        if modifiers:
            doc += " Modifiers: " + ", ".join(f":{m}" for m in modifiers) + "."
        params.append(
            {
                "name": name,
                "definition": _SP + definition,
                "type": kind,
                "documentation": doc.replace("{system}", mrn_system),
            }
        )
    return params


def capability_statement(base: str, mrn_system: str, max_count: int) -> dict[str, Any]:
    sorts = ", ".join(sorted(SORT_KEYS))
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": RELEASED,
        "publisher": "patient-search",
        "kind": "instance",
        "software": {"name": "patient-search"},
        "implementation": {"description": "Patient search FHIR R4 facade", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    f"Read-only Patient search. Results: _count (at most {max_count}), "
                    f"_sort ({sorts}; - for descending; default -_score), _total "
                    "(none by default; accurate within the ranking window), paging through "
                    "opaque next links tied to the key's clinics. Unknown parameters are "
                    "ignored unless the request says Prefer: handling=strict."
                ),
                "security": {
                    "description": (
                        "Authorization: Bearer <api key> or X-API-Key: <api key>; a key "
                        "sees only the clinics it was created for."
                    )
                },
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "versioning": "no-version",
                        "readHistory": False,
                        "updateCreate": False,
                        "searchParam": _search_params(mrn_system),
                        "operation": [
                            {
                                "name": "match",
                                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match",
                                "documentation": (
                                    "Parameters: resource (Patient), onlyCertainMatches, count. "
                                    "Entries carry search.score and the match-grade extension."
                                ),
                            }
                        ],
                    }
                ],
            }
        ],
    }
