"""The external (Febrl 1-3) benchmark at smoke size: it runs end to end through the CLI and
reports every system, the ceiling and the grades; Febrl 4 stays out of reach."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from bench import external


def test_febrl_4_is_refused() -> None:
    with pytest.raises(ValueError, match="held back"):
        external.febrl_path(4)
    with pytest.raises(SystemExit):
        external.main(["--datasets", "4"])


def test_reading_febrl_and_typing_its_duplicates() -> None:
    records = external.read_febrl(1)
    originals = [r for r in records if r.is_original]
    assert len(originals) == 500 and len(records) == 1000
    queries = external.make_queries(1, records)
    assert len(queries) == 3 * 500
    assert {q.form for q in queries} == set(external.FORMS)
    assert all(
        q.target_id.startswith("febrl1-rec-") and q.target_id.endswith("-org") for q in queries
    )
    assert (
        external.render("last_first_mdy", "ann", "lee", dt.date(1985, 3, 4)) == "lee, ann 3/4/1985"
    )
    assert external.render("name_iso", "ann", "", dt.date(1985, 3, 4)) == "ann 1985-03-04"
    assert external.render("name", "ann", "lee", None) == "ann lee"
    org = external.Record("rec-1-org", "blake", "bristow", None, "")
    assert external.name_damage(
        external.Record("rec-1-dup-0", "blake", "bristw", None, ""), org
    ) == (
        False,
        False,
    )
    assert external.name_damage(
        external.Record("rec-1-dup-1", "blake", "noble", None, ""), org
    ) == (
        True,
        False,
    )
    assert external.name_damage(external.Record("rec-1-dup-2", "", "smith", None, ""), org) == (
        True,
        True,
    )


def test_external_benchmark_smoke(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    out = tmp_path / "external.json"
    args = ["--datasets", "1", "--sample", "50", "--quiet", "--json", str(out)]
    assert external.main(args) == 0
    report = json.loads(out.read_text())
    assert report["systems"] == ["ours", "pg_trgm", "tsvector", "rapidfuzz"]
    assert set(report["metrics"]) == {f"febrl1 {form}" for form in external.FORMS}
    for by_system in report["metrics"].values():
        assert by_system["ours"]["n"] > 0
    # a date narrows 50 patients to about one: ours must find nearly every duplicate
    assert report["metrics"]["febrl1 name_iso"]["ours"]["recall@10"] >= 0.85
    assert 0 <= report["ceiling"]["1"]["no_name_left"] <= report["ceiling"]["1"]["name_part_lost"]
    assert sum(g["results"] for g in report["grades"].values()) > 0
    assert "| dataset | form | n |" in capsys.readouterr().out


def test_a_kept_database_is_asked_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--data-dir: the second run asks the first run's build, so only the code could
    change its figures."""
    kept = ["--datasets", "1", "--sample", "30", "--quiet", "--data-dir", str(tmp_path / "db")]
    reports = []
    for name in ("a.json", "b.json"):
        assert external.main([*kept, "--json", str(tmp_path / name)]) == 0
        reports.append(json.loads((tmp_path / name).read_text()))
    assert "asking the database built before" in capsys.readouterr().err
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["metrics"]["febrl1 name_iso"]["ours"]["n"] > 0
