"""Indexer benchmark on the logical decoding path: sustained rate and commit-to-searchable lag.

    python -m bench.indexer [--database-url URL] [--smoke] [--backlog N] [--seconds S]

1. Sustained: with the slot in place, a backlog of mixed changes (patient
   inserts and updates, contact inserts) is written, then `run(once=True)`
   drains it; changes/s = changes / drain time.
2. Lag: `python -m indexer` runs as a subprocess while a writer process inserts
   one patient per transaction at a fixed rate (200/s, 1,000/s). A poller sees
   each id appear in patient_search.patients (5 ms polls over the primary key);
   lag = first seen - writer commit time, reported as p50/p95/p99.
Results are printed as a table and written to bench/results/indexer-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from tqdm import tqdm

from core.database import resolve_database_url
from core.schema import create_source_tables, migrate
from core.settings import Settings
from indexer.runner import run

DB = "bench_indexer"
SLOT = "bench_indexer"
RESULTS = Path(__file__).parent / "results"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh_database(server_url: str, db: str = DB, slot_name: str = SLOT) -> str:
    """An empty database `db` on the server, migrated, with no slot left from a last run."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        for (slot,) in admin.execute(
            "select slot_name from pg_replication_slots where database = %s or slot_name = %s",
            (db, slot_name),
        ).fetchall():
            admin.execute("select pg_drop_replication_slot(%s)", (slot,))
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
    url = make_conninfo(server_url, dbname=db)
    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        migrate(conn)
        conn.commit()
    return url


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, slot_name=SLOT, indexer_metrics_port=0)


def write_backlog(url: str, changes: int) -> int:
    """Half patient inserts, a quarter contact inserts, a quarter updates; 100 rows a tx."""
    inserts, contacts = changes // 2, changes // 4
    updates = changes - inserts - contacts
    step = 100
    done = 0
    with (
        psycopg.connect(url, autocommit=True) as conn,
        tqdm(total=changes, desc="backlog", unit="chg", file=sys.stderr) as bar,
    ):
        for statement, total, fixed in (
            (
                "insert into patients (id, clinic_id, given_name, family_name, birth_date) "
                "select 'b' || lpad(g::text, 8, '0'), 'c' || (g %% 5), "
                "(array['Ann','Jon','Maria','José','Li'])[1 + g %% 5], "
                "(array['Smith','Garcia','Nguyen','Müller'])[1 + g %% 4], "
                "date '1950-01-01' + (g %% 20000) from generate_series(%s::int, %s::int) g",
                inserts,
                (),
            ),
            (
                "insert into patient_contacts (id, patient_id, kind, value, use) "
                "select 'k' || g, 'b' || lpad((g %% %s)::text, 8, '0'), 'phone', "
                "'(555) 01' || lpad((g %% 100)::text, 2, '0') || '-' || lpad(g::text, 4, '0'), "
                "'mobile' from generate_series(%s::int, %s::int) g",
                contacts,
                (inserts,),
            ),
            (
                "update patients set given_name = given_name || 'x', updated_at = now() "
                "where id in (select 'b' || lpad((g %% %s)::text, 8, '0') "
                "from generate_series(%s::int, %s::int) g)",
                updates,
                (inserts,),
            ),
        ):
            for start in range(0, total, step):
                n = min(step, total - start)
                conn.execute(statement, (*fixed, start, start + n - 1))
                done += n
                bar.update(n)
    return done


def sustained(url: str, changes: int) -> dict[str, Any]:
    settings = settings_for(url)
    run(settings, once=True)  # publication + slot (initial sync of an empty source)
    written = write_backlog(url, changes)
    _say(f"draining {written} changes through logical decoding ...")
    started = time.perf_counter()
    run(settings, once=True)
    seconds = time.perf_counter() - started
    return {"changes": written, "seconds": round(seconds, 3), "rate": round(written / seconds)}


