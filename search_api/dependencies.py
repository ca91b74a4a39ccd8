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

from core.settings import Settings
from engines.pg_search import PostgresEngine
from search_api.access import AccessControl
from search_api.failover import Router, pool_state_reader
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
        access = AccessControl.start(settings, database_url, pool)
        return cls(settings=settings, pool=pool, postgres=postgres, router=router, access=access)

    def close(self) -> None:
        self.access.close()  # writes every queued audit record first (SIGTERM included)
        self.router.close()
        self.pool.close()


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.search
    return state


State = Annotated[AppState, Depends(app_state)]
