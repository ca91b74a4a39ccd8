"""From a search request to what the engine fetches and what the ranker compares.

Free text goes through normalizers.query.parse_query; structured fields go
through the same normalizers, so `given="José"` and `q="jose"` mean the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core import terms
from engines.base import CandidateQuery, NameToken
from engines.filters import Filter
from normalizers.dates import parse_dates, plausible_date
from normalizers.emails import normalize_email
from normalizers.identifiers import normalize_mrn
from normalizers.names import name_tokens
from normalizers.phones import Phone, normalize_phone
from normalizers.query import MAX_QUERY_CHARS, ParsedQuery, parse_query
from search_api.ranking import RankQuery, literal_text


@dataclass(frozen=True)
class SearchInput:
    """A validated request, before interpretation (see search_api.models)."""

    q: str | None = None
    given: str | None = None
    family: str | None = None
    name: str | None = None  # name words of any part (FHIR `name`); the search box uses q
    birthdate: str | None = None
    phone: str | None = None
    email: str | None = None
    mrn: str | None = None
    include_inactive: bool = False
    limit: int = 10
    offset: int = 0
    # FHIR search semantics (search_api.fhir); the search box leaves them at their defaults.
    filters: tuple[Filter, ...] = ()  # conditions every result must meet
    match_all: bool = False  # every criterion given must agree with the record, not just rank it
    sort: tuple[str, ...] = ()  # family, given, birthdate, _score; "-" before a key: descending
    exhaustive: bool = False  # one fixed candidate window for every page, so pages never overlap


@dataclass(frozen=True)
class SearchPlan:
    rank: RankQuery
    candidates: CandidateQuery
    parsed: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        r = self.rank
        return not (
            r.names
            or r.birth_dates
            or r.phones
            or r.phone_fragments
            or r.emails
            or r.mrns
            or r.phone_nationals
        )


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def name_token(text: str, *, prefix: bool = True) -> NameToken:
    # Two letters sound like half the clinic: no phonetic code for them.
    return NameToken(
        text=text,
        alternatives=(terms.name(text), *terms.nicknames(text)),
        phonetic=tuple(terms.phonetic(text, alternates=False)) if len(text) >= 3 else (),
        prefix=prefix,
    )


def joined_pairs(tokens: tuple[NameToken, ...]) -> tuple[NameToken, ...]:
    """Let two adjacent typed words also match the one stored word they spell together
    ("mc donald" finds McDonald, "van der berg" finds Vanderberg)."""
    if len(tokens) < 2:
        return tokens
    extra: list[list[str]] = [[] for _ in tokens]
    for i in range(len(tokens) - 1):
        joined = terms.name(tokens[i].text + tokens[i + 1].text)
        extra[i].append(joined)
        extra[i + 1].append(joined)
    return tuple(
        replace(t, alternatives=(*t.alternatives, *more)) if more else t
        for t, more in zip(tokens, extra, strict=True)
    )


def near_dates(readings: Sequence[dt.date]) -> list[dt.date]:
    """Dates a slip of the hand away: day and month swapped, or one digit of YYYYMMDD wrong."""
    out: set[dt.date] = set()
    today = dt.date.today()
    for d in readings:
        if d.day <= 12 and d.day != d.month:
            out.add(d.replace(month=d.day, day=d.month))
        # One digit changed in one field at a time, worked out on the numbers: only the
        # months 1-12 and the days 1-31 are ever tried as dates.
        tried = [(y, d.month, d.day) for y in _one_digit_off(d.year, 4)]
        tried.extend((d.year, m, d.day) for m in _one_digit_off(d.month, 2) if 1 <= m <= 12)
        tried.extend((d.year, d.month, day) for day in _one_digit_off(d.day, 2) if 1 <= day <= 31)
        for year, month, day in tried:
            if (near := plausible_date(year, month, day, today)) is not None:
                out.add(near)
    return sorted(out - set(readings))


def _one_digit_off(value: int, width: int) -> list[int]:
    """`value` written in `width` digits with one of them changed: what a typed date is
    a slip away from (72 of these per date, where building and parsing each one's eight
    digits as text was most of a name + date search's plan)."""
    found: list[int] = []
    place = 1
    for _ in range(width):
        digit = value // place % 10
        found.extend(value + (other - digit) * place for other in range(10) if other != digit)
        place *= 10
    return found


def _phones(phones: Sequence[Phone]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _unique(p.e164 for p in phones), _unique(p.national for p in phones)


MAX_WINDOW = 200


def candidate_window(wanted: int) -> int:
    """Candidates to re-rank: a fixed window, so paging inside it never reshuffles results."""
    return 50 if wanted <= 50 else MAX_WINDOW


def _names_and_roles(
    parsed: ParsedQuery, request: SearchInput
) -> tuple[list[str], list[str | None]]:
    """Typed name words in order, each with its role (family, given) when the input says so."""
    names: list[str] = []
    roles: list[str | None] = []
    if parsed.family or parsed.given:
        for role, words in (("family", parsed.family), ("given", parsed.given)):
            names.extend(words)
            roles.extend([role] * len(words))
        leftover = [w for w in parsed.names if w not in names]
        names.extend(leftover)
        roles.extend([None] * len(leftover))
    else:
        names.extend(parsed.names)
        roles.extend([None] * len(parsed.names))
    typed: tuple[tuple[str | None, str | None], ...] = (
        ("given", request.given),
        ("family", request.family),
        (None, request.name),
    )
    for role_of_text, text in typed:
        for word in name_tokens(text):
            names.append(word)
            roles.append(role_of_text)
    return names, roles


def _rank_query(
    parsed: ParsedQuery, request: SearchInput, *, region: str, date_order: str
) -> RankQuery:
    """The box text's readings plus the structured fields, through the same normalizers."""
    names, roles = _names_and_roles(parsed, request)
    birth_dates = list(parsed.birth_dates)
    if request.birthdate:
        birth_dates.extend(parse_dates(request.birthdate, order=date_order))
    phones = list(parsed.phones)
    if request.phone:
        phones.append(normalize_phone(request.phone, region))
    emails = [e.canonical for e in parsed.emails if e.canonical]
    if request.email:
        email = normalize_email(request.email)
        emails.append(email.canonical or request.email.strip().lower())
    mrns = list(parsed.mrns)
    if request.mrn and (mrn := normalize_mrn(request.mrn)):
        mrns.append(mrn)
    e164, nationals = _phones(phones)
    return RankQuery(
        names=tuple(names),
        roles=tuple(roles),
        birth_dates=_unique(birth_dates),
        phones=e164,
        phone_nationals=nationals,
        phone_fragments=_unique(parsed.phone_fragments),
        birth_years=parsed.birth_years,
        emails=_unique(emails),
        mrns=_unique(mrns),
        literal=literal_text(
            " ".join(t for t in (request.q, request.given, request.family, request.name) if t)
        ),
    )


def _candidate_query(
    rank: RankQuery, request: SearchInput, clinic_ids: Sequence[str], candidate_limit: int | None
) -> CandidateQuery:
    """The index terms to fetch candidates by (core.terms), and how many."""
    wanted = request.offset + request.limit
    strong = [
        *(terms.phone(p) for p in rank.phones),
        *(terms.national(n) for n in rank.phone_nationals),
        *(terms.email(e) for e in rank.emails),
        *(terms.mrn(m) for m in rank.mrns),
    ]
    unique_names = _unique(rank.names)
    return CandidateQuery(
        clinic_ids=tuple(clinic_ids),
        include_inactive=request.include_inactive,
        strong_terms=_unique(strong),
        weak_terms=_unique(terms.phone_ending(f) for f in rank.phone_fragments),
        names=joined_pairs(tuple(name_token(n) for n in unique_names)),
        dob_terms=tuple(terms.dob(d) for d in rank.birth_dates),
        dob_near_terms=tuple(terms.dob(d) for d in near_dates(rank.birth_dates)),
        birth_years=rank.birth_years,
        name_text=" ".join(unique_names),
        limit=MAX_WINDOW if request.exhaustive else candidate_limit or candidate_window(wanted),
        enough=MAX_WINDOW if request.exhaustive else wanted,
        filters=request.filters,
    )


def _shown(parsed: ParsedQuery, request: SearchInput) -> dict[str, Any]:
    """How the input was read, for the answer's `query`: the box text's parts, and which
    structured fields were given (names only, never their values)."""
    shown = parsed.to_dict()
    structured = {
        k: v
        for k, v in (
            ("given", request.given),
            ("family", request.family),
            ("name", request.name),
            ("birthdate", request.birthdate),
            ("phone", request.phone),
            ("email", request.email),
            ("mrn", request.mrn),
        )
        if v
    }
    if structured:
        shown["structured"] = sorted(structured)
    return shown


def build_plan(
    request: SearchInput,
    clinic_ids: Sequence[str],
    *,
    region: str = "US",
    date_order: str = "MDY",
    candidate_limit: int | None = None,
    max_query_length: int = MAX_QUERY_CHARS,
) -> SearchPlan:
    parsed = parse_query(
        request.q or "", region=region, date_order=date_order, max_chars=max_query_length
    )
    rank = _rank_query(parsed, request, region=region, date_order=date_order)
    return SearchPlan(
        rank=rank,
        candidates=_candidate_query(rank, request, clinic_ids, candidate_limit),
        parsed=_shown(parsed, request),
    )
