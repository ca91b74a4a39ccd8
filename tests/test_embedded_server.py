"""The embedded PostgreSQL is sized to the machine it runs on (issue 11)."""

from __future__ import annotations

import os

import psycopg
import pytest

from core.database import memory_bytes, shared_buffers_mb

GIB = 2**30


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    assert shared_buffers_mb(24 * GIB) == 6144
    assert shared_buffers_mb(2 * GIB) == 512
    assert shared_buffers_mb(256 * 2**20) == 128  # a small machine keeps PostgreSQL's floor
    assert shared_buffers_mb(128 * GIB) == 8192  # past 8 GB the OS cache serves as well


@pytest.mark.skipif(
    bool(os.environ.get("PATIENT_SEARCH_DATABASE_URL")),
    reason="an external server keeps its own configuration",
)
def test_a_new_embedded_server_gets_buffers_sized_to_this_machine(server_url: str) -> None:
    with psycopg.connect(server_url) as conn:
        row = conn.execute(
            "select setting::bigint * 8192 from pg_settings where name = 'shared_buffers'"
        ).fetchone()
    assert row == (shared_buffers_mb(memory_bytes()) * 2**20,)
