"""Answer-cache hit rate on a front desk's day, with the indexer changing patients throughout.

    python -m bench.cache [--patients 20000] [--seconds 60] [--changes-per-s 20]

1. A census population (bench.population) in a fresh database `bench_cache`, source
   tables exactly as DESIGN.md shows them, reindexed; `python -m indexer` follows it.
2. `patient-search serve` with its defaults (answer cache on, in process), rate limits
   raised as in bench.load so the clients are not throttled.
3. The day: each client repeats a visit: a patient, four times in five from today's
   schedule (`--schedule` patients, Zipf-weighted: some are seen all day) and once in
   five anyone else; half the visits start with a search by name; then the record is
   opened one to three times (check-in, nurse, doctor), with `--think-ms` between
   visits. Meanwhile a writer changes `--changes-per-s` patients (a postal code and
   `updated_at`), half of them on the schedule (check-ins update their record).
4. Prints the hit rate per kind from GET /cache (this run's hits and misses), the
   requests and changes made, and writes JSON. The baseline beside it: the search
   answers, dropped by any change in their clinic, show what clinic-wide
   invalidation gives on the same traffic; the issue asks > 70 % for patient reads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from itertools import accumulate
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.indexer import fresh_database
from bench.load import CLI, RESULTS, SERVE_ENV, _free_port, _serve, _worker_count
from core.apikeys import create_key
from core.database import resolve_database_url
from core.settings import Settings

DB, SLOT = "bench_cache", "bench_cache"


def prepare(server: str, patients: int, clinics: int) -> tuple[str, str]:
    """A fresh database with the population, reindexed; returns (url, key)."""
    from bench import population

    url = fresh_database(server, DB, SLOT)
    with psycopg.connect(url) as conn:
        rows = population.generate(patients, population="census", clinics=clinics, seed=17)
        population.load(conn, rows, patients)
        clinic_ids = [r[0] for r in conn.execute("select distinct clinic_id from patients")]
        key = create_key(conn, sorted(clinic_ids), name="cache benchmark")
        conn.commit()
    env = {**os.environ, "PATIENT_SEARCH_DATABASE_URL": url, "PATIENT_SEARCH_SLOT_NAME": SLOT}
    subprocess.run([CLI, "reindex", "--quiet"], env=env, check=True)
    return url, key


class Day:
    """Who is seen today: a Zipf-weighted schedule and everyone else."""

    def __init__(self, url: str, schedule: int, seed: int) -> None:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "select id, concat_ws(' ', given_name, family_name) from patients "
                "where given_name is not null and family_name is not null order by id"
            ).fetchall()
        rng = random.Random(seed)
        rng.shuffle(rows)
        self.scheduled, self.others = rows[:schedule], rows[schedule:]
        self.weights = list(accumulate(1 / (rank + 1) ** 1.1 for rank in range(schedule)))

    def patient(self, rng: random.Random) -> tuple[str, str]:
        if rng.random() < 0.8:
            return rng.choices(self.scheduled, cum_weights=self.weights)[0]
        return rng.choice(self.others)


def staff(base: str, key: str, day: Day, stop: threading.Event, seed: int, think_s: float) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as client:
        while not stop.is_set():
            patient_id, name = day.patient(rng)
            if rng.random() < 0.5:
                client.post("/v1/patients/search", json={"q": name}).raise_for_status()
            for _ in range(rng.randint(1, 3)):
                client.get(f"/v1/patients/{patient_id}").raise_for_status()
            stop.wait(rng.expovariate(1 / think_s) if think_s > 0 else 0)


def stale_reads(base: str, key: str, url: str, changed: list[str]) -> int:
    """Reads that still show an older postal code once the indexer has caught up: each
    changed patient is read twice (the second read may come from the cache)."""
    with psycopg.connect(url) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(  # the indexer has applied every change (projection = source)
            "select count(*) from patients s join patient_search.patients p using (id) "
            "where s.id = any(%s) and p.doc #>> '{patient,postal_code}' "
            "is distinct from s.postal_code",
            (changed,),
        ).fetchone() != (0,):
            conn.rollback()
            if time.monotonic() > deadline:
                raise RuntimeError("the indexer did not catch up within 30 s")
            time.sleep(0.2)
        source: dict[str, str | None] = dict(
            conn.execute("select id, postal_code from patients where id = any(%s)", (changed,))
        )
    stale = 0
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as client:
        for patient_id in changed:
            for _ in range(2):
                shown = client.get(f"/v1/patients/{patient_id}").json()["patient"]["postal_code"]
                stale += shown != source[patient_id]
    return stale


def writer(
    url: str, day: Day, rate: float, stop: threading.Event, done: list[int], changed: list[str]
) -> None:
    rng = random.Random(3)
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        while not stop.is_set():
            due = start + done[0] / rate
            if (delay := due - time.perf_counter()) > 0:
                stop.wait(delay)
                continue
            pool = day.scheduled if rng.random() < 0.5 else day.others
            patient_id = rng.choice(pool)[0]
            conn.execute(
                "update patients set postal_code = %s, updated_at = now() where id = %s",
                (f"{rng.randrange(100_000):05d}", patient_id),
            )
            changed.append(patient_id)
            done[0] += 1


def cache_counts(base: str, workers: int) -> dict[str, dict[str, int]]:
    """Hits and misses summed over the API's workers: each counts its own, so ask on new
    connections until every worker has answered."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(200):
        stats = httpx.get(base + "/cache", timeout=10).json()
        seen[stats["process"]] = stats["kinds"]
        if len(seen) == workers:
            break
    else:
        raise RuntimeError(f"only {len(seen)} of {workers} API workers answered /cache")
    total: dict[str, dict[str, int]] = {}
    for kinds in seen.values():
        for kind, counts in kinds.items():
            row = total.setdefault(kind, {"hits": 0, "misses": 0})
            row["hits"] += counts["hits"]
            row["misses"] += counts["misses"]
    return total


