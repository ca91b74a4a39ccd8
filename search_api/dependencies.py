"""What the routes depend on: the per-process state (FastAPI dependency `State`).

A route declares `state: State`; a patient-data route also declares its access with
`search_api.access.require` (API key, scope, staff user, rate limit and the audit
record), e.g. `access: Annotated[Access, Depends(require("read"))]`.
"""

from __future__ import annotations

import logging
import threading
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
            _verify_in_background(primary)
        access = AccessControl.start(settings, database_url, pool)
        return cls(settings=settings, pool=pool, postgres=postgres, router=router, access=access)

    def close(self) -> None:
        self.access.close()  # writes every queued audit record first (SIGTERM included)
        self.router.close()
        self.pool.close()


def _verify_in_background(primary: Any) -> None:
    """The primary serves only once its index settings are verified; never block start-up."""

    def verify() -> None:
        try:
            primary.verify_settings()
        except Exception as exc:
            log.warning("primary engine not verifiable yet", extra={"error": type(exc).__name__})

    threading.Thread(target=verify, name="primary-verify", daemon=True).start()


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.search
    return state


State = Annotated[AppState, Depends(app_state)]
