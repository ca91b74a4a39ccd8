"""State rows and the one reindex guard shared by the PostgreSQL and Meilisearch rebuilds."""

from __future__ import annotations

import psycopg
import pytest

from core import state
from core.state import ReindexBusy, record_touched, reindex_guard


def _touched(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("select patient_id from patient_search.reindex_touched")]


def test_named_rows_put_merge_get_delete(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        state.MEILI.put(conn, {"index": "patients", "failing_since": "t0"})
        state.MEILI.merge(conn, {"failing_since": None, "last_write_at": "t1"})
        state.INDEXER.put(conn, {"source": "logical", "lag_seconds": 0.5})
        assert state.MEILI.get(conn) == {
            "index": "patients",
            "failing_since": None,
            "last_write_at": "t1",
        }
        rows = state.read_many(conn, state.INDEXER, state.MEILI, state.REINDEX)
        assert set(rows) == {"indexer", "meili"}
        aged = state.INDEXER.get_with_age(conn)
        assert aged is not None and aged[0]["source"] == "logical" and aged[1] >= 0
        state.MEILI.delete(conn)
        assert state.MEILI.get(conn) is None


def test_batches_record_touched_ids_only_while_a_rebuild_is_registered(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        with conn.transaction():
            record_touched(conn, ["a"])
        assert _touched(conn) == []
        conn.commit()
        with reindex_guard(db_url, {"engine": "meilisearch"}) as guard:
            with conn.transaction():
                record_touched(conn, ["b", "c"])
            with guard.swap() as touched:
                assert touched == ["b", "c"]
        assert _touched(conn) == []
        assert state.REINDEX.get(conn) is None


def test_an_aborted_rebuild_unregisters_and_releases_its_own_rows(db_url: str) -> None:
    released: list[str] = []

    def on_register(conn: psycopg.Connection) -> None:
        state.MEILI_REBUILD.put(conn, {"live": "patients", "indexes": ["patients__rebuild"]})

    def on_release(conn: psycopg.Connection) -> None:
        state.MEILI_REBUILD.delete(conn)
        released.append("yes")

    hooks = {"on_register": on_register, "on_release": on_release}
    with pytest.raises(RuntimeError, match="boom"), reindex_guard(db_url, {}, **hooks) as guard:
        assert state.MEILI_REBUILD.get(guard.conn) is not None
        # One rebuild at a time, whatever the engine.
        with pytest.raises(ReindexBusy), reindex_guard(db_url, {"engine": "postgres"}):
            pass
        raise RuntimeError("boom")
    with psycopg.connect(db_url) as conn:
        assert released == ["yes"]
        assert state.read_many(conn, state.REINDEX, state.MEILI_REBUILD) == {}
    with reindex_guard(db_url, {}):  # the lock was given back
        pass
