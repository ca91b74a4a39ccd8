"""Shared token buckets, the lookup lockout and the thin-search check on real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from core.settings import Settings
from search_api import ratelimit
from search_api.plan import SearchInput
from search_api.ratelimit import (
    Decision,
    Policy,
    PostgresBuckets,
    RateLimiter,
    record_miss,
)
from search_api.service import plan_for
from search_api.specificity import ClinicSizes, thin_search_reason
from tests.factories import identifiers_locked, insert_patient


@pytest.fixture
def pool(db_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(db_url, min_size=1, max_size=8, open=True) as p:
        yield p


def test_bucket_allows_the_burst_then_refuses_with_headers(pool: ConnectionPool) -> None:
    buckets = PostgresBuckets(pool)
    policy = Policy("key", burst=5, per_s=0.5)
    decisions = [buckets.take(["k:1"], [policy]) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    refused = decisions[-1]
    assert 1.0 < refused.retry_after_s <= 2.0
    headers = refused.headers()
    assert headers["Retry-After"] == "2"
    assert headers["RateLimit-Policy"] == '"key";q=5;w=10'
    assert headers["RateLimit"] == '"key";r=0;t=2'
    assert decisions[0].headers()["RateLimit"].startswith('"key";r=4;')
    assert "Retry-After" not in decisions[0].headers()
    # Another key has a bucket of its own.
    assert buckets.take(["k:2"], [policy]).allowed


def test_the_token_a_request_form_of_migration_50_still_answers(pool: ConnectionPool) -> None:
    """API processes of an older release call take_tokens without `wants`: one token."""
    with pool.connection() as conn:
        answers = [
            conn.execute(
                "select allowed, remaining from patient_search.take_tokens("
                "array['k:old'], array[2.0], array[0.001])"
            ).fetchone()
            for _ in range(3)
        ]
    assert [a[0] for a in answers if a] == [True, True, False]
    assert answers[0] is not None and answers[0][1][0] == pytest.approx(1, abs=0.01)


def test_refused_request_takes_no_token_from_other_buckets(pool: ConnectionPool) -> None:
    buckets = PostgresBuckets(pool)
    key, user = Policy("key", 10, 0.01), Policy("user", 2, 0.01)
    results = [buckets.take(["k:1", "u:1:a"], [key, user]).allowed for _ in range(4)]
    assert results == [True, True, False, False]
    # The key bucket lost only the two tokens actually granted.
    other_user = buckets.take(["k:1", "u:1:b"], [key, user])
    assert other_user.allowed and other_user.remaining[0] == pytest.approx(7, abs=0.1)


def test_buckets_hold_under_concurrency(pool: ConnectionPool) -> None:
    buckets = PostgresBuckets(pool)
    policy = Policy("key", burst=20, per_s=0.01)
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: buckets.take(["k:9"], [policy]).allowed, range(60)))
    assert sum(results) == 20


def test_limiter_buckets_by_key_user_and_strictness(pool: ConnectionPool) -> None:
    settings = Settings(
        rate_limit_key_burst=100,
        rate_limit_user_burst=3,
        rate_limit_strict_key_burst=100,
        rate_limit_strict_user_burst=1,
        rate_limit_user_per_s=0.01,
        rate_limit_strict_user_per_s=0.01,
    )
    limiter = RateLimiter.from_settings(settings, pool)
    assert [limiter.check(1, "ann", strict=False).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert limiter.check(1, "bob", strict=False).allowed  # another user of the same key
    lookups = [limiter.check(1, "bob", strict=True) for _ in range(2)]
    assert [d.allowed for d in lookups] == [True, False]
    assert '"strict-user";q=1' in lookups[1].headers()["RateLimit-Policy"]
    assert lookups[1].headers()["RateLimit"].startswith('"strict-user";r=0')
    with psycopg.connect(pool.conninfo) as conn:
        names = [r[0] for r in conn.execute("select bucket from patient_search.rate_buckets")]
    assert not any("ann" in n or "bob" in n for n in names)  # digests, not staff ids
    disabled = RateLimiter.from_settings(Settings(rate_limit_enabled=False), pool)
    assert disabled.check(1, "ann", strict=True) == Decision(True, (), (), 0.0)


def _count_draws(*limiters: RateLimiter) -> dict[str, int]:
    """Count the limiters' draws from the shared store (under "n")."""
    draws = {"n": 0}
    for limiter in limiters:
        take = limiter.buckets.take  # type: ignore[union-attr]

        def counted(*args: Any, _take: Any = take) -> Decision:
            draws["n"] += 1
            return _take(*args)

        object.__setattr__(limiter.buckets, "take", counted)
    return draws


