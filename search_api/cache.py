"""Answer cache: search results for a few seconds, patient reads for longer, dropped the
moment the indexer changes what they show.

- Keys are a SHA-256 of (kind, the caller's clinics, the generations the answer depends
  on, the canonical request): no query text is kept as a key. Values are the serialized
  answers.
- Invalidation is pushed, not polled: the indexer's projection writes notify in their
  transaction (delivered on commit, engines.pg_projection), and each API process hears
  them through its listener (core.listener). A search answer depends on its clinics'
  generations, bumped by any change in the clinic; a patient read on that patient's
  generation alone, so the day's churn elsewhere in the clinic leaves it cached. An
  entry stored under an older generation is a miss. While the listener is not
  connected nothing is served from the cache (it could be stale).
- A bump gives a name a value never used before (one counter per store), so a name can
  be forgotten once every entry stored under it has expired: memory stays bounded
  however many patients change in a day.
- In process by default; shared between processes and replicas through Redis when
  `PATIENT_SEARCH_REDIS_URL` is set (the generations then live in Redis too).
- Hits and misses per kind are counted in /metrics and at GET /cache.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from engines.pg_projection import ALL_CLINICS, CHANNEL, PATIENTS_CHANNEL
from search_api.ratelimit import LOCKOUTS_CHANNEL

log = logging.getLogger(__name__)


HITS = Counter("patient_search_cache_hits_total", "Answers served from the cache", ["kind"])
MISSES = Counter("patient_search_cache_misses_total", "Answers not in the cache", ["kind"])


# The generation names a patient read depends on: that patient, and every patient at once
# (a clinic rebuilt, an id too long to be named).
EVERY_PATIENT = "patients:*"


def patient_generation(patient_id: str) -> str:
    return f"patient:{patient_id}"


def patient_generations(patient_id: str) -> tuple[str, ...]:
    return (EVERY_PATIENT, patient_generation(patient_id))


def key_lockouts(key_id: int | str) -> str:
    return f"lockouts:{key_id}"


def lookup_generations(clinics: Sequence[str], key_id: int) -> tuple[str, ...]:
    """A booking lookup's answer hangs on its clinics and on the key's lockouts: a lock
    drops every cached lookup of that key, whichever identifier it locked."""
    return (*sorted(set(clinics)), key_lockouts(key_id))


class Store(Protocol):
    """Where entries and generations live (this process, or Redis). A generation is
    named by a clinic or a patient; ALL_CLINICS's is part of every key. `blocking`: its
    calls wait on the network (kept off the event loop)."""

    blocking: bool

    def generations(self, names: Sequence[str]) -> tuple[int, ...]: ...

    def bump(self, names: Sequence[str]) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def clear(self) -> None: ...


class LocalStore:
    """A bounded LRU with per-entry expiry, in this process."""

    blocking = False

    def __init__(self, max_entries: int = 20_000, *, forget_after_s: float = 600.0) -> None:
        self.max_entries = max_entries
        self.forget_after_s = forget_after_s  # longer than any entry lives
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        # name -> (generation, when bumped), oldest bump first
        self._generations: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def generations(self, names: Sequence[str]) -> tuple[int, ...]:
        known = self._generations
        return tuple(known.get(n, (0, 0.0))[0] for n in (ALL_CLINICS, *names))

    def bump(self, names: Sequence[str]) -> None:
        now = time.monotonic()
        with self._lock:
            if ALL_CLINICS in names:
                self._entries.clear()
            generation = next(self._counter)
            for name in names:
                self._generations[name] = (generation, now)
                self._generations.move_to_end(name)
            while self._generations:
                name, (_, bumped) = next(iter(self._generations.items()))
                if bumped > now - self.forget_after_s:
                    break
                del self._generations[name]

    def get(self, key: str) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class RedisStore:
    """Shared by every API process and replica: entries and generations expire in Redis."""

    blocking = True

    def __init__(self, url: str, *, forget_after_s: float = 600.0) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.5)
        self.forget_after_ms = int(forget_after_s * 1000)

    def generations(self, names: Sequence[str]) -> tuple[int, ...]:
        values = self.redis.mget([f"ps:gen:{n}" for n in (ALL_CLINICS, *names)])
        return tuple(int(v or 0) for v in values)

    def bump(self, names: Sequence[str]) -> None:
        generation = self.redis.incr("ps:generation")
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(f"ps:gen:{name}", generation, px=self.forget_after_ms)
            pipe.execute()

    def get(self, key: str) -> bytes | None:
        value = self.redis.get(f"ps:v:{key}")
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.redis.set(f"ps:v:{key}", value, px=max(1, int(ttl_s * 1000)))

    def clear(self) -> None:
        self.bump([ALL_CLINICS])


class AnswerCache:
    channels = (CHANNEL, PATIENTS_CHANNEL, LOCKOUTS_CHANNEL)

    def __init__(self, store: Store, *, ttl_s: dict[str, float]) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.live = False  # true while the invalidation listener is connected
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    def key(
        self, kind: str, clinics: Sequence[str], request: Any, depends_on: Sequence[str]
    ) -> str:
        """The generations of what the answer depends on are part of the key: a change
        makes older entries unreachable."""
        clinics = sorted(set(clinics))
        generations = self.store.generations(depends_on)
        material = json.dumps([kind, clinics, generations, request], sort_keys=True, default=str)
        return hashlib.sha256(material.encode()).hexdigest()

    def slot(
        self,
        kind: str,
        clinics: Sequence[str],
        request: Any,
        depends_on: Sequence[str] | None = None,
    ) -> CacheSlot:
        """`depends_on` names the generations the answer hangs on (by default the
        caller's clinics). A shared store that fails (Redis away) makes a miss that
        stores nothing, never a failed request."""
        try:
            names = sorted(set(clinics)) if depends_on is None else depends_on
            key = self.key(kind, clinics, request, names)
            return CacheSlot(self, key, self.get(kind, key))
        except Exception as exc:
            log.warning("answer cache unavailable", extra={"error": type(exc).__name__})
            return CacheSlot(None, "", None)

    def get(self, kind: str, key: str) -> bytes | None:
        value = self.store.get(key) if self.live else None
        counts, metric = (self.hits, HITS) if value is not None else (self.misses, MISSES)
        counts[kind] = counts.get(kind, 0) + 1
        metric.labels(kind=kind).inc()
        return value

    def put(self, kind: str, key: str, value: bytes) -> None:
        if self.live:
            self.store.put(key, value, self.ttl_s[kind])

    def invalidate(self, names: Sequence[str]) -> None:
        """A shared store that is away misses the bump; its entries expire by their time."""
        try:
            self.store.bump(names)
        except Exception as exc:
            log.warning("answer cache unavailable", extra={"error": type(exc).__name__})

    def forget_everything(self) -> None:
        self.invalidate([ALL_CLINICS])

    def heard(self, channel: str, payload: str) -> None:
        """A change the indexer announced (engines.pg_projection.notify_changed)."""
        self.invalidate(changed_names(channel, payload))

    def follow(self, live: bool) -> None:
        """The listener (core.listener) is up or lost. Down, nothing is served from the
        cache; up again, everything is forgotten (changes may have gone unheard)."""
        if live:
            self.forget_everything()
        self.live = live

    def stats(self) -> dict[str, Any]:
        kinds = sorted(set(self.hits) | set(self.misses))
        per_kind = {}
        for kind in kinds:
            hits, misses = self.hits.get(kind, 0), self.misses.get(kind, 0)
            per_kind[kind] = {
                "hits": hits,
                "misses": misses,
                "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
            }
        return {
            "enabled": True,
            "process": os.getpid(),  # each API worker counts its own
            "live": self.live,
            "store": type(self.store).__name__,
            "ttl_s": self.ttl_s,
            "kinds": per_kind,
        }


@dataclass(frozen=True)
class CacheSlot:
    """One request's place in the cache: its key and what was found there."""

    cache: AnswerCache | None
    key: str
    hit: bytes | None

    def put(self, kind: str, answer: str | bytes) -> None:
        if self.cache is not None:
            value = answer.encode() if isinstance(answer, str) else answer
            try:
                self.cache.put(kind, self.key, value)
            except Exception as exc:
                log.warning("answer cache unavailable", extra={"error": type(exc).__name__})


def changed_names(channel: str, payload: str) -> list[str]:
    """The generations a notification bumps: a clinic (or ALL_CLINICS) on CHANNEL; on
    PATIENTS_CHANNEL each patient named, or every patient; on LOCKOUTS_CHANNEL the key's
    lookups. A payload that cannot be read drops everything rather than risk a stale
    answer."""
    if channel == CHANNEL:
        return [payload or ALL_CLINICS]
    if channel == LOCKOUTS_CHANNEL:
        return [key_lockouts(payload)] if payload.isdigit() else [ALL_CLINICS]
    try:
        ids = json.loads(payload)
    except ValueError:
        return [ALL_CLINICS]
    if ids == "*":
        return [EVERY_PATIENT]
    if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
        return [patient_generation(i) for i in ids]
    return [ALL_CLINICS]
