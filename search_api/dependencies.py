"""What the routes depend on: the per-process state (FastAPI dependency `State`).

A route declares `state: State`; a patient-data route also declares its access with
`search_api.access.require` (API key, scope, staff user, rate limit and the audit
record), e.g. `access: Annotated[Access, Depends(require("read"))]`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from core.listener import Listener
from core.settings import Settings
from engines.pg_search import PostgresEngine
from search_api.access import AccessControl
from search_api.cache import AnswerCache, LocalStore, RedisStore, Store
from search_api.failover import Router, pool_state_reader
from search_api.handlers import HandlerThreads, handler_threads
from search_api.metrics import WORDS_COMPLETE
from search_api.service import observe_engine_query

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """Opened once per process by the app's lifespan; closed when it ends."""

    settings: Settings
    pool: ConnectionPool
    postgres: PostgresEngine
    router: Router
    access: AccessControl
    listener: Listener
    handlers: HandlerThreads
    cache: AnswerCache | None = None

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
        access = AccessControl.start(settings, database_url, pool)
        # One connection hears what every copy this process keeps must drop or reload.
        listener = Listener(database_url).add(access.keys).add(postgres.words)
        cache = open_cache(settings) if settings.cache_enabled else None
        if cache is not None:
            listener.add(cache)
        listener.start()
        WORDS_COMPLETE.set_function(lambda: float(postgres.words.complete))
        return cls(
            settings=settings,
            pool=pool,
            postgres=postgres,
            router=router,
            access=access,
            listener=listener,
            handlers=HandlerThreads(handler_threads(settings)),
            cache=cache,
        )

    def close(self) -> None:
        self.handlers.close()  # the calls under way end first: they use all that follows
        self.listener.close()
        self.access.close()  # writes every queued audit record first (SIGTERM included)
        self.router.close()
        self.pool.close()


def open_cache(settings: Settings) -> AnswerCache:
    ttl = {
        "search": settings.cache_search_ttl_s,
        "lookup": settings.cache_search_ttl_s,  # found answers only: every miss is counted
        "patient": settings.cache_patient_ttl_s,
    }
    forget_after_s = 2 * max(ttl.values()) + 60  # a generation outlives its entries
    store: Store = (
        RedisStore(settings.redis_url, forget_after_s=forget_after_s)
        if settings.redis_url
        else LocalStore(settings.cache_max_entries, forget_after_s=forget_after_s)
    )
    return AnswerCache(store, ttl_s=ttl)


async def app_state(request: Request) -> AppState:
    """Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a hop
    per request for an attribute read."""
    state: AppState = request.app.state.search
    return state


State = Annotated[AppState, Depends(app_state)]
