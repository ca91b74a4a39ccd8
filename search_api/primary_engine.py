"""The primary engine for this configuration, if any (Meilisearch when MEILI_URL is set)."""

from __future__ import annotations

from core.settings import Settings
from engines.base import Engine


def primary_engine(settings: Settings) -> Engine | None:
    if not settings.meili_url:
        return None
    from engines.meili import MeiliEngine

    engine: Engine = MeiliEngine.from_settings(settings)
    return engine
