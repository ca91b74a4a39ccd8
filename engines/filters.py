"""Conditions every result must meet, beside the ranked terms (FHIR search semantics).

The search box ranks; a filter only admits or rejects. A query may carry both:
`name=smith&birthdate=1974` ranks by the name and keeps those born in 1974.
PostgreSQL pushes filters into its index query (engines.pg_search); whatever
engine answered, `accepts` is the rule the results are held to, so a pushed-down
condition may be looser than this one, never stricter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from normalizers.names import name_tokens

# Name fields a filter may address; "name" means any part of the name.
NAME_FIELDS = {
    "given": ("given_name", "middle_name"),
    "family": ("family_name",),
    "name": ("given_name", "middle_name", "family_name"),
}
OPS = frozenset({"in", "not_in", "range", "not_range", "exact", "contains", "prefix"})


@dataclass(frozen=True)
class Filter:
    """`field` is id, birth_date, sex, active, postal_code, given, family or name.

    - in / not_in: the field's value is (not) one of `values`;
    - range / not_range: birth_date in [values[0], values[1]) (None = open end), or
      outside it; a missing date is in neither;
    - exact: a name field equals one of `values` exactly (case and accents count);
    - contains: a name field's folded words contain the folded value;
    - prefix: postal code starts with the value, case-insensitively.
    """

    field: str
    op: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown filter operation {self.op}")


def folded_words(text: str | None) -> str:
    """A name as the projection's name_text holds it: folded words joined by spaces."""
    return " ".join(name_tokens(text))


def name_values(patient: Mapping[str, Any], field: str) -> list[str]:
    """The stored strings `exact` compares against: each part, and the whole name for `name`."""
    parts = [patient.get(f) for f in NAME_FIELDS[field]]
    values = [p for p in parts if p]
    if field == "name":
        given, middle, family = parts
        for joined in (
            " ".join(p for p in (given, family) if p),
            " ".join(p for p in (given, middle, family) if p),
        ):
            if joined and joined not in values:
                values.append(joined)
    return values


def _in_range(value: dt.date | None, bounds: tuple[Any, ...]) -> bool | None:
    if value is None:
        return None
    low, high = bounds
    return (low is None or value >= low) and (high is None or value < high)


def _birth_date(patient: Mapping[str, Any]) -> dt.date | None:
    raw = patient.get("birth_date")
    return dt.date.fromisoformat(raw) if raw else None


def accepts_one(f: Filter, patient: Mapping[str, Any]) -> bool:
    if f.field == "birth_date":
        inside = _in_range(_birth_date(patient), f.values)
        if inside is None:
            return False
        return inside if f.op == "range" else not inside
    if f.field in NAME_FIELDS:
        if f.op == "exact":
            return any(v in f.values for v in name_values(patient, f.field))
        words = folded_words(" ".join(patient.get(p) or "" for p in NAME_FIELDS[f.field]))
        return any(folded_words(v) in words for v in f.values)
    value = patient.get(f.field)
    if f.op == "prefix":
        text = str(value or "").lower()
        return bool(value) and any(text.startswith(str(v).lower()) for v in f.values)
    if f.op == "not_in":
        return value not in f.values
    return value in f.values


def accepts(filters: Iterable[Filter], patient: Mapping[str, Any]) -> bool:
    """Does the stored patient (a document's display part) meet every filter?"""
    return all(accepts_one(f, patient) for f in filters)
