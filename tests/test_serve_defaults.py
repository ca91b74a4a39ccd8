"""The default `serve` uses the machine: one worker per available core, pools sized so all
workers together keep about four connections per core (issue 11)."""

from __future__ import annotations

import pytest

from core.settings import Settings, available_cores


def test_workers_default_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATIENT_SEARCH_WORKERS", raising=False)
    assert Settings().workers == available_cores() >= 1
    assert Settings(workers=3).workers == 3


def test_pool_is_the_workers_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.settings.available_cores", lambda: 2)
    assert Settings(workers=2).pool_size == 4
    assert Settings(workers=1).pool_size == 8
    assert Settings(workers=16).pool_size == 2  # never below POOL_MIN_SIZE
    assert Settings(workers=2, pool_max_size=10).pool_size == 10  # an operator's choice wins
