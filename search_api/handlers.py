"""Threads for a route's blocking work: a search, a lookup, a FHIR read, a key read on a miss.

A route is `async`, so that what needs no database (routing, access, a kept answer)
stays on the event loop; what blocks runs on one of these threads, `await
handlers.run(func, *args)`. They are the process's own executor rather than anyio's
`to_thread` (Starlette's `run_in_threadpool`): anyio enters a checkpoint, a capacity
limiter and a cancel scope for every call. 50 concurrent calls of a 10 us function
under uvloop cost 76-88 us of CPU a call through anyio, 21-27 here (issue 11,
twenty-third pass): the difference was a fifteenth of a phone search's API time. The
waiting is the executor's queue, first come first served, as anyio's limiter was.

A call that has started runs to its end, as anyio's shielded one did: a request
cancelled meanwhile (the server stopping) waits for its thread before it unwinds, so
that whatever the call does with a pooled connection or the audit trail is done by
then. A call still queued is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

from core.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")


def handler_threads(settings: Settings) -> int:
    """Threads for route handlers: one per pooled connection. A thread more only waits
    for a connection while it contends for the GIL, and the GIL is not handed over in
    order: under 50 clients the waiting requests took turns unevenly, and exact searches
    finished in 250-400 ms now and then (p99, 8 threads per worker). With one thread per
    connection the waiting is a queue, first come first served: p99 40-75 ms and about
    a tenth more searches a second (issue 11, thirteenth pass)."""
    return settings.pool_size


class HandlerThreads:
    """The process's handler threads (see the module's docstring)."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="handler")

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`func(*args, **kwargs)` on a handler thread, in a copy of the caller's context
        (the request's log fields), to its end once it has started."""
        call = partial(func, *args, **kwargs)
        started = self._pool.submit(contextvars.copy_context().run, call)
        answer = asyncio.wrap_future(started)
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            if not started.cancel():  # it runs, or has run: let it end, then unwind
                await asyncio.wait([answer])
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
