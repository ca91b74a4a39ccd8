"""The load benchmark at smoke size: it must run end to end and answer without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import load


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
    assert report["reindex"]["seconds"] > 0
    assert report["bare"]["rps"] > 0
    assert report["workers"] == 1
    table = capsys.readouterr().out
    assert "| kind | req/s | of bare |" in table and "| API CPU ms/req | PG CPU ms/req |" in table


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
