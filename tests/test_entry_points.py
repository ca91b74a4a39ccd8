"""`python -m indexer` and `patient-search indexer` are one entry point: both migrate."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import psycopg
import pytest

from core.schema import MIGRATIONS, schema_version
from core.settings import Settings
from tests.fixtures import CLI


@pytest.mark.parametrize("command", [[sys.executable, "-m", "indexer"], [CLI, "indexer"]])
def test_both_indexer_commands_migrate_then_index(
    db_url: str, indexer_settings: Callable[..., Settings], command: list[str]
) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("drop schema patient_search cascade")  # a database never migrated
        conn.execute("insert into patients (id, clinic_id, given_name) values ('p1', 'c1', 'Al')")
    settings = indexer_settings()
    env = {
        **os.environ,
        "PATIENT_SEARCH_DATABASE_URL": db_url,
        "PATIENT_SEARCH_SLOT_NAME": settings.slot_name,
        "PATIENT_SEARCH_INDEXER_METRICS_PORT": "0",
    }
    done = subprocess.run([*command, "--once"], env=env, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    with psycopg.connect(db_url) as conn:
        assert schema_version(conn) == MIGRATIONS[-1][0]
        assert conn.execute("select id from patient_search.patients").fetchall() == [("p1",)]
