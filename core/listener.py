"""One LISTEN connection per process, for every copy of database state the process keeps.

The API keeps copies: the key cache, the answer cache, the word dictionary. Their
writers announce changes with NOTIFY in the writing transaction, so a notice arrives
when (and only if) the change commits. A copy is only as current as the connection
that hears those notices, so each follower is told when it comes up (notices may have
been missed while it was down: start again from the database) and when it is lost
(trust the copy less until it is back). One connection serves every follower; a notice
a follower cannot take drops the connection, which tells every follower to start again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


class Follower(Protocol):
    """A copy of database state kept current by notices."""

    @property
    def channels(self) -> Sequence[str]: ...

    def heard(self, channel: str, payload: str) -> None:
        """One notice on one of `channels`, in commit order."""

    def follow(self, live: bool) -> None:
        """The connection is up (True: notices may have been missed, start again) or lost."""


class Listener:
    """A daemon thread holding the LISTEN connection; it reconnects every `retry_s`."""

    def __init__(self, url: str, *, retry_s: float = 1.0, poll_s: float = 0.5) -> None:
        self.url, self.retry_s, self.poll_s = url, retry_s, poll_s
        self._followers: list[Follower] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, follower: Follower) -> Listener:
        """Before `start`."""
        if self._thread is not None:
            raise RuntimeError("a follower added after start()")
        self._followers.append(follower)
        return self

    def start(self) -> Listener:
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def _run(self) -> None:
        channels = sorted({c for f in self._followers for c in f.channels})
        while not self._stop.is_set():
            up = False
            try:
                with psycopg.connect(
                    self.url, autocommit=True, application_name="patient-search-listener"
                ) as conn:
                    for channel in channels:
                        conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
                    up = True
                    self._tell(True)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.poll_s):
                            self._dispatch(note.channel, note.payload)
            except Exception as exc:
                log.warning("listener reconnecting", extra={"error": type(exc).__name__})
            if up:
                self._tell(False)
            self._stop.wait(self.retry_s)

    def _tell(self, live: bool) -> None:
        for follower in self._followers:
            follower.follow(live)

    def _dispatch(self, channel: str, payload: str) -> None:
        for follower in self._followers:
            if channel in follower.channels:
                follower.heard(channel, payload)
