"""What the routes depend on: the per-process state and the caller's API key (FastAPI dependencies).

A route declares `state: State` and `key: Key` in its signature; routers added later
(audit, FHIR) take the same dependencies or add their own next to these.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from psycopg_pool import ConnectionPool

from core.apikeys import ApiKey, find_key
from core.settings import Settings
from engines.pg_search import PostgresEngine
from search_api.errors import ApiError
from search_api.failover import Router, pool_state_reader
from search_api.service import observe_engine_query

log = logging.getLogger(__name__)
KEY_CACHE_SECONDS = 30.0


@dataclass
class AppState:
    """Opened once per process by the app's lifespan; closed when it ends."""

    settings: Settings
    pool: ConnectionPool
    postgres: PostgresEngine
    router: Router
    keys: dict[str, tuple[float, ApiKey | None]] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, database_url: str, primary: Any = None) -> AppState:
        from core.database import open_pool

        pool = open_pool(database_url, settings)
        postgres = PostgresEngine(
            pool, observe=observe_engine_query("postgres", settings.slow_query_ms)
        )
        postgres.words.load()
        router = Router.from_settings(
            settings, postgres, primary, read_state=pool_state_reader(pool) if primary else None
        )
        if primary is not None:
            # The same typo and prefix expansions as PostgreSQL (see engines.meili).
            primary.expand = postgres.words.expand
            # The primary serves once its settings are verified; it re-checks them itself.
            primary.verify_in_background(force=True)
        return cls(settings=settings, pool=pool, postgres=postgres, router=router)

    def close(self) -> None:
        self.router.close()
        self.pool.close()


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.search
    return state


State = Annotated[AppState, Depends(app_state)]


def authenticate(
    state: State,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> ApiKey:
    """Cached for KEY_CACHE_SECONDS, so a revoked key stops working within that time."""
    if not x_api_key:
        raise ApiError(401, "unauthorized", "missing X-API-Key header")
    now = time.monotonic()
    cached = state.keys.get(x_api_key)
    if cached is None or now - cached[0] > KEY_CACHE_SECONDS:
        with state.pool.connection() as conn:
            cached = (now, find_key(conn, x_api_key))
        if len(state.keys) > 10_000:
            state.keys.clear()
        state.keys[x_api_key] = cached
    if cached[1] is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return cached[1]


Key = Annotated[ApiKey, Depends(authenticate)]
