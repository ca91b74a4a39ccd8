"""One bad patient never stops the indexer, the initial sync or a reindex; dead letters hold
ids and reasons, never patient data; `deadletters list|replay` on the command line."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from core.settings import Settings
from indexer.reindex import reindex
from indexer.runner import run
from patient_search import cli
from tests.factories import insert_patient

HUGE_NAME = "Zed" * 1700  # a 5 kB "name"
HUGE_EMAIL = "x" * 8000 + "@example.com"  # an 8 kB "email"


def _seed_bad_and_good(url: str) -> None:
    with psycopg.connect(url) as conn:
        insert_patient(conn, "good1", given="Ann", family="Lee")
        insert_patient(conn, "bad-name", given="Bo", family=HUGE_NAME)
        insert_patient(conn, "bad-email", given="Cy", family="Ray", emails=[HUGE_EMAIL])
        insert_patient(conn, "good2", given="Di", family="Fox")


def _projection_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("select id from patient_search.patients")}


def _letters(url: str) -> list[tuple[str, str | None, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select kind, patient_id, reason, row_to_json(d)::text from "
            "patient_search.dead_letters d where replayed_at is null order by patient_id"
        ).fetchall()
    for *_, whole in rows:
        assert "Zed" not in whole and "xxxx" not in whole  # no patient data
    return [(k, p, r, w) for k, p, r, w in rows]


def test_streamed_changes_with_values_too_large_become_dead_letters(
    db_url: str, indexer_settings: Callable[..., Settings]
) -> None:
    settings = indexer_settings()
    assert run(settings, once=True) == 0  # slot first: the changes below are streamed
    _seed_bad_and_good(db_url)
    with psycopg.connect(db_url) as conn:
        insert_patient(conn, "good3", given="Ed", family="Orr")
    assert run(settings, once=True) == 0
    assert _projection_ids(db_url) == {"good1", "good2", "good3"}
    letters = _letters(db_url)
    assert [(k, p) for k, p, *_ in letters] == [("document", "bad-email"), ("document", "bad-name")]
    assert all("value too large to index" in r for _, _, r, _ in letters)


def test_initial_sync_and_reindex_set_a_bad_patient_aside(
    db_url: str, indexer_settings: Callable[..., Settings]
) -> None:
    _seed_bad_and_good(db_url)
    settings = indexer_settings(reindex_workers=2)
    assert run(settings, once=True) == 0  # initial sync over the existing rows
    assert _projection_ids(db_url) == {"good1", "good2"}
    assert {p for _, p, *_ in _letters(db_url)} == {"bad-name", "bad-email"}
    with psycopg.connect(db_url) as conn:
        conn.execute("delete from patient_search.dead_letters")
        conn.execute("update patients set given_name = 'Annie' where id = 'good1'")
    assert reindex(db_url, settings, progress=False) == 2
    assert _projection_ids(db_url) == {"good1", "good2"}
    assert {p for _, p, *_ in _letters(db_url)} == {"bad-name", "bad-email"}


def test_deadletters_list_and_replay_after_the_source_is_fixed(
    db_url: str,
    indexer_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _seed_bad_and_good(db_url)
    assert run(indexer_settings(), once=True) == 0
    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    assert cli.main(["deadletters", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and "bad-email" in listed[1] and "bad-name" in listed[2]
    assert not any("Zed" in line or "xxxx" in line for line in listed)
    with psycopg.connect(db_url) as conn:  # the clinic fixes one record
        conn.execute("update patients set family_name = 'Zedd' where id = 'bad-name'")
    assert cli.main(["deadletters", "replay"]) == 1  # one is still unindexable
    assert "2 patient(s) re-synced" in capsys.readouterr().out
    assert _projection_ids(db_url) == {"good1", "good2", "bad-name"}
    assert [p for _, p, *_ in _letters(db_url)] == ["bad-email"]
    assert cli.main(["deadletters", "list", "--all"]) == 0
    assert "replayed" in capsys.readouterr().out
