"""The load benchmark at smoke size: it must run end to end and answer without errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench import load
from tests.fixtures import serve_app


def test_load_benchmark_smoke(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    out = tmp_path / "load.json"
    args = ["--patients", "400", "--clinics", "2", "--clients", "4", "--seconds", "1"]
    args += ["--workers", "1", "--alone", "5", "--sample", "300", "--driver", "python"]
    assert load.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    kinds = report["kinds"]
    assert set(load.KINDS) == set(kinds)
    assert report["errors"] == 0
    assert all(k["requests"] > 0 for k in kinds.values())
    assert all(k["api_cpu_ms"] > 0 for k in kinds.values())  # the workers' CPU is counted
    assert all(k["api_run_queue_max_ms"] >= 0 for k in kinds.values())  # read from schedstat
    assert report["reindex"]["seconds"] > 0
    assert report["bare"]["rps"] > 0
    assert report["bare"]["machine_cpu_ms"] > 0  # the machine's CPU a bare request cost
    assert report["bare"]["api_cpu_ms"] > 0  # and the bare endpoint's own, measured alike
    assert all(k["machine_cpu_ms"] > 0 for k in kinds.values())
    assert report["workers"] == 1
    table = capsys.readouterr().out
    assert "| kind | req/s | of bare |" in table and "| API CPU ms/req | PG CPU ms/req |" in table
    assert "longest run-queue wait ms (API / PG)" in table
    assert "Targets (issue 11):" in table
    assert all(f"- {kind}: " in table for kind in load.KINDS)


def test_the_ceiling_is_what_postgres_leaves_of_the_machine() -> None:
    """Two cores; a bare request costs the machine 0.25 ms (8,000 req/s saturate it): a
    kind whose statements cost PostgreSQL 0.75 ms can reach at most 2,000 req/s, a
    quarter of bare, however little the API spends beyond the bare endpoint."""
    bare = {"rps": 8000.0, "machine_cpu_ms": 0.25}
    assert load.ceiling({"pg_cpu_ms": 0.75}, bare, 2) == {
        "ceiling_rps": 2000.0,
        "ceiling_share": 0.25,
    }
    assert load.ceiling({"pg_cpu_ms": None}, bare, 2) == {}  # PostgreSQL elsewhere


def test_targets_tell_a_missed_target_from_one_out_of_reach() -> None:
    def kind(share: float, ceiling_share: float, p99: float) -> dict[str, float]:
        return {
            "share_of_bare": share,
            "ceiling_share": ceiling_share,
            "p99_ms": p99,
            "alone_p90_ms": 2.0,
            "alone_p95_ms": 3.0,
        }

    lines = load.targets(
        {
            "kinds": {
                "typo_name": kind(0.10, 0.25, 120.0),  # room left: missed
                "phone": kind(0.30, 0.35, 160.0),  # 40 % asked, 35 % possible
                "prefix": kind(0.22, 0.25, 100.0),
            }
        }
    )
    typo, phone, prefix = lines
    assert "10.0% of bare (target 20%; ceiling 25.0%): missed" in typo
    assert "p99 120.0 ms (<= 150): ok" in typo
    assert "30.0% of bare (target 40%; ceiling 35.0%): out of reach on this machine" in phone
    assert "p99 160.0 ms (<= 150): missed" in phone and "alone p90 2.0 ms (<= 10): ok" in phone
    assert "22.0% of bare (target 20%; ceiling 25.0%): ok" in prefix and "alone p90" not in prefix


def test_run_queue_watch_sees_threads_waiting_for_a_cpu() -> None:
    """More busy processes than cores: each waits for a CPU, and the watch says how long."""
    import os
    import subprocess
    import sys

    from bench.sched import RunQueueWatch, run_queue_ns

    burn = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"
    busy = [
        subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2 * (os.cpu_count() or 1) + 1)
    ]
    try:
        with RunQueueWatch(lambda: {"busy": [p.pid for p in busy], "idle": [1]}) as watch:
            for p in busy:
                p.wait(timeout=30)
    finally:
        for p in busy:
            p.kill()
    longest = watch.longest()
    assert set(longest) == {"busy", "idle"}
    # Two processes per core: each waits about as long as it runs, in slices of ms.
    busiest = longest["busy"]
    assert busiest.ms > 1.0
    assert busiest.title.startswith(sys.executable)  # the burner, by its command line
    assert busiest.interval_ms > 0
    assert busiest.single_ms == max(0.0, busiest.ms - busiest.interval_ms)
    assert run_queue_ns(os.getpid())  # this process's own threads are readable


def test_the_report_names_a_stall_and_the_autogroup_setting() -> None:
    """A wait that the sampling interval cannot hold is one stall: named with its process."""
    from bench.load import _stalls

    def kind(pg_single: float) -> dict[str, object]:
        return {
            "api_run_queue_single_ms": 0.0,
            "api_run_queue_process": "python",
            "pg_run_queue_single_ms": pg_single,
            "pg_run_queue_process": "postgres: postgres postgres [local] SELECT",
        }

    report = {"kinds": {"phone": kind(1761.6), "mrn": kind(40.0)}, "autogroup": True}
    assert _stalls(report) == [
        "- phone: one PostgreSQL wait for a CPU of at least 1762 ms "
        "(postgres: postgres postgres [local] SELECT)",
        "- the kernel's autogroup (sched_autogroup_enabled) was on",
    ]
    assert _stalls({"kinds": {"mrn": kind(40.0)}, "autogroup": False}) == []


def test_census_population_is_census_weighted() -> None:
    from collections import Counter

    from bench.population import generate

    rows = list(generate(20_000, population="census", seed=1))
    family = Counter(p.family_name for p, _ in rows)
    assert family.most_common(1)[0][0] == "Smith"  # about 2 % of people
    assert 250 < family["Smith"] < 600
    crowded = {(p.given_name, p.family_name) for p, _ in generate(5_000, population="crowded")}
    assert len(crowded) <= 100


def test_cache_benchmark_smoke(db_url: str, tmp_path: Path) -> None:
    """A short day: the indexer changes patients while staff search and read them."""
    from bench import cache

    out = tmp_path / "cache.json"
    args = ["--database-url", db_url, "--patients", "300", "--schedule", "40", "--clients", "3"]
    args += ["--seconds", "4", "--changes-per-s", "5", "--workers", "1", "--json", str(out)]
    assert cache.main(args) == 0
    report = json.loads(out.read_text())
    assert report["changes"] > 0 and report["workers"] == 1
    reads = report["kinds"]["patient"]
    assert reads["hits"] > 0 and reads["misses"] > 0  # opened again within a visit; first reads
    assert report["kinds"]["search"]["misses"] > 0
    assert report["stale_reads"] == 0  # every changed patient read as it now is


def test_the_load_client_reconnects_when_told_to_close() -> None:
    """`serve` evens its workers' clients out with `Connection: close` (search_api.spread);
    the benchmark's own client must open a new connection then, as HTTP/1.1 asks."""

    async def closing(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"connection": "close"})

    app = Starlette(routes=[Route("/x", closing, methods=["POST"])])
    with serve_app(app) as base:
        port = int(base.rsplit(":", 1)[1])

        async def three() -> list[int]:
            conn = load._Connection("127.0.0.1", port)
            try:
                return [(await conn.post("/x", b"{}", "key"))[0] for _ in range(3)]
            finally:
                conn.close()

        assert asyncio.run(three()) == [200, 200, 200]


def test_fhir_benchmark_smoke(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind asked through /v1 and /fhir with one key: the key needs both scopes (a
    key with the FHIR scope alone was refused /v1, and the benchmark stopped at its
    first query)."""
    from bench import fhir

    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    times = fhir.run(patients=200, queries=5, seed=2)
    assert times["name + birth date"]["/v1"] and times["name + birth date"]["/fhir"]
    assert all(ms > 0 for by_path in times.values() for t in by_path.values() for ms in t)