def test_leases_spare_round_trips_and_the_limit_holds_across_processes(
    pool: ConnectionPool,
) -> None:
    settings = Settings(rate_limit_key_burst=40, rate_limit_key_per_s=0.01)
    # Two limiters are two API processes drawing from the same shared bucket.
    first, second = (RateLimiter.from_settings(settings, pool) for _ in range(2))
    draws = _count_draws(first, second)

    def check(i: int) -> Decision:
        return (first if i % 2 else second).check(7, None, strict=False)

    allowed = [check(i) for i in range(40)]
    # Leases of 4 (a tenth of the burst) while 8 or more are left, then half of the rest.
    assert all(d.allowed for d in allowed) and draws["n"] == 12
    refused = [check(i) for i in range(20)]
    assert not any(d.allowed for d in refused)  # every token spent once, no more
    assert refused[-1].headers()["RateLimit"].startswith('"key";r=0;')
    # A refused request spends no leased token of its other buckets.
    strict = Settings(
        rate_limit_key_burst=200, rate_limit_strict_key_burst=1, rate_limit_strict_key_per_s=0.01
    )
    limiter = RateLimiter.from_settings(strict, pool)
    assert limiter.check(8, None, strict=True).allowed  # leases 20 of the key's 200
    assert not limiter.check(8, None, strict=True).allowed
    assert limiter.check(8, None, strict=False).remaining == (pytest.approx(198, abs=0.1),)


def test_a_lapsing_lease_under_concurrency_empties_no_bucket(pool: ConnectionPool) -> None:
    """Sixteen threads find no lease at once: one of them draws a lease, the others a
    token each, so the forty tokens serve forty requests, then the bucket refuses."""
    limiter = RateLimiter.from_settings(
        Settings(rate_limit_key_burst=40, rate_limit_key_per_s=0.01), pool
    )
    start = threading.Barrier(16)

    def check(_: int) -> bool:
        start.wait()
        return limiter.check(5, None, strict=False).allowed

    with ThreadPoolExecutor(16) as ex:
        first = list(ex.map(check, range(16)))
    assert all(first)
    rest = [limiter.check(5, None, strict=False).allowed for _ in range(30)]
    assert rest == [True] * 24 + [False] * 6


