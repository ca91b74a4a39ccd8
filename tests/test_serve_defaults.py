"""The default `serve` uses the machine: one worker per available core, pools sized so all
workers together keep about two connections per core (issue 11)."""

from __future__ import annotations

import gc

import pytest
from anyio import to_thread
from fastapi.testclient import TestClient

from core.settings import Settings, available_cores
from search_api.app import GC_YOUNG_THRESHOLD, create_app
from search_api.handlers import handler_threads


def test_workers_default_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATIENT_SEARCH_WORKERS", raising=False)
    assert Settings().workers == available_cores() >= 1
    assert Settings(workers=3).workers == 3


def test_pool_is_the_workers_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.settings.available_cores", lambda: 2)
    assert Settings(workers=2).pool_size == 2
    assert Settings(workers=1).pool_size == 4
    monkeypatch.setattr("core.settings.available_cores", lambda: 8)
    assert Settings(workers=2).pool_size == 8
    assert Settings(workers=16).pool_size == 2  # never below POOL_MIN_SIZE
    assert Settings(workers=2, pool_max_size=10).pool_size == 10  # an operator's choice wins


def test_handler_threads_follow_the_pools(db_url: str) -> None:
    """Route handlers get a thread per pooled connection, not anyio's 40: threads that
    can only wait for a connection contend for the GIL under load."""
    settings = Settings(workers=2, pool_max_size=6)
    with TestClient(create_app(settings, db_url)) as client:
        assert client.portal is not None
        tokens = client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
    assert tokens == handler_threads(settings) == 6
    assert handler_threads(Settings(workers=2, pool_max_size=1, pool_min_size=1)) == 1


def test_a_worker_s_app_keeps_the_collector_off_the_request_path(db_url: str) -> None:
    """A uvicorn worker's app freezes what it loaded and collects the young generation
    rarely; an app sharing its process (tests, embedding) leaves the collector alone."""
    before = gc.get_threshold()
    try:
        with TestClient(create_app(Settings(), db_url)):
            assert gc.get_threshold() == before
        with TestClient(create_app(Settings(), db_url, owns_process=True)):
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
