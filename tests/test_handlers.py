"""The handler threads that run a route's blocking work (search_api.handlers)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from search_api.handlers import HandlerThreads

REQUEST = contextvars.ContextVar("request", default="none")


@pytest.fixture
def threads() -> Iterator[HandlerThreads]:
    pool = HandlerThreads(1)
    yield pool
    pool.close()


def test_a_call_runs_on_a_handler_thread_in_the_caller_s_context(threads: HandlerThreads) -> None:
    def where(suffix: str, *, upper: bool) -> tuple[str, str]:
        name = threading.current_thread().name
        value = REQUEST.get() + suffix
        return name, value.upper() if upper else value

    async def main() -> tuple[str, str]:
        REQUEST.set("r1")
        return await threads.run(where, "-x", upper=True)

    name, value = asyncio.run(main())
    assert name.startswith("handler") and name != threading.current_thread().name
    assert value == "R1-X"


def test_an_error_in_the_call_reaches_the_caller(threads: HandlerThreads) -> None:
    def fail() -> None:
        raise LookupError("no such key")

    with pytest.raises(LookupError, match="no such key"):
        asyncio.run(threads.run(fail))


def test_a_cancelled_request_waits_for_its_call_to_end(threads: HandlerThreads) -> None:
    """What the call does with a connection or the audit trail is done before the request
    unwinds, as anyio's shielded calls were."""
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(5)
        ended.set()

    async def main() -> bool:
        task = asyncio.create_task(threads.run(work))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        unwound_early = task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return unwound_early

    assert asyncio.run(main()) is False
    assert ended.is_set()


def test_a_call_still_queued_when_its_request_is_cancelled_never_runs(
    threads: HandlerThreads,
) -> None:
    busy, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold() -> None:
        busy.set()
        release.wait(5)

    async def main() -> None:
        first = asyncio.create_task(threads.run(hold))
        await asyncio.to_thread(busy.wait, 5)
        queued = asyncio.create_task(threads.run(ran.append, "queued"))
        await asyncio.sleep(0.05)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        await first
        await threads.run(ran.append, "after")

    asyncio.run(main())
    assert ran == ["after"]
