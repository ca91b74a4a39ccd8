"""Rate limits and the booking-lookup lockout, shared by every worker of a `serve`.

Token buckets live in PostgreSQL (patient_search.rate_buckets, drawn from by
patient_search.take_tokens) or, when PATIENT_SEARCH_REDIS_URL is set, in Redis
(a Lua script); either way all workers and all API processes draw from the
same buckets. Each request takes one token from the key's bucket and, with
X-Staff-User, from the (key, user) bucket; lookup and FHIR $match draw from
stricter buckets of their own.

A process draws a small lease ahead (a tenth of a bucket's burst, never more
than half of what the bucket holds) and spends it locally for up to a second: under load a
request then costs no round trip, where one per request on the key's one row
was a fifth of an exact lookup's time (issue 11). A lease in use does not lapse
under its requests: spending it in its last quarter second gives it another second,
and the next lease is drawn in the background when a quarter of its tokens is left.
Each lapse had sent the requests of that moment (about one in ten at 500
searches a second) through a handler thread to the shared store, to queue a second
time for a thread to search on. The limit still holds across processes, since every
token spent was first taken from the shared bucket; the price is that a process
holds up to a lease and a quarter per bucket while it is in use, that what is left
of it lapses unspent a second after its last request, and that a request may be
refused while another process still holds a few tokens.

Answers carry the IETF draft's headers (draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Policy: "key";q=2000;w=2, "user";q=30;w=6` and
`RateLimit: "user";r=12;t=3` for the bucket closest to empty.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from core.settings import Settings
from engines.pg_search import NEVER

LEASE_SHARE = 10  # a lease is this share of a bucket's burst (see the module docstring)
LEASE_SECONDS = 1.0  # and is spent within this long, or lapses
RENEW_AT = 0.25  # with this share of a lease's tokens or time left, its use renews it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """A token bucket: `burst` tokens, refilled at `per_s` a second."""

    name: str
    burst: int
    per_s: float

    @property
    def window_s(self) -> int:
        """Seconds to refill from empty: the draft's `w` for a quota of `burst`."""
        return max(1, math.ceil(self.burst / self.per_s))

    @property
    def lease(self) -> int:
        """Tokens a process draws at once: a tenth of the burst (1 for small buckets)."""
        return max(1, self.burst // LEASE_SHARE)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policies: tuple[Policy, ...]
    remaining: tuple[float, ...]
    retry_after_s: float
    granted: tuple[float, ...] = ()  # tokens each bucket gave (leases); 0 when refused

    def headers(self) -> dict[str, str]:
        """RateLimit-Policy for every bucket, RateLimit for the one closest to empty."""
        if not self.policies:
            return {}
        policy = ", ".join(f'"{p.name}";q={p.burst};w={p.window_s}' for p in self.policies)
        i = min(range(len(self.policies)), key=lambda j: self.remaining[j] / self.policies[j].burst)
        p, left = self.policies[i], max(0.0, self.remaining[i])
        # Seconds until this bucket is full again (or, when refused, until the next token).
        reset = self.retry_after_s if not self.allowed else (p.burst - left) / p.per_s
        out = {
            "RateLimit-Policy": policy,
            "RateLimit": f'"{p.name}";r={math.floor(left)};t={math.ceil(reset)}',
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


ALLOW_ALL = Decision(True, (), (), 0.0)


class Buckets(Protocol):
    def take(
        self, names: Sequence[str], policies: Sequence[Policy], wants: Sequence[int] = ()
    ) -> Decision:
        """All or nothing: at least one token from every bucket, up to `wants` (default 1)."""
        ...


class PostgresBuckets:
    """Buckets in an unlogged table; one round trip, rows locked in name order."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def take(
        self, names: Sequence[str], policies: Sequence[Policy], wants: Sequence[int] = ()
    ) -> Decision:
        order = sorted(range(len(names)), key=lambda i: names[i])
        wants = wants or [1] * len(names)
        with self.pool.connection() as conn:
            row = conn.execute(
                "select allowed, remaining, wait, granted"
                " from patient_search.take_tokens(%s, %s, %s, %s)",
                (
                    [names[i] for i in order],
                    [float(policies[i].burst) for i in order],
                    [policies[i].per_s for i in order],
                    [float(wants[i]) for i in order],
                ),
            ).fetchone()
        assert row is not None
        remaining, granted = [0.0] * len(names), [0.0] * len(names)
        for pos, i in enumerate(order):
            remaining[i], granted[i] = float(row[1][pos]), float(row[3][pos])
        return Decision(
            bool(row[0]), tuple(policies), tuple(remaining), float(row[2]), tuple(granted)
        )


_REDIS_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local have, gave, ok, wait = {}, {}, 1, 0
for i, key in ipairs(KEYS) do
  local cap, rate = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or cap
  local at = tonumber(state[2]) or t
  tokens = math.min(cap, tokens + math.max(0, t - at) * rate)
  have[i] = tokens
  if tokens < 1 then ok = 0; wait = math.max(wait, (1 - tokens) / rate) end
end
for i, key in ipairs(KEYS) do
  local cap, rate = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  gave[i] = 0
  if ok == 1 then gave[i] = math.max(1, math.min(want, math.floor(have[i] / 2))) end
  have[i] = have[i] - gave[i]
  redis.call('HSET', key, 'tokens', tostring(have[i]), 'at', tostring(t))
  redis.call('EXPIRE', key, math.ceil(cap / rate) + 60)
  have[i] = tostring(have[i])
  gave[i] = tostring(gave[i])
end
return {ok, have, tostring(wait), gave}
"""


class RedisBuckets:
    """The same buckets in Redis, for deployments that already run one (optional)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=1.0)
        self.script = self.client.register_script(_REDIS_TAKE)

    def take(
        self, names: Sequence[str], policies: Sequence[Policy], wants: Sequence[int] = ()
    ) -> Decision:
        args: list[Any] = []
        for p, want in zip(policies, wants or [1] * len(names), strict=True):
            args.extend((p.burst, p.per_s, want))
        keys = [f"patient_search:rl:{n}" for n in names]
        ok, have, wait, gave = self.script(keys=keys, args=args)
        return Decision(
            bool(int(ok)),
            tuple(policies),
            tuple(float(h) for h in have),
            float(wait),
            tuple(float(g) for g in gave),
        )


@dataclass
class _Lease:
    tokens: float  # drawn from the shared bucket and not yet spent
    shared: float  # what the shared bucket held after the draw
    until: float  # monotonic time the lease lapses
    drawn: float  # tokens it held when drawn (see `due`)


class Leases:
    """The tokens this process drew ahead, by bucket name.

    One draw at a time leases a bucket: requests that find no lease while it is in
    flight take one token each. When every thread asked for a lease at once (a lease
    lapsing under load), sixteen leases of a tenth each emptied a bucket that was far
    from its limit, and requests were refused.
    """

    def __init__(self) -> None:
        self._held: dict[str, _Lease] = {}
        self._drawing: set[str] = set()
        self._lock = threading.Lock()

    def spend(self, names: Sequence[str]) -> list[float | None]:
        """One token from each bucket that holds a live lease: what remains, or None
        for the buckets the shared store must be asked for."""
        now = time.monotonic()
        out: list[float | None] = []
        with self._lock:
            for name in names:
                lease = self._held.get(name)
                if lease is None or lease.until < now or lease.tokens < 1:
                    out.append(None)
                    continue
                lease.tokens -= 1
                out.append(lease.shared + lease.tokens)
                if lease.until - now <= RENEW_AT * LEASE_SECONDS:
                    lease.until = now + LEASE_SECONDS  # in use: its tokens are not idle
        return out

    def refund(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                lease = self._held.get(name)
                if lease is not None:
                    lease.tokens += 1

    def due(self, names: Sequence[str]) -> list[str]:
        """The live leases of these buckets down to RENEW_AT of their tokens that no draw
        is renewing, claimed for the caller, who must `keep` what it draws."""
        now = time.monotonic()
        out: list[str] = []
        with self._lock:
            for name in names:
                lease = self._held.get(name)
                if lease is None or lease.until < now or name in self._drawing:
                    continue
                if lease.tokens <= RENEW_AT * lease.drawn:
                    self._drawing.add(name)
                    out.append(name)
        return out

    def claim(self, name: str) -> bool:
        """True when this thread may draw a lease for the bucket (no draw in flight);
        it must `keep` afterwards, whatever the draw gave."""
        with self._lock:
            if name in self._drawing:
                return False
            self._drawing.add(name)
            return True

    def keep(self, name: str, tokens: float, shared: float) -> None:
        """Hold what a claimed draw gave beyond the token spent now, with what is left
        of a lease still live."""
        now = time.monotonic()
        with self._lock:
            self._drawing.discard(name)
            if tokens < 1:
                return
            if len(self._held) > 10_000:  # lapsed leases of many users: start over
                self._held.clear()
            lease = self._held.get(name)
            if lease is not None and lease.until >= now:
                tokens += lease.tokens
            self._held[name] = _Lease(tokens, shared, now + LEASE_SECONDS, tokens)


@dataclass(frozen=True)
class RateLimiter:
    """Which buckets a request draws from, by key, staff user and strictness."""

    buckets: Buckets | None
    key: Policy
    user: Policy
    strict_key: Policy
    strict_user: Policy
    leases: Leases = field(default_factory=Leases, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, pool: ConnectionPool) -> RateLimiter:
        buckets: Buckets | None = None
        if settings.rate_limit_enabled:
            buckets = (
                RedisBuckets(settings.redis_url) if settings.redis_url else (PostgresBuckets(pool))
            )
        return cls(
            buckets=buckets,
            key=Policy("key", settings.rate_limit_key_burst, settings.rate_limit_key_per_s),
            user=Policy("user", settings.rate_limit_user_burst, settings.rate_limit_user_per_s),
            strict_key=Policy(
                "strict-key",
                settings.rate_limit_strict_key_burst,
                settings.rate_limit_strict_key_per_s,
            ),
            strict_user=Policy(
                "strict-user",
                settings.rate_limit_strict_user_burst,
                settings.rate_limit_strict_user_per_s,
            ),
        )

    def check(self, key_id: int, staff_user: str | None, *, strict: bool) -> Decision:
        """Spend a token of every bucket the request draws from, leased or shared."""
        if self.buckets is None:
            return ALLOW_ALL
        names, policies, remaining = self._spend(key_id, staff_user, strict)
        if any(r is None for r in remaining):
            return self._draw(names, policies, remaining)
        return _decision(True, policies, remaining)

    def check_leased(self, key_id: int, staff_user: str | None, *, strict: bool) -> Decision | None:
        """The decision when every bucket has a live lease (no I/O), else None: then
        `check` must ask the shared store."""
        if self.buckets is None:
            return ALLOW_ALL
        names, policies, remaining = self._spend(key_id, staff_user, strict)
        if any(r is None for r in remaining):
            self.leases.refund([n for n, r in zip(names, remaining, strict=True) if r is not None])
            return None
        if due := self.leases.due(names):
            renewing = [policies[names.index(name)] for name in due]
            try:
                threading.Thread(target=self._renew, args=(due, renewing), daemon=True).start()
            except RuntimeError:  # no thread to be had: the requests draw once it lapses
                for name in due:
                    self.leases.keep(name, 0.0, 0.0)
        return _decision(True, policies, remaining)

    def _renew(self, names: list[str], policies: list[Policy]) -> None:
        """Draw the next leases of these buckets, added to what is left of the current
        ones (on a thread of its own: no request waits for it)."""
        assert self.buckets is not None
        granted = [0.0] * len(names)
        remaining = [0.0] * len(names)
        try:
            shared = self.buckets.take(names, policies, [p.lease for p in policies])
            if shared.allowed:
                granted, remaining = list(shared.granted), list(shared.remaining)
        except Exception as exc:  # the requests draw for themselves once the lease lapses
            log.warning("rate-limit lease not renewed", extra={"error": type(exc).__name__})
        for name, tokens, left in zip(names, granted, remaining, strict=True):
            self.leases.keep(name, tokens, left)

    def _spend(
        self, key_id: int, staff_user: str | None, strict: bool
    ) -> tuple[list[str], tuple[Policy, ...], list[float | None]]:
        """The request's buckets and a leased token of each that has one (None: none)."""
        names, policies = self._buckets(key_id, staff_user, strict)
        return names, policies, self.leases.spend(names)

    def _draw(
        self, names: list[str], policies: tuple[Policy, ...], remaining: list[float | None]
    ) -> Decision:
        """Ask the shared store for the buckets without a leased token (`remaining` None):
        a lease for each no other thread is drawing, a token for the others."""
        assert self.buckets is not None
        ask = [i for i, r in enumerate(remaining) if r is None]
        leasing = {i for i in ask if self.leases.claim(names[i])}
        try:
            shared = self.buckets.take(
                [names[i] for i in ask],
                [policies[i] for i in ask],
                [policies[i].lease if i in leasing else 1 for i in ask],
            )
        except BaseException:
            for i in leasing:
                self.leases.keep(names[i], 0.0, 0.0)
            raise
        for pos, i in enumerate(ask):
            kept = shared.granted[pos] - 1 if shared.allowed else 0.0
            if i in leasing:
                self.leases.keep(names[i], kept, shared.remaining[pos])
            remaining[i] = shared.remaining[pos] + kept
        if not shared.allowed:
            self.leases.refund([n for i, n in enumerate(names) if i not in ask])
            return _decision(False, policies, remaining, shared.retry_after_s)
        return _decision(True, policies, remaining)

    def _buckets(
        self, key_id: int, staff_user: str | None, strict: bool
    ) -> tuple[list[str], tuple[Policy, ...]]:
        # Bucket names carry a digest of the staff user, never the id itself.
        user = hashlib.sha256(staff_user.encode()).hexdigest()[:24] if staff_user else None
        names, policies = [f"k:{key_id}"], [self.key]
        if user:
            names.append(f"u:{key_id}:{user}")
            policies.append(self.user)
        if strict:
            names.append(f"sk:{key_id}")
            policies.append(self.strict_key)
            if user:
                names.append(f"su:{key_id}:{user}")
                policies.append(self.strict_user)
        return names, tuple(policies)


def _decision(
    allowed: bool, policies: tuple[Policy, ...], remaining: list[float | None], wait: float = 0.0
) -> Decision:
    return Decision(allowed, policies, tuple(r or 0.0 for r in remaining), wait)


# --- booking lookup lockout -------------------------------------------------------------


def identifier_digest(term: str) -> str:
    """Lockout rows hold a digest of the phone or MRN term, never the identifier."""
    return hashlib.sha256(term.encode()).hexdigest()


# A lookup lockout, announced with the key's id: cached lookups of that key are dropped.
LOCKOUTS_CHANNEL = "patient_search_lockouts"


def locked(key_id: int, terms: Sequence[str]) -> sql.Composable:
    """The lockout as a boolean SQL expression: any of these identifiers is locked for this
    key. A booking lookup checks it in its own statement (PostgresEngine.lookup's
    `unless`)."""
    if not terms:
        return NEVER
    return sql.SQL(
        "exists (select 1 from patient_search.lookup_misses"
        " where key_id = {} and ident = any({}::text[]) and locked_until > now())"
    ).format(key_id, [identifier_digest(t) for t in terms])


def record_miss(
    conn: psycopg.Connection[Any], key_id: int, terms: Sequence[str], settings: Settings
) -> bool:
    """Count a miss per identifier; returns True when this miss locked one of them."""
    if not terms:
        return False
    rows = conn.execute(
        """
        insert into patient_search.lookup_misses as m (key_id, ident, first_miss, misses)
        select %(key)s, unnest(%(idents)s::text[]), now(), 1
        on conflict (key_id, ident) do update set
          first_miss = case when m.first_miss < now() - %(window)s * interval '1 second'
                       then now() else m.first_miss end,
          misses = case when m.first_miss < now() - %(window)s * interval '1 second'
                   then 1 else m.misses + 1 end
        returning misses
        """,
        {
            "key": key_id,
            "idents": [identifier_digest(t) for t in terms],
            "window": settings.lookup_lockout_window_s,
        },
    ).fetchall()
    if not any(r[0] >= settings.lookup_lockout_misses for r in rows):
        return False
    # The lock and its announcement commit together (autocommit: one statement): each API
    # process then drops the key's cached lookups (search_api.cache, LOCKOUTS_CHANNEL).
    conn.execute(
        "with locked as (update patient_search.lookup_misses"
        " set locked_until = now() + %s * interval '1 second', misses = 0, first_miss = now()"
        " where key_id = %s and ident = any(%s) and misses >= %s returning 1)"
        " select pg_notify(%s, %s) where exists (select 1 from locked)",
        (
            settings.lookup_lockout_s,
            key_id,
            [identifier_digest(t) for t in terms],
            settings.lookup_lockout_misses,
            LOCKOUTS_CHANNEL,
            str(key_id),
        ),
    )
    return True
