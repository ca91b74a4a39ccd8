"""Request and response bodies of the HTTP API (the contract in DESIGN.md)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.settings import MAX_PAGE
from normalizers.query import MAX_QUERY_CHARS

MAX_FIELD_LENGTH = 100


def _reject_control(value: str | None) -> str | None:
    if value is None:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") and ch not in "\t" for ch in value):
        raise ValueError("must not contain control characters")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SearchRequest(_Strict):
    # The ceilings here; the configured bounds (MAX_QUERY_LENGTH, MAX_LIMIT) in search_api.service.
    q: str | None = Field(default=None, max_length=MAX_QUERY_CHARS, description="search box text")
    given: str | None = Field(default=None, max_length=MAX_FIELD_LENGTH)
    family: str | None = Field(default=None, max_length=MAX_FIELD_LENGTH)
    birthdate: str | None = Field(default=None, max_length=40)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=254)
    mrn: str | None = Field(default=None, max_length=64)
    include_inactive: bool = False
    limit: int = Field(default=10, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_PAGE)

    _no_control = field_validator("q", "given", "family", "birthdate", "phone", "email", "mrn")(
        classmethod(lambda cls, v: _reject_control(v))
    )


class LookupRequest(_Strict):
    """Booking: exact identifiers only, phone + birthdate or MRN + birthdate."""

    birthdate: str = Field(max_length=40)
    phone: str | None = Field(default=None, max_length=40)
    mrn: str | None = Field(default=None, max_length=64)

    _no_control = field_validator("birthdate", "phone", "mrn")(
        classmethod(lambda cls, v: _reject_control(v))
    )


class Highlight(BaseModel):
    """Characters [start, end) of a displayed value that matched; `index` picks the phone
    (in `phones_formatted`) or the email."""

    field: str
    start: int
    end: int
    index: int | None = None


class DuplicateMark(BaseModel):
    """Another result on the same page that may be the same person, and why."""

    id: str
    why: str


class SearchResult(BaseModel):
    id: str
    score: float
    match: str
    matched: list[str]
    grade: Literal["certain", "probable", "possible"] = Field(
        description="How sure the match is, calibrated on an external benchmark: certain "
        "(>= 99% right there), probable (>= 90%), possible"
    )
    patient: Mapping[str, Any]  # core.documents.PatientRecord
    # Added for the search page (the contract only grows): what to mark and how to show it.
    highlights: list[Highlight] = Field(default_factory=list)
    phones_formatted: list[str] = Field(default_factory=list)
    duplicates: list[DuplicateMark] = Field(default_factory=list)


class SearchResponse(BaseModel):
    results: list[SearchResult]
    engine: str
    degraded: bool
    took_ms: float
    query: dict[str, Any]


class LookupMatch(BaseModel):
    id: str
    clinic_id: str
    given_name: str | None
    family_name: str | None
    birth_date: str | None


class LookupResponse(BaseModel):
    results: list[LookupMatch]
    took_ms: float


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