def _writer(url: str, rate: int, seconds: float, prefix: str, out: Any) -> None:
    """Separate process: one patient insert per transaction, paced to `rate`."""
    commits: list[tuple[str, float]] = []
    total = int(rate * seconds)
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pid = f"{prefix}{i:07d}"
            conn.execute(
                "insert into patients (id, clinic_id, given_name) values (%s, 'lag', 'Ann')",
                (pid,),
            )
            commits.append((pid, time.time()))
    out.put(commits)


def lag_at(url: str, rate: int, seconds: float) -> dict[str, Any]:
    prefix = f"lag{rate}-"
    env = {
        **os.environ,
        "PATIENT_SEARCH_DATABASE_URL": url,
        "PATIENT_SEARCH_SLOT_NAME": SLOT,
        "PATIENT_SEARCH_INDEXER_METRICS_PORT": "0",
    }
    indexer = subprocess.Popen([sys.executable, "-m", "indexer"], env=env)
    seen: dict[str, float] = {}
    try:
        time.sleep(2.0)  # indexer connected and idle
        queue: Any = mp.get_context("spawn").Queue()
        writer = mp.get_context("spawn").Process(
            target=_writer, args=(url, rate, seconds, prefix, queue)
        )
        writer.start()
        total = int(rate * seconds)
        last = prefix
        deadline = time.monotonic() + seconds + 30
        with (
            psycopg.connect(url, autocommit=True) as conn,
            tqdm(total=total, desc=f"lag @ {rate}/s", unit="chg", file=sys.stderr) as bar,
        ):
            while len(seen) < total and time.monotonic() < deadline:
                rows = conn.execute(
                    "select id from patient_search.patients where id > %s and id < %s order by id",
                    (last, prefix + "~"),
                ).fetchall()
                now = time.time()
                for (pid,) in rows:
                    seen.setdefault(pid, now)
                if rows:
                    last = rows[-1][0]
                    bar.update(len(rows))
                time.sleep(0.005)
        commits = queue.get(timeout=60)
        writer.join(30)
    finally:
        indexer.send_signal(signal.SIGTERM)
        indexer.wait(30)
    lags = sorted((seen[pid] - ts) * 1000 for pid, ts in commits if pid in seen)
    missing = len(commits) - len(lags)
    q = statistics.quantiles(lags, n=100, method="inclusive") if len(lags) > 1 else [0.0] * 99
    return {
        "rate": rate,
        "seconds": seconds,
        "changes": len(commits),
        "not_seen": missing,
        "p50_ms": round(q[49], 1),
        "p95_ms": round(q[94], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lags[-1], 1) if lags else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.indexer", description=__doc__)
    parser.add_argument("--database-url", help="server to use (default: settings / embedded)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--backlog", type=int, default=60_000, help="changes for the drain")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each lag run")
    parser.add_argument("--rates", default="200,1000", help="writer rates for the lag runs")
    args = parser.parse_args(argv)
    backlog, seconds = (2_000, 2.0) if args.smoke else (args.backlog, args.seconds)
    settings = Settings()
    server = args.database_url or resolve_database_url(settings)
    _say("preparing database ...")
    url = fresh_database(server)
    results: dict[str, Any] = {"sustained": sustained(url, backlog), "lag": []}
    for rate in [int(r) for r in args.rates.split(",") if r.strip()]:
        results["lag"].append(lag_at(url, rate, seconds))
    results["smoke"] = args.smoke
    results["at"] = time.strftime("%Y-%m-%dT%H:%M:%S")

    s = results["sustained"]
    print(f"\nsustained: {s['changes']} changes in {s['seconds']} s = {s['rate']} changes/s")
    print(f"{'rate/s':>8} {'changes':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for row in results["lag"]:
        print(
            f"{row['rate']:>8} {row['changes']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8} "
            f"{row['p99_ms']:>8} {row['max_ms']!s:>8}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"indexer-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute("select pg_drop_replication_slot(%s)", (SLOT,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
