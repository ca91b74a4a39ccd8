"""How long runnable threads waited for a CPU during a load run (Linux schedstat).

Under load a request can stall although no statement is slow inside PostgreSQL and no
thread holds the interpreter lock long: its backend is runnable but not running. The
kernel counts each task's run-queue wait in /proc/<pid>/task/<tid>/schedstat (second
field, nanoseconds), adding a wait when it ends. A difference between two readings
is the time a thread waited within that interval, plus the whole of a wait that began
before it: when it exceeds the interval, one wait lasted at least the excess.

Under Linux's autogroup (kernel.sched_autogroup_enabled=1, processes in the root
cgroup) every PostgreSQL backend is a scheduling group of its own (PostgreSQL starts
each child in a new session); on these 2-core machines such backends waited up to
1.8 s for a CPU, against 63 ms at most with autogroup off (docs/benchmarks.md, issue 11,
twenty-second pass). `autogroup()` says which a run had.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Groups = Callable[[], dict[str, Iterable[int]]]


def autogroup() -> bool | None:
    """Whether the kernel groups processes by session for the CPU (None: not Linux)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def process_title(pid: int) -> str:
    """What a process calls itself (PostgreSQL: "postgres: checkpointer", a backend's
    "postgres: user db [local] idle"), never a query's text; empty once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:60]


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
class Longest:
    """A group's most run-queue time for one thread between two readings, and when."""

    ms: float = 0.0
    interval_ms: float = 0.0  # between the two readings
    title: str = ""  # the process whose thread waited

    @property
    def single_ms(self) -> float:
        """The least that one wait lasted: what the interval cannot hold."""
        return max(0.0, self.ms - self.interval_ms)


@dataclass
class RunQueueWatch:
    """Samples the run-queue waits of named groups of processes every `interval_s`
    on a thread; `longest()` gives, per group, the most time one thread waited between
    two readings, whose thread it was, and how much of it was one wait."""

    groups: Groups
    interval_s: float = 0.05
    _longest: dict[str, Longest] = field(init=False, default_factory=dict)
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

    def longest(self) -> dict[str, Longest]:
        return dict(self._longest)

    def _read(self, pids: dict[str, Iterable[int]]) -> dict[str, dict[tuple[int, int], int]]:
        return {
            name: {(pid, tid): ns for pid in members for tid, ns in run_queue_ns(pid).items()}
            for name, members in pids.items()
        }

    def _run(self) -> None:
        pids = self.groups()  # the processes are looked up again once a second
        looked_up = time.monotonic()
        before, read_at = self._read(pids), time.monotonic()
        for name in before:
            self._longest.setdefault(name, Longest())
        while not self._stop.wait(self.interval_s):
            if time.monotonic() - looked_up > 1.0:
                pids, looked_up = self.groups(), time.monotonic()
            now, now_at = self._read(pids), time.monotonic()
            for name, threads in now.items():
                earlier = before.get(name, {})
                waits = [(ns - earlier[t], t) for t, ns in threads.items() if t in earlier]
                if not waits:
                    continue
                ns, (pid, _) = max(waits)
                if ns / 1e6 > self._longest.setdefault(name, Longest()).ms:
                    interval_ms = (now_at - read_at) * 1000
                    self._longest[name] = Longest(ns / 1e6, interval_ms, process_title(pid))
            before, read_at = now, now_at
