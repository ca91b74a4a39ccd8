"""The patient search document: one per source patient, built the same way for every engine.

A document has three parts:
- `patient`: the display record, values as stored in the source;
- `match`: the normalized fields the re-ranker compares a query against;
- `terms`: typed exact-match keys for inverted indexes (see core.schema).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NotRequired, TypedDict

from core import terms as t
from normalizers.emails import normalize_email
from normalizers.identifiers import normalize_mrn
from normalizers.names import name_keys, name_tokens
from normalizers.phones import normalize_phone
from normalizers.text import fold

PATIENT_COLUMNS = (
    "id",
    "clinic_id",
    "mrn",
    "given_name",
    "middle_name",
    "family_name",
    "birth_date",
    "sex",
    "postal_code",
    "active",
    "updated_at",
)
CONTACT_COLUMNS = ("id", "patient_id", "kind", "value", "use")


class ContactValue(TypedDict):
    value: str  # as typed in the source
    use: str | None


class PatientRecord(TypedDict):
    """The display record: values as stored in the source (the API's `patient`, see DESIGN.md)."""

    id: str
    clinic_id: str
    active: bool
    given_name: str | None
    middle_name: str | None
    family_name: str | None
    birth_date: str | None  # ISO 8601
    sex: str | None
    mrn: str | None
    phones: list[ContactValue]
    emails: list[ContactValue]
    postal_code: str | None


class MatchFields(TypedDict):
    """Normalized fields the re-ranker compares a query against."""

    given: list[str]  # folded name words
    middle: list[str]
    family: list[str]
    family_keys: list[str]  # whole-field keys (garcialopez)
    given_keys: list[str]
    mrn: str | None
    birth_date: str | None  # ISO 8601
    phones: list[str]  # E.164
    national: list[str]
    emails: list[str]  # canonical
    updated_at: NotRequired[str | None]  # ISO 8601: orders namesakes, latest first


@dataclass(frozen=True)
class PatientDocument:
    id: str
    clinic_id: str
    active: bool
    birth_date: dt.date | None
    patient: PatientRecord
    match: MatchFields
    terms: list[str]
    name_text: str
    sort_key: str
    source_updated_at: dt.datetime | None
    contact_ids: list[str] = field(default_factory=list)


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


@lru_cache(maxsize=200_000)
def _word_terms(word: str, nicknames: bool) -> tuple[str, ...]:
    found = [t.name(word), *t.phonetic(word)]
    if nicknames:
        found.extend(t.nicknames(word))
    return tuple(found)


@lru_cache(maxsize=200_000)
def _name_field(text: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Tokens and keys of one name field; names repeat a lot across patients, so cache them."""
    return tuple(name_tokens(text)), tuple(name_keys(text))


def name_terms(fields: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> set[str]:
    """Name, nickname and phonetic terms for the inverted index."""
    terms: set[str] = set()
    for fld, (tokens, keys) in fields.items():
        terms.update(t.name(key) for key in keys)
        for token in tokens:
            terms.update(_word_terms(token, fld != "family"))
    return terms


@dataclass
class _Contacts:
    """A patient's contact rows, read: display values, normalized values, index terms."""

    phones: list[ContactValue] = field(default_factory=list)
    emails: list[ContactValue] = field(default_factory=list)
    e164: list[str] = field(default_factory=list)
    national: list[str] = field(default_factory=list)
    canonical_emails: list[str] = field(default_factory=list)
    terms: set[str] = field(default_factory=set)

    def add_phone(self, value: str, use: str | None, region: str) -> None:
        phone = normalize_phone(value, region)
        self.phones.append({"value": value, "use": use})
        if phone.e164:
            self.e164.append(phone.e164)
            self.terms.add(t.phone(phone.e164))
        if phone.national:
            self.national.append(phone.national)
            self.terms.add(t.national(phone.national))
            if len(phone.national) >= 7:
                self.terms.add(t.last7(phone.national))
        if phone.last4:
            self.terms.add(t.last4(phone.last4))

    def add_email(self, value: str, use: str | None) -> None:
        email = normalize_email(value)
        self.emails.append({"value": value, "use": use})
        canonical = email.canonical or value.strip().lower()
        if canonical:
            self.canonical_emails.append(canonical)
            self.terms.add(t.email(canonical))


def _read_contacts(contacts: Sequence[Mapping[str, Any]], region: str) -> _Contacts:
    found = _Contacts()
    for contact in sorted(contacts, key=lambda c: str(c["id"])):
        value = str(contact.get("value") or "")
        kind = str(contact.get("kind") or "").lower()
        if kind == "phone":
            found.add_phone(value, contact.get("use"), region)
        elif kind == "email":
            found.add_email(value, contact.get("use"))
    return found


def build_document(
    row: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]], *, region: str = "US"
) -> PatientDocument:
    """Source row plus its contacts -> document. Pure: the indexer and reindex share it."""
    given, given_keys = _name_field(row.get("given_name"))
    middle, middle_keys = _name_field(row.get("middle_name"))
    family, family_keys = _name_field(row.get("family_name"))
    birth_date: dt.date | None = row.get("birth_date")
    mrn = normalize_mrn(row["mrn"]) if row.get("mrn") else None
    found = _read_contacts(contacts, region)

    terms = found.terms | name_terms(
        {
            "given": (given, given_keys),
            "middle": (middle, middle_keys),
            "family": (family, family_keys),
        }
    )
    if mrn:
        terms.add(t.mrn(mrn))
    if birth_date:
        terms.add(t.dob(birth_date))

    patient: PatientRecord = {
        "id": str(row["id"]),
        "clinic_id": str(row["clinic_id"]),
        "mrn": row.get("mrn"),
        "given_name": row.get("given_name"),
        "middle_name": row.get("middle_name"),
        "family_name": row.get("family_name"),
        "birth_date": _iso(birth_date),
        "sex": row.get("sex"),
        "phones": found.phones,
        "emails": found.emails,
        "postal_code": row.get("postal_code"),
        "active": bool(row.get("active", True)),
    }
    match: MatchFields = {
        "given": list(given),
        "middle": list(middle),
        "family": list(family),
        "family_keys": list(family_keys),
        "given_keys": list(given_keys),
        "mrn": mrn,
        "birth_date": _iso(birth_date),
        "phones": sorted(set(found.e164)),
        "national": sorted(set(found.national)),
        "emails": sorted(set(found.canonical_emails)),
        # For ordering namesakes: the most recently updated record first.
        "updated_at": row["updated_at"].isoformat() if row.get("updated_at") else None,
    }
    sort_key = fold(" ".join(filter(None, [row.get("family_name"), row.get("given_name")])))
    return PatientDocument(
        id=str(row["id"]),
        clinic_id=str(row["clinic_id"]),
        active=bool(row.get("active", True)),
        birth_date=birth_date,
        patient=patient,
        match=match,
        terms=sorted(terms),
        name_text=" ".join([*given, *middle, *family]),
        sort_key=sort_key,
        source_updated_at=row.get("updated_at"),
        contact_ids=sorted(str(c["id"]) for c in contacts),
    )
