"""The embedded PostgreSQL is sized to the machine it runs on, and `serve` loads the
searched tables into its buffers (issue 11)."""

from __future__ import annotations

import os

import psycopg
import pytest

from core.database import memory_bytes, prewarm_projection, shared_buffers_mb
from indexer.sync import sync_patients
from tests.factories import insert_patient

GIB = 2**30


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    assert shared_buffers_mb(24 * GIB) == 6144
    assert shared_buffers_mb(2 * GIB) == 512
    assert shared_buffers_mb(256 * 2**20) == 128  # a small machine keeps PostgreSQL's floor
    assert shared_buffers_mb(128 * GIB) == 8192  # past 8 GB the OS cache serves as well


EMBEDDED_ONLY = pytest.mark.skipif(
    bool(os.environ.get("PATIENT_SEARCH_DATABASE_URL")),
    reason="an external server keeps its own configuration (and may lack pg_prewarm)",
)


@EMBEDDED_ONLY
def test_a_new_embedded_server_gets_buffers_sized_to_this_machine(server_url: str) -> None:
    with psycopg.connect(server_url) as conn:
        row = conn.execute(
            "select setting::bigint * 8192 from pg_settings where name = 'shared_buffers'"
        ).fetchone()
    assert row == (shared_buffers_mb(memory_bytes()) * 2**20,)


@EMBEDDED_ONLY
def test_a_new_embedded_server_keeps_a_full_reindexs_wal_for_its_slot(server_url: str) -> None:
    with psycopg.connect(server_url) as conn:
        row = conn.execute("show max_slot_wal_keep_size").fetchone()
    assert row == ("16GB",)  # a 1M rebuild writes about 3.7 GB while it holds its slot


@EMBEDDED_ONLY
def test_prewarm_loads_every_page_of_the_searched_tables_and_their_indexes(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        for i in range(50):
            insert_patient(conn, f"p{i}", given=f"Ann{i}", family="Smith")
        sync_patients(conn, [f"p{i}" for i in range(50)])
        conn.commit()
        row = conn.execute(
            "select sum(pg_relation_size(t) + pg_indexes_size(t)) / 8192 from unnest("
            "array['patient_search.patients', 'patient_search.name_keys', "
            "'patient_search.term_counts', 'patient_search.name_words']::regclass[]) t"
        ).fetchone()
    assert row is not None and row[0] > 0
    assert prewarm_projection(db_url) == row[0]
    # More than the share of the buffers allowed: nothing is loaded (it would evict itself).
    assert prewarm_projection(db_url, budget_share=1e-6) is None
