"""Which engine answers: the primary when configured and healthy, else PostgreSQL.

Both engines' candidates go through the same re-ranker, so the order of
results does not depend on who answered; `degraded` tells the caller that the
fallback did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engines.base import Candidate, CandidateQuery, Engine
from search_api.metrics import FALLBACKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    candidates: list[Candidate]
    engine: str
    degraded: bool


class Router:
    def __init__(self, fallback: Engine, primary: Engine | None = None) -> None:
        self.fallback = fallback
        self.primary = primary

    def candidates(self, query: CandidateQuery) -> Answer:
        if self.primary is None:
            return Answer(self.fallback.candidates(query), self.fallback.name, False)
        try:
            return Answer(self.primary.candidates(query), self.primary.name, False)
        except Exception as exc:  # any failure of the primary means: ask the fallback
            FALLBACKS.labels(reason=type(exc).__name__).inc()
            log.warning(
                "primary engine failed; using fallback", extra={"error": type(exc).__name__}
            )
            return Answer(self.fallback.candidates(query), self.fallback.name, True)
