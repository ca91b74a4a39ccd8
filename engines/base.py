"""What the read side asks of an engine, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.documents import MatchFields, PatientRecord
from engines.filters import Filter


@dataclass(frozen=True)
class NameToken:
    """One typed name word and the exact terms that would count as it.

    Terms are index terms (core.terms: `n:` word, `k:` nickname group, `p:` phonetic code).
    Engines may widen them with prefix and typo expansions of `text`, the
    folded word itself.
    """

    text: str
    alternatives: tuple[str, ...]  # the word itself and its nickname group: exact matches
    phonetic: tuple[str, ...] = ()  # sound-alike codes: only in the widened passes
    prefix: bool = True


class SearchTimedOut(Exception):
    """The search's time ran out before any pass found anyone. "No one" would then be
    a guess, and staff told so might register the patient again: the caller is told
    to retry instead. (Cut short after finding someone, a search answers with that:
    the passes left would only have ranked below it.)"""


@dataclass(frozen=True)
class CandidateQuery:
    clinic_ids: tuple[str, ...]
    include_inactive: bool = False
    strong_terms: tuple[str, ...] = ()  # mrn:, tel:, tn:, em: - one is enough
    weak_terms: tuple[str, ...] = ()  # t4:, t7: phone endings - narrow, never alone with names
    names: tuple[NameToken, ...] = ()
    dob_terms: tuple[str, ...] = ()  # every reading of the typed date
    dob_near_terms: tuple[str, ...] = ()  # swapped day/month, one digit off
    birth_years: tuple[int, ...] = ()  # a number typed with the name: narrows as weak terms do
    name_text: str = ""  # folded words for whole-name similarity
    limit: int = 50  # candidates at most (the re-ranking window)
    enough: int = 50  # stop loosening once this many are found (the page asked for)
    filters: tuple[Filter, ...] = ()  # conditions every candidate must meet (engines.filters)


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    patient: PatientRecord
    match: MatchFields


class Engine(Protocol):
    name: str

    def candidates(self, query: CandidateQuery) -> list[Candidate]: ...

    def get(self, patient_id: str, clinic_ids: tuple[str, ...]) -> Candidate | None: ...
