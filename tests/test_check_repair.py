"""`check --repair` racing the indexer: it never resurrects a deleted patient nor rolls back
a newer update, and it writes to every configured engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from core.documents import PatientDocument
from indexer import check as check_module
from indexer.sync import sync_patients
from tests.factories import insert_patient


class _Recorder:
    """A second engine, as the indexer's sinks are: what it was asked to write."""

    name = "recorder"

    def __init__(self) -> None:
        self.written: list[str] = []
        self.deleted: list[str] = []

    def write(self, docs: Sequence[PatientDocument], deleted_ids: Sequence[str]) -> None:
        self.written += [d.id for d in docs]
        self.deleted += list(deleted_ids)

    def close(self) -> None:
        pass


def _indexer_applies(url: str, statement: str, pid: str) -> threading.Thread:
    """What the indexer does for a change made while the repair runs: source first, then
    one batch transaction for that patient (as the runner writes it)."""

    def work() -> None:
        with psycopg.connect(url) as conn:
            conn.execute(statement)  # type: ignore[arg-type]
            conn.commit()
            with conn.transaction():
                sync_patients(conn, [pid])

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_repair_neither_resurrects_nor_rolls_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "gone", given="Ann", family="Lee")
        insert_patient(conn, "renamed", given="Bob", family="Ray")
    # Both are missing from the projection: check finds drift and repairs them.
    load = check_module.sync_patients.__globals__["load_documents"]
    threads: list[threading.Thread] = []

    def read_then_race(conn: psycopg.Connection[Any], ids: Sequence[str], **kw: Any) -> Any:
        result = load(conn, ids, **kw)  # the repair has read the source...
        if not threads:  # ...and the indexer now handles newer changes to both
            threads.append(
                _indexer_applies(db_url, "delete from patients where id = 'gone'", "gone")
            )
            threads.append(
                _indexer_applies(
                    db_url,
                    "update patients set given_name = 'Robert' where id = 'renamed'",
                    "renamed",
                )
            )
            for thread in threads:
                thread.join(2.0)  # a batch that is not held off would commit here
        return result

    monkeypatch.setitem(check_module.sync_patients.__globals__, "load_documents", read_then_race)
    recorder = _Recorder()
    with psycopg.connect(db_url) as conn:
        reports = check_module.check(
            conn, schema="public", region="US", repair=True, sinks=[recorder]
        )
    monkeypatch.undo()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert sum(r.repaired for r in reports) == 2
    assert sorted(recorder.written) == ["gone", "renamed"]  # the other engine repaired too
    with psycopg.connect(db_url) as conn:
        rows = dict(
            conn.execute("select id, doc->'patient'->>'given_name' from patient_search.patients")
        )
    assert rows == {"renamed": "Robert"}
