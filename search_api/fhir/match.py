"""Patient/$match: a Parameters resource in, the service's ranked search out, graded.

The Patient's name, birth date, MRN, phone and e-mail become one ranked search,
not a filter: $match answers "who is this most likely", best first.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from engines.filters import folded_words
from search_api.fhir.errors import FhirError
from search_api.plan import SearchInput
from search_api.ranking import GRADES, Ranked

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


@dataclass(frozen=True)
class MatchRequest:
    request: SearchInput
    gender: str | None
    only_certain: bool


def _bad(message: str) -> FhirError:
    return FhirError(400, "invalid", message)


def _parameters(body: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise _bad("the body must be a Parameters resource")
    params = body.get("parameter")
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise _bad("Parameters.parameter must be a list of parameters")
    by_name: dict[str, dict[str, Any]] = {}
    for p in params:
        name = p.get("name")
        if name in ("resource", "onlyCertainMatches", "count"):
            if name in by_name:
                raise _bad(f"{name}: given more than once")
            by_name[name] = p
    return by_name


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _name(patient: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(given, family, text) of the official name, else the first one given."""
    raw = patient.get("name")
    listed = raw if isinstance(raw, list) else []
    names = [n for n in listed if isinstance(n, dict)]
    names.sort(key=lambda n: n.get("use") not in ("official", "usual"))
    for n in names:
        given = " ".join(_strings(n.get("given"))) or None
        family = " ".join(_strings(n.get("family"))) or None
        text = " ".join(_strings(n.get("text"))) or None
        if given or family or text:
            return given, family, None if (given or family) else text
    return None, None, None


def _first(items: Any, want: Any) -> str | None:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and want(item) and isinstance(item.get("value"), str):
            value: str = item["value"].strip()
            if value:
                return value
    return None


def _calendar_day(value: Any) -> bool:
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _patient_input(patient: dict[str, Any], mrn_system: str, count: int) -> SearchInput:
    given, family, text = _name(patient)
    birth = patient.get("birthDate")
    if birth is not None and not _calendar_day(birth):
        raise _bad("Patient.birthDate: use a calendar date, YYYY-MM-DD")
    mrn = _first(patient.get("identifier"), lambda i: i.get("system") in (None, mrn_system))
    phone = _first(patient.get("telecom"), lambda t: t.get("system") in ("phone", "sms"))
    email = _first(patient.get("telecom"), lambda t: t.get("system") == "email")
    words = folded_words(" ".join(t for t in (given, family, text) if t))
    if len(words.replace(" ", "")) < 2 and not (mrn or phone or email):
        raise _bad(
            "too little to match on: give a name, an identifier (MRN), a phone or an e-mail, "
            "ideally with the birth date"
        )
    return SearchInput(
        given=given,
        family=family,
        name=text,
        birthdate=birth,
        phone=phone,
        email=email,
        mrn=mrn,
        include_inactive=True,
        limit=count,
    )


def parse_match(body: Any, *, mrn_system: str, max_count: int) -> MatchRequest:
    params = _parameters(body)
    resource = params.get("resource", {}).get("resource")
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise _bad("resource: a Patient resource is required")
    only = params.get("onlyCertainMatches", {}).get("valueBoolean", False)
    count = params.get("count", {}).get("valueInteger", min(10, max_count))
    if not isinstance(only, bool):
        raise _bad("onlyCertainMatches: use valueBoolean")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise _bad("count: use a positive valueInteger")
    gender = resource.get("gender") if isinstance(resource.get("gender"), str) else None
    return MatchRequest(
        request=_patient_input(resource, mrn_system, min(count, max_count)),
        gender=gender,
        only_certain=only,
    )


def score_grade(result: Ranked) -> str:
    """The ranking's calibrated grade (search_api.ranking.grade_results, issue 12)."""
    return result.grade


def match_grade(result: Ranked, gender: str | None) -> str:
    """The grade of one result; a contradicting gender costs one grade."""
    grade = score_grade(result)
    stored = str(result.candidate.patient.get("sex") or "").lower()
    if gender in ("male", "female") and stored in ("male", "female") and stored != gender:
        grade = GRADES[min(GRADES.index(grade) + 1, len(GRADES) - 1)]
    return grade
