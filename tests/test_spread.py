"""Keep-alive connections evened out across `serve`'s workers (search_api.spread): the
shared table, the surplus each worker works out from it, and `Connection: close`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from search_api import spread
from search_api.spread import Spread, Surplus, WorkerLoads, loads_file, shared_surplus


def _workers(tmp_path: Path, count: int = 2) -> list[Surplus]:
    path = tmp_path / "loads"
    loads_file(path, count)
    return [Surplus(WorkerLoads(path), slot) for slot in range(count)]


def _round(worker: Surplus, clients: list[str], now: float) -> list[str]:
    """One request from each client; the clients told to close."""
    return [c for c in clients if worker.closes(c, now)]


def test_a_worker_over_its_share_closes_its_surplus_and_no_more(tmp_path: Path) -> None:
    """Six clients on one worker, two on the other: once both have published, the first
    closes two (its share is four), the second none; with the two placed again on the
    second worker, nobody closes."""
    busy, quiet = _workers(tmp_path)
    mine, theirs = [f"a{i}" for i in range(6)], ["b0", "b1"]
    assert _round(busy, mine, 100.0) == [] and _round(quiet, theirs, 100.0) == []
    assert _round(quiet, theirs, 100.06) == []  # it has two, the other's first count one
    closed = _round(busy, mine, 100.07)
    assert closed == ["a0", "a1"]
    theirs += ["b2", "b3"]  # the two came back on new connections, to the quiet worker
    assert _round(quiet, theirs, 100.13) == [] and _round(quiet, theirs, 100.19) == []
    staying = [c for c in mine if c not in closed]
    assert _round(busy, staying, 100.2) == [] and _round(busy, staying, 100.26) == []


def test_a_worker_alone_or_beside_a_gone_one_closes_nothing(tmp_path: Path) -> None:
    """A slot not published within STALE_SECONDS is a worker gone (or started again
    without a slot): its last count does not make the others close."""
    busy, gone = _workers(tmp_path)
    gone.closes("b0", 50.0)  # published once, long ago
    clients = [f"a{i}" for i in range(10)]
    for step in range(5):
        assert _round(busy, clients, 100.0 + step * spread.CHECK_SECONDS) == []


def test_a_client_idle_for_half_a_second_no_longer_counts(tmp_path: Path) -> None:
    busy, quiet = _workers(tmp_path)
    busy_clients = [f"a{i}" for i in range(4)]
    _round(busy, busy_clients, 100.0)
    _round(quiet, ["b0"], 100.0)
    # two of the busy worker's clients went quiet; the other two still ask
    later = 100.0 + spread.ACTIVE_SECONDS + 0.1
    _round(quiet, ["b0", "b1"], later)
    assert _round(busy, busy_clients[:2], later + 0.01) == []  # two against two


def _app(surplus: Surplus) -> Spread:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Spread(Starlette(routes=[Route("/", hello)]), surplus=surplus)


def test_a_surplus_client_is_answered_in_full_then_told_to_close(tmp_path: Path) -> None:
    """Four clients here (three others and the test client), one on the other worker: the
    share is three, so one answer says `Connection: close`, and only one."""
    busy, quiet = _workers(tmp_path)
    now = time.monotonic()
    quiet.closes("b0", now)
    for i in range(3):
        busy.closes(f"other{i}", now)
    busy.next_check = 0.0  # compare on the next request, now that both have published
    with TestClient(_app(busy)) as client:
        first = client.get("/")
        second = client.get("/")
    assert first.status_code == 200 and first.text == "hello"
    assert first.headers["connection"] == "close"
    assert second.status_code == 200 and "connection" not in second.headers


def test_a_worker_without_a_slot_is_not_spread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "loads"
    loads_file(path, 2)
    monkeypatch.delenv(spread.SLOT_ENV, raising=False)
    monkeypatch.setenv(spread.LOADS_ENV, str(path))
    assert shared_surplus() is None  # started again by uvicorn's supervisor
    monkeypatch.setenv(spread.SLOT_ENV, "2")
    assert shared_surplus() is None  # no such slot
    monkeypatch.setenv(spread.SLOT_ENV, "1")
    surplus = shared_surplus()
    assert surplus is not None and surplus.slot == 1 and surplus.loads.slots == 2
    monkeypatch.setenv(spread.LOADS_ENV, str(tmp_path / "gone"))
    assert shared_surplus() is None
