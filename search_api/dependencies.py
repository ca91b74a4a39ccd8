"""What the routes depend on: the per-process state and the caller's API key (FastAPI dependencies).

A route declares `state: State` and `key: Key` in its signature; routers added later
(audit, FHIR) take the same dependencies or add their own next to these.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from psycopg_pool import ConnectionPool

from core.apikeys import ApiKey, find_key, plausible_key
from core.settings import Settings
from engines.pg_search import PostgresEngine
from search_api.cache import AnswerCache, LocalStore, RedisStore, Store, listen_for_changes
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
    cache: AnswerCache | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, settings: Settings, database_url: str, primary: Any = None) -> AppState:
        from core.database import open_pool

        pool = open_pool(database_url, settings)
        postgres = PostgresEngine(
            pool,
            observe=observe_engine_query("postgres", settings.slow_query_ms),
            search_timeout_ms=settings.search_timeout_ms,
        )
        postgres.words.load()
        router = Router.from_settings(
            settings, postgres, primary, read_state=pool_state_reader(pool) if primary else None
        )
        if primary is not None:
            # The same typo and prefix expansions as PostgreSQL (see engines.meili).
            primary.expand = postgres.words.expand_terms
            # The primary serves once its settings are verified; it re-checks them itself.
            primary.verify_in_background(force=True)
        state = cls(settings=settings, pool=pool, postgres=postgres, router=router)
        if settings.cache_enabled:
            state.cache = open_cache(settings)
            listen_for_changes(database_url, state.cache, state.stop)
        return state

    def close(self) -> None:
        self.stop.set()
        self.router.close()
        self.pool.close()


def open_cache(settings: Settings) -> AnswerCache:
    store: Store = (
        RedisStore(settings.redis_url)
        if settings.redis_url
        else LocalStore(settings.cache_max_entries)
    )
    ttl = {
        "search": settings.cache_search_ttl_s,
        "lookup": settings.cache_search_ttl_s,
        "patient": settings.cache_patient_ttl_s,
    }
    return AnswerCache(store, ttl_s=ttl)


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
    if not plausible_key(x_api_key):  # refused before the cache or the database sees it
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
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
