"""Circuit breaker for the primary engine.

After `failures` consecutive failures the breaker opens and searches skip the
primary entirely (no budget spent waiting on a server known to be down). After
`reset_s` it half-opens: one trial request goes through; success closes it,
failure opens it again for another `reset_s`. Thread-safe: the API serves
searches from a thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 3,
        reset_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be >= 1 and reset_s > 0")
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    def _current(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_s:
            self._state = HALF_OPEN
            self._trial_out = False
        return self._state

    def allow(self) -> bool:
        """May a request go to the primary now? In half-open, only one at a time."""
        with self._lock:
            state = self._current()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial_out:
                self._trial_out = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._consecutive = 0
            self._trial_out = False

    def record_failure(self) -> None:
        with self._lock:
            state = self._current()
            self._consecutive += 1
            if state == HALF_OPEN or self._consecutive >= self.failures:
                self._state = OPEN
                self._opened_at = self._clock()
                self._trial_out = False
