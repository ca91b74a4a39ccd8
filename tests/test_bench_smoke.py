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
    args = ["--patients", "400", "--clinics", "2", "--clients", "4", "--seconds", "2"]
    assert load.main([*args, "--workers", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    kinds = report["api"]["kinds"]
    assert {"prefix", "typo_name", "name_dob", "phone", "mrn", "lookup"} <= set(kinds)
    assert report["api"]["errors"] == 0
    assert report["reindex"]["seconds"] > 0
    assert report["bare"]["throughput_rps"] > 0
    assert "| kind | requests |" in capsys.readouterr().out
