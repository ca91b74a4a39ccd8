"""Reading the clinic's tables as DESIGN.md shows them: no index on patient_contacts(patient_id)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from indexer import source
from patient_search import cli
from tests.factories import insert_patient


def _contacts_scans(plan: dict[str, Any]) -> int:
    """Times the contacts table was scanned, from EXPLAIN ANALYZE (loops, not workers)."""
    loops = 0
    if plan.get("Relation Name") == "patient_contacts":
        loops += int(plan.get("Actual Loops", 0)) // max(1, int(plan.get("Workers Launched", 1)))
    for child in plan.get("Plans", []):
        loops += _contacts_scans(child)
    return loops


def _scans(conn: psycopg.Connection, query: sql.Composable, params: Any) -> int:
    conn.execute("set local max_parallel_workers_per_gather = 0")  # loops = executions
    row = conn.execute(sql.SQL("explain (analyze, format json) ") + query, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return _contacts_scans(plan[0]["Plan"])


@pytest.fixture
def clinic(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        for i in range(200):
            insert_patient(conn, f"p{i:03d}", given="Ann", family=f"F{i}", phones=["555-0100"])
        conn.execute("analyze")
    return db_url


def test_the_test_source_has_only_primary_keys(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select indexname from pg_indexes where schemaname = 'public' order by 1"
        ).fetchall()
    assert [r[0] for r in rows] == ["patient_contacts_pkey", "patients_pkey"]


def test_streaming_reads_contacts_once_not_once_per_patient(clinic: str) -> None:
    with psycopg.connect(clinic) as conn:
        query, params = source.stream_query("public", clinic_id=None, partition=None)
        assert _scans(conn, query, params) == 1
        query, params = source.stream_query("public", clinic_id="clinic-a", partition=(1, 2))
        assert _scans(conn, query, params) == 1
        batches = list(source.stream_patients(conn, batch_size=50))
    patients = [p for rows in batches for p in rows]
    assert len(patients) == 200
    assert all(len(p["contacts"]) == 1 for p in patients)


def test_fetch_by_ids_reads_contacts_once_per_batch(clinic: str) -> None:
    ids = [f"p{i:03d}" for i in range(0, 200, 2)] + ["missing"]
    with psycopg.connect(clinic) as conn:
        query, params = source.fetch_query("public", ids)
        assert _scans(conn, query, params) == 1
        rows = source.fetch_patients(conn, ids)
    assert len(rows) == 100
    assert rows["p002"]["contacts"][0]["value"] == "555-0100"


def test_migrate_and_check_print_the_index_hint_until_the_index_exists(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    for command in (["migrate"], ["check"]):
        assert cli.main(command) == 0
        hints = [line for line in capsys.readouterr().out.splitlines() if "hint" in line]
        assert len(hints) == 1, command
        assert "create index concurrently patient_contacts_patient_id on " in hints[0]
        assert "public.patient_contacts (patient_id);" in hints[0]
    with psycopg.connect(db_url) as conn:
        conn.execute("create index on patient_contacts (patient_id, kind)")
    assert cli.main(["migrate"]) == 0
    assert "hint" not in capsys.readouterr().out
