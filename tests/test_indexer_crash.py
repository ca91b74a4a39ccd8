"""kill -9 of `python -m indexer` at random points while thousands of changes stream in."""

from __future__ import annotations

import random
import signal
import threading
import time

import psycopg

from tests.factories import Workload, assert_projection_matches_source
from tests.fixtures import env_for, kill_9_until, make_indexer_settings, start_indexer

CHANGES = 3000


def wait_until_streaming(db_url: str, slot_name: str, timeout_s: float = 60.0) -> None:
    """Until the indexer holds its slot and has written to the projection."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select exists (select from pg_replication_slots where slot_name = %s), "
                "exists (select from patient_search.patients)",
                (slot_name,),
            ).fetchone()
            if row is not None and all(row):
                return
            time.sleep(0.1)
    raise AssertionError("the indexer did not start streaming")


def test_kill_9_during_stream_then_restart_converges(db_url: str) -> None:
    settings = make_indexer_settings(db_url, batch_size=40, indexer_retry_max_s=1.0)
    env = env_for(settings)
    work = Workload(seed=4)
    with psycopg.connect(db_url, autocommit=True) as conn:
        work.apply(conn, 200)  # some history before the slot exists: the initial sync covers it
    done = threading.Event()

    def writer() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            written = 0
            while written < CHANGES:
                per_tx = random.choice([1, 1, 1, 5, 20])
                work.apply(conn, per_tx, per_tx=per_tx)
                written += per_tx
                time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # The first indexer gets going, however slow the machine is to start it.
        kills = kill_9_until(
            done,
            env,
            at_least=4,
            alive_s=(0.4, 1.6),
            seed=7,
            started=lambda: wait_until_streaming(db_url, settings.slot_name),
        )
    finally:
        thread.join(60)
    with psycopg.connect(db_url) as conn:
        slot = conn.execute(
            "select pg_wal_lsn_diff(confirmed_flush_lsn, '0/0') from pg_replication_slots "
            "where slot_name = %s",
            (settings.slot_name,),
        ).fetchone()
        indexed = conn.execute("select count(*) from patient_search.patients").fetchone()
    assert slot is not None and indexed is not None and indexed[0] > 0  # the killed ones worked
    final = start_indexer(env, "--once")
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()[-2000:]
    count = assert_projection_matches_source(db_url)
    assert count > 50 and kills >= 4


def test_sigterm_finishes_batch_and_exits_zero(db_url: str) -> None:
    settings = make_indexer_settings(db_url, batch_size=20)
    proc = start_indexer(env_for(settings))
    with psycopg.connect(db_url, autocommit=True) as conn:
        Workload(seed=9).apply(conn, 500, per_tx=10)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    final = start_indexer(env_for(settings), "--once")
    assert final.wait(60) == 0
    assert_projection_matches_source(db_url)
