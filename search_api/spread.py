"""Even out keep-alive connections across `serve`'s workers.

The kernel hands each new connection to a worker by a hash of its addresses
(patient_search.serving), and keep-alive keeps it there: 50 clients landed 18/32
as often as 25/25, and the busier worker's queue made the slowest hundredth of
answers a third slower and the whole run a tenth slower (issue 11). Each worker
here publishes how many clients it is serving into a small table the workers
share (a file `serve` makes, one slot per worker); a worker serving more than its
share answers one request of each surplus client with `Connection: close`. The
client reconnects, as HTTP lets it, and the kernel places it again.

A client counts while it sent a request within the last half second. Behind a
proxy each forwarded client counts once: the spread is a hint, never a refusal,
and a connection is only ever closed after a complete answer.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import time
from pathlib import Path
from typing import Any

from search_api.edge import ASGIApp, Message, Receive, Scope, Send
from search_api.metrics import CONNECTIONS_SPREAD

# Set by `serve` for its workers (patient_search.serving), not by users.
LOADS_ENV = "PATIENT_SEARCH_WORKER_LOADS"
SLOT_ENV = "PATIENT_SEARCH_WORKER_SLOT"

SLOT = struct.Struct("<dq")  # when published (monotonic seconds), clients served
ACTIVE_SECONDS = 0.5  # a client counts while it sent a request this recently
CHECK_SECONDS = 0.05  # how often a worker publishes and compares
STALE_SECONDS = 1.0  # a slot not published this recently is a worker gone

CLOSE = (b"connection", b"close")


def loads_file(path: Path, workers: int) -> None:
    """The shared table for `workers` workers, every slot empty."""
    path.write_bytes(bytes(SLOT.size * workers))


class WorkerLoads:
    """The workers' table: each writes its own slot and reads all of them."""

    def __init__(self, path: Path) -> None:
        with path.open("r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self.slots = len(self._map) // SLOT.size

    def publish(self, slot: int, now: float, clients: int) -> None:
        SLOT.pack_into(self._map, slot * SLOT.size, now, clients)

    def live(self, now: float) -> list[int]:
        """Clients of each worker that published within STALE_SECONDS."""
        counts = []
        for slot in range(self.slots):
            at, clients = SLOT.unpack_from(self._map, slot * SLOT.size)
            if now - at <= STALE_SECONDS:
                counts.append(clients)
        return counts


class Surplus:
    """One worker's clients, and how many of them it should send elsewhere."""

    def __init__(self, loads: WorkerLoads, slot: int) -> None:
        self.loads = loads
        self.slot = slot
        self.last_seen: dict[Any, float] = {}
        self.surplus = 0
        self.next_check = 0.0

    def closes(self, client: Any, now: float) -> bool:
        """Note a request of `client`; True when its connection should close after it."""
        self.last_seen[client] = now
        if now >= self.next_check:
            self._compare(now)
        if self.surplus <= 0:
            return False
        self.surplus -= 1
        del self.last_seen[client]  # it comes back on a new connection, if here at all
        return True

    def _compare(self, now: float) -> None:
        since = now - ACTIVE_SECONDS
        self.last_seen = {c: t for c, t in self.last_seen.items() if t >= since}
        mine = len(self.last_seen)
        self.loads.publish(self.slot, now, mine)
        counts = self.loads.live(now)
        share = math.ceil(sum(counts) / len(counts)) if counts else mine
        self.surplus = max(mine - share, 0)
        self.next_check = now + CHECK_SECONDS


class Spread:
    """ASGI middleware: `Connection: close` on one answer to each surplus client."""

    def __init__(self, app: ASGIApp, *, surplus: Surplus) -> None:
        self.app = app
        self.surplus = surplus

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if (
            scope["type"] != "http"
            or client is None
            or not self.surplus.closes(tuple(client), time.monotonic())
        ):
            await self.app(scope, receive, send)
            return
        CONNECTIONS_SPREAD.inc()

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), CLOSE]
            await send(message)

        await self.app(scope, receive, send_closing)


def shared_surplus() -> Surplus | None:
    """This worker's Surplus when `serve` gave it a slot of a shared table, else None."""
    path, slot = os.environ.get(LOADS_ENV), os.environ.get(SLOT_ENV)
    if not path or slot is None or not slot.isdigit():
        return None
    try:
        loads = WorkerLoads(Path(path))
    except (OSError, ValueError):
        return None  # the table is gone (serve restarting): serve unspread
    return Surplus(loads, int(slot)) if int(slot) < loads.slots else None
