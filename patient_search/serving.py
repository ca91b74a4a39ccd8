"""`serve`'s worker processes, each accepting connections on a socket of its own.

uvicorn binds one listening socket and every worker accepts from it. The worker that
wakes first takes every connection waiting, and keep-alive keeps them there: 50 clients
connecting together landed 50/0 or 49/1 on two workers in about a third of the runs
measured, and such a run answered a third fewer exact searches a second (issue 11).
Here each worker gets its own socket bound to the same port with SO_REUSEPORT, and the
kernel spreads new connections across the sockets by their addresses.

The kernel's spread is by hash, so 50 clients still land 18/32 as often as 25/25;
each worker gets a slot of a shared table too, and evens the connections out
(search_api.spread).

A worker uvicorn starts again (after a crash, or on SIGHUP) listens on every socket:
it serves all connections as before, only without the even spread.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from search_api import spread

log = logging.getLogger(__name__)


def run(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """uvicorn.run, with a listening socket per worker where the system can share a port."""
    if workers < 2 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return
    config = uvicorn.Config(app, host=host, port=port, workers=workers, **options)
    sockets = listening_sockets(host, port, workers)
    log.info(
        "serving",
        extra={"host": host, "port": sockets[0].getsockname()[1], "workers": workers},
    )
    try:
        SocketPerWorker(config, sockets).run()
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets bound to host:port with SO_REUSEPORT (port 0: one free port for all).

    Refused, as uvicorn refuses, when anything already listens there: sockets that all
    set SO_REUSEPORT would otherwise share the port with another `serve` silently.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))  # fails if a socket listens there, reuse-port or not
            port = probe.getsockname()[1]
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


class SocketPerWorker(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, signals) with worker i on socket i
    and slot i of the workers' table (search_api.spread)."""

    def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="patient-search-") as folder:
            loads = Path(folder) / "worker-loads"
            spread.loads_file(loads, len(self.sockets))
            os.environ[spread.LOADS_ENV] = str(loads)
            try:
                super().run()
            finally:
                os.environ.pop(spread.LOADS_ENV, None)

    def init_processes(self) -> None:
        for slot, sock in enumerate(self.sockets):
            os.environ[spread.SLOT_ENV] = str(slot)  # read by the worker as it starts
            try:
                process = Process(self.config, [sock])
                process.start()
            finally:
                os.environ.pop(spread.SLOT_ENV, None)
            self.processes.append(process)
