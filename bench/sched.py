"""How long runnable threads waited for a CPU during a load run (Linux schedstat).

Under load a request can stall although no statement is slow inside PostgreSQL and no
thread holds the interpreter lock long: its backend is runnable but not running. The
kernel counts each task's run-queue wait in /proc/<pid>/task/<tid>/schedstat (second
field, nanoseconds), adding a wait when it ends; a difference between two readings
larger than the interval between them is one wait at least that long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Groups = Callable[[], dict[str, Iterable[int]]]


def run_queue_ns(pid: int) -> dict[int, int]:
    """Nanoseconds each thread of `pid` has waited on a run queue, by thread id; empty
    where the kernel does not tell (not Linux, process gone)."""
    waited: dict[int, int] = {}
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return waited
    for task in threads:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        if len(fields) >= 2:
            waited[int(task.name)] = int(fields[1])
    return waited


@dataclass
class RunQueueWatch:
    """Samples the run-queue waits of named groups of processes every `interval_s`
    on a thread; `longest_ms()` gives, per group, the longest wait that ended within
    one interval (a lower bound on the longest single wait)."""

    groups: Groups
    interval_s: float = 0.05
    _longest: dict[str, float] = field(init=False, default_factory=dict)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __enter__(self) -> RunQueueWatch:
        self._thread = threading.Thread(target=self._run, name="run-queue-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def longest_ms(self) -> dict[str, float]:
        return {name: round(ms, 1) for name, ms in self._longest.items()}

    def _read(self, pids: dict[str, Iterable[int]]) -> dict[str, dict[tuple[int, int], int]]:
        return {
            name: {(pid, tid): ns for pid in members for tid, ns in run_queue_ns(pid).items()}
            for name, members in pids.items()
        }

    def _run(self) -> None:
        pids = self.groups()  # the processes are looked up again once a second
        looked_up = time.monotonic()
        before = self._read(pids)
        for name in before:
            self._longest.setdefault(name, 0.0)
        while not self._stop.wait(self.interval_s):
            if time.monotonic() - looked_up > 1.0:
                pids, looked_up = self.groups(), time.monotonic()
            now = self._read(pids)
            for name, threads in now.items():
                earlier = before.get(name, {})
                waits = [ns - earlier[t] for t, ns in threads.items() if t in earlier]
                if waits:
                    self._longest[name] = max(self._longest.get(name, 0.0), max(waits) / 1e6)
            before = now