def run_day(url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PATIENT_SEARCH_DATABASE_URL": url,
        "PATIENT_SEARCH_SLOT_NAME": SLOT,
        "PATIENT_SEARCH_LOG_LEVEL": "ERROR",  # the figures, not the progress lines
    }
    indexer = subprocess.Popen(
        [sys.executable, "-m", "indexer"], env={**env, "PATIENT_SEARCH_INDEXER_METRICS_PORT": "0"}
    )
    cmd = [CLI, "serve", "--port", str(port)]
    cmd += ["--workers", str(args.workers)] if args.workers else []
    api = _serve(cmd, {**SERVE_ENV, **env}, base, "/healthz")
    try:
        while not httpx.get(base + "/cache", timeout=10).json().get("live"):
            time.sleep(0.2)
        day = Day(url, args.schedule, seed=5)
        workers = _worker_count(api.pid)
        before = cache_counts(base, workers)
        stop, changes = threading.Event(), [0]
        changed: list[str] = []
        threads = [
            threading.Thread(target=staff, args=(base, key, day, stop, i, args.think_ms / 1000))
            for i in range(args.clients)
        ]
        threads.append(
            threading.Thread(
                target=writer, args=(url, day, args.changes_per_s, stop, changes, changed)
            )
        )
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(30)
        after = cache_counts(base, workers)
        # The patients changed last, read while their changes reach the cache.
        stale = stale_reads(base, key, url, sorted(set(changed[-50:])))
    finally:
        for proc in (api, indexer):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    kinds = {}
    for kind, counts in after.items():
        hits = counts["hits"] - before.get(kind, {}).get("hits", 0)
        misses = counts["misses"] - before.get(kind, {}).get("misses", 0)
        if hits + misses:
            kinds[kind] = {
                "hits": hits,
                "misses": misses,
                "hit_rate": round(hits / (hits + misses), 3),
            }
    return {"kinds": kinds, "changes": changes[0], "workers": workers, "stale_reads": stale}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__)
    parser.add_argument("--database-url", help="server to use (default: settings / embedded)")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--clinics", type=int, default=2)
    parser.add_argument("--schedule", type=int, default=1_000, help="patients seen today")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, help="API workers (default: what `serve` picks)")
    parser.add_argument("--think-ms", type=float, default=200.0, help="mean pause between visits")
    parser.add_argument("--changes-per-s", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", default=str(RESULTS / "cache.json"))
    args = parser.parse_args(argv)
    server = args.database_url or resolve_database_url(Settings())
    url, key = prepare(server, args.patients, args.clinics)
    result = {"args": vars(args), **run_day(url, key, args)}
    print(
        f"\n{args.patients:,} patients, {args.clients} clients for {args.seconds:.0f} s, "
        f"{result['changes']:,} patients changed ({args.changes_per_s}/s), "
        f"{result['workers']} API workers, each with its cache in process"
    )
    print(f"{'kind':<8} {'hits':>8} {'misses':>8} {'hit rate':>9}")
    for kind, row in sorted(result["kinds"].items()):
        print(f"{kind:<8} {row['hits']:>8} {row['misses']:>8} {row['hit_rate']:>9.3f}")
    print("(search answers are dropped by any change in their clinics: the clinic-wide baseline)")
    print(f"stale reads of the last patients changed, once indexed: {result['stale_reads']}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
            "where slot_name = %s and not active",
            (SLOT,),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
