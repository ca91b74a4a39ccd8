"""`serve` with several workers gives each its own listening socket on the port, so the
kernel spreads connections across workers (patient_search.serving); a port already in
use is refused, as uvicorn refuses it."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections import Counter

import httpx
import psutil
import pytest

from patient_search.serving import listening_sockets
from tests.fixtures import serve, stop


def test_sockets_share_one_port() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 3 and len(ports) == 1 and 0 not in ports
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
    finally:
        for s in sockets:
            s.close()


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"cannot listen on 127.0.0.1:{port}"):
            listening_sockets("127.0.0.1", port, 2)


def test_a_second_serve_cannot_share_the_port() -> None:
    """Sockets that all set SO_REUSEPORT would share a port silently: the first serve's
    listening sockets make the second's refused."""
    first = listening_sockets("127.0.0.1", 0, 2)
    try:
        for s in first:
            s.listen()
        port = first[0].getsockname()[1]
        with pytest.raises(SystemExit, match="cannot listen"):
            listening_sockets("127.0.0.1", port, 2)
    finally:
        for s in first:
            s.close()


def test_connections_opened_while_a_worker_is_busy_still_reach_it(db_url: str) -> None:
    """Forty keep-alive connections opened at once, as a client's pool opens them, while
    one worker cannot run (SIGSTOP: busy, or not yet scheduled). On uvicorn's one shared
    socket the running worker accepted all forty and kept them (keep-alive): 50/0 and
    49/1 splits under wrk. With a socket each, the stopped worker's share waits on its
    own socket and is served once it runs: each worker holds some (one holds none with
    probability 2^-39)."""
    proc, base = serve(db_url, workers=2)
    port = int(base.rsplit(":", 1)[1])
    clients = [socket.socket() for _ in range(40)]
    try:
        workers = spawned_workers(proc)
        assert len(workers) == 2
        wait_until_listening(workers, port)
        busy = workers[1]
        busy.suspend()
        try:
            for client in clients:  # a burst: all queued while one worker cannot accept
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
            for client in clients:
                client.setblocking(True)
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            time.sleep(0.5)  # the running worker takes what it can reach
        finally:
            busy.resume()
        for client in clients:
            client.settimeout(30)
            assert client.recv(64).startswith(b"HTTP/1.1 200")
        held = Counter(
            worker.pid
            for worker in workers
            for conn in worker.net_connections("tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
        )
        assert sum(held.values()) == 40
        assert held[busy.pid] > 0, held
        assert len(held) == 2, held
    finally:
        for client in clients:
            client.close()
        stop(proc)


def test_keep_alive_clients_end_up_spread_evenly(db_url: str) -> None:
    """The kernel places connections by a hash of their addresses (40 land 15/25 about
    as often as 20/20); a worker serving more than its share closes a surplus client's
    connection after an answer (search_api.spread), and the client, connecting again,
    is placed again: after a second of requests, once a round of them closes nothing,
    the workers hold 20 each, give or take one."""
    proc, base = serve(db_url, workers=2)
    port = int(base.rsplit(":", 1)[1])
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(40)]
    try:
        workers = spawned_workers(proc)
        wait_until_listening(workers, port)
        started, closed = time.monotonic(), 1
        while closed or time.monotonic() < started + 1:
            assert time.monotonic() < started + 30, "the workers never settled"
            closed = 0
            for client in clients:  # a closed connection is opened again by the request
                client.request("GET", "/healthz")
                answer = client.getresponse()
                answer.read()
                assert answer.status == 200
                closed += answer.getheader("connection") == "close"
        for client in clients:
            client.request("GET", "/healthz")  # every connection open, none closed since
            answer = client.getresponse()
            answer.read()
            assert answer.getheader("connection") is None
        held = Counter(
            worker.pid
            for worker in workers
            for conn in worker.net_connections("tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
        )
        assert sum(held.values()) == 40, held
        assert max(held.values()) - min(held.values()) <= 2 and len(held) == 2, held
    finally:
        for client in clients:
            client.close()
        stop(proc)


def spawned_workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The serve process's live workers (not multiprocessing's resource tracker)."""
    workers = []
    for child in psutil.Process(proc.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:  # a killed worker not yet reaped
            continue
    return workers


def wait_until_listening(workers: list[psutil.Process], port: int) -> None:
    """/healthz answers once the first worker listens; the second may still be starting."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(
            any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in w.net_connections()
            )
            for w in workers
        ):
            return
        time.sleep(0.1)
    raise AssertionError("a worker never listened")


def test_a_killed_worker_is_replaced_and_the_port_still_answers(db_url: str) -> None:
    """uvicorn's supervisor starts a new worker for one that died; it listens on every
    socket (serving.SocketPerWorker), so no connection waits on the dead one's."""
    proc, base = serve(db_url, workers=2)
    try:
        victim = spawned_workers(proc)[0]
        victim.kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = spawned_workers(proc)
            if len(workers) == 2 and victim.pid not in {w.pid for w in workers}:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed worker was not replaced")
        wait_until_listening(workers, int(base.rsplit(":", 1)[1]))
        for _ in range(20):  # new connections each, spread over both sockets
            assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    finally:
        stop(proc)
    assert proc.returncode == 0
