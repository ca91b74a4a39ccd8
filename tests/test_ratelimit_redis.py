"""The same token buckets in a real Redis (optional shared state, PATIENT_SEARCH_REDIS_URL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from core.settings import Settings
from search_api.ratelimit import Policy, RateLimiter, RedisBuckets

redis = pytest.importorskip("redis")


def test_redis_buckets_match_the_postgres_ones(redis_url: str) -> None:
    buckets = RedisBuckets(redis_url)
    key, user = Policy("key", 10, 0.01), Policy("user", 2, 0.01)
    decisions = [buckets.take(["k:1", "u:1:a"], [key, user]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, False, False]
    assert decisions[2].headers()["RateLimit"].startswith('"user";r=0;')
    assert int(decisions[2].headers()["Retry-After"]) >= 1
    other = buckets.take(["k:1", "u:1:b"], [key, user])
    assert other.allowed and other.remaining[0] == pytest.approx(7, abs=0.1)
    with ThreadPoolExecutor(8) as ex:
        burst = Policy("key", 20, 0.01)
        allowed = list(ex.map(lambda _: buckets.take(["k:conc"], [burst]).allowed, range(60)))
    assert sum(allowed) == 20


def test_limiter_uses_redis_when_configured(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, rate_limit_key_burst=3, rate_limit_key_per_s=0.01)
    limiter = RateLimiter.from_settings(settings, pool=None)  # type: ignore[arg-type]
    assert isinstance(limiter.buckets, RedisBuckets)
    assert [limiter.check(42, None, strict=False).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


def test_leases_from_redis_hold_the_limit_across_processes(redis_url: str) -> None:
    """Two limiters (two processes) lease from one Redis bucket of forty: a tenth of the
    burst at a time, at most half of what is left, every token spent once."""
    settings = Settings(redis_url=redis_url, rate_limit_key_burst=40, rate_limit_key_per_s=0.01)
    first, second = (RateLimiter.from_settings(settings, pool=None) for _ in range(2))  # type: ignore[arg-type]
    decisions = [(first if i % 2 else second).check(43, None, strict=False) for i in range(50)]
    assert [d.allowed for d in decisions] == [True] * 40 + [False] * 10
    granted = redis.Redis.from_url(redis_url).hget("patient_search:rl:k:43", "tokens")
    assert granted is not None and float(granted) < 1