def test_a_lease_in_use_is_renewed_ahead_and_never_lapses(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests spending a lease never find it lapsed, so none waits on the shared
    store: spent in its last quarter of time it lives on, and with a quarter of its
    tokens left the next one is drawn in the background. Every token spent was still
    taken from the shared bucket first."""
    monkeypatch.setattr(ratelimit, "LEASE_SECONDS", 0.2)
    limiter = RateLimiter.from_settings(
        Settings(rate_limit_key_burst=400, rate_limit_key_per_s=0.01), pool
    )
    assert limiter.check(9, None, strict=False).allowed  # a lease of 40, one spent
    decisions = []
    for _ in range(120):  # three leases' worth of tokens over three lease lifetimes
        decisions.append(limiter.check_leased(9, None, strict=False))
        time.sleep(0.005)
    assert all(d is not None and d.allowed for d in decisions)
    with pool.connection() as conn:
        row = conn.execute(
            "select tokens from patient_search.rate_buckets where bucket = 'k:9'"
        ).fetchone()
    assert row is not None and 400 - row[0] >= 121
    # Unused, it lapses as before: the next request draws from the shared store.
    time.sleep(0.25)
    assert limiter.check_leased(9, None, strict=False) is None


def test_a_lease_spent_near_its_end_lives_on_without_a_draw(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease whose tokens last longer than its time is not drawn again while it is
    spent: each use in its last quarter gives it another lifetime, with no round trip."""
    monkeypatch.setattr(ratelimit, "LEASE_SECONDS", 0.2)
    limiter = RateLimiter.from_settings(
        Settings(rate_limit_key_burst=4000, rate_limit_key_per_s=0.01), pool
    )
    draws = _count_draws(limiter)
    assert limiter.check(10, None, strict=False).allowed  # a lease of 400
    decisions = []
    for _ in range(100):  # half a second: two and a half lifetimes, a quarter of the tokens
        decisions.append(limiter.check_leased(10, None, strict=False))
        time.sleep(0.005)
    assert all(d is not None and d.allowed for d in decisions) and draws["n"] == 1


def test_lookup_lockout_after_five_misses(db_url: str) -> None:
    settings = Settings()
    terms = ["tel:+15550102233"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        locked = [record_miss(conn, 1, terms, settings) for _ in range(5)]
        assert locked == [False] * 4 + [True]
        assert identifiers_locked(conn, 1, terms)
        assert identifiers_locked(conn, 1, ["mrn:77", *terms])
        assert not identifiers_locked(conn, 2, terms)  # per key
        assert not identifiers_locked(conn, 1, ["tel:+15550109999"])
        stored = conn.execute("select ident from patient_search.lookup_misses").fetchall()
        assert all("555" not in r[0] for r in stored)  # a digest, never the phone
        # Misses older than the window start a new count.
        for _ in range(4):
            record_miss(conn, 3, ["mrn:1"], settings)
        conn.execute(
            "update patient_search.lookup_misses set first_miss = now() - interval '16 min'"
        )
        assert not record_miss(conn, 3, ["mrn:1"], settings)
        assert not identifiers_locked(conn, 3, ["mrn:1"])
        # The lock lasts LOOKUP_LOCKOUT_S.
        conn.execute(
            "update patient_search.lookup_misses set locked_until = now() - interval '1 s'"
        )
        assert not identifiers_locked(conn, 1, terms)


@pytest.mark.parametrize(
    ("body", "thin"),
    [
        ({"q": "j"}, "single letter"),
        ({"q": "J."}, "single letter"),
        ({"q": "female"}, "sex alone"),
        ({"q": "m"}, "sex alone"),
        ({"given": "a"}, "single letter"),
        ({"q": "3/14/1985"}, "date of birth alone"),
        ({"birthdate": "1985-03-14"}, "date of birth alone"),
        ({"q": "j 3/14/1985"}, None),
        ({"q": "jo"}, None),
        ({"q": "smith"}, None),
        ({"q": "5550102233"}, None),
        ({"mrn": "7"}, None),
        ({"q": "female smith"}, None),
    ],
)
def test_thin_searches(
    db_url: str, pool: ConnectionPool, body: dict[str, str], thin: str | None
) -> None:
    settings = Settings(thin_search_clinic_size=3)
    with psycopg.connect(db_url) as conn:
        for n in range(5):
            insert_patient(conn, id=f"p{n}", given="Ann", family=f"Lee{n}")
        conn.commit()
    from indexer.reindex import reindex

    reindex(db_url, settings, progress=False)
    request = SearchInput(**body)
    plan = plan_for(request, ["clinic-a"], settings)
    reason = thin_search_reason(request, plan, ["clinic-a"], settings, ClinicSizes(pool))
    if thin is None:
        assert reason is None
    else:
        assert reason is not None and thin in reason


def test_birth_date_alone_is_fine_in_a_small_clinic(pool: ConnectionPool) -> None:
    settings = Settings(thin_search_clinic_size=3)
    request = SearchInput(q="3/14/1985")
    plan = plan_for(request, ["empty-clinic"], settings)
    assert thin_search_reason(request, plan, ["empty-clinic"], settings, ClinicSizes(pool)) is None
