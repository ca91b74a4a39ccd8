"""The compiled search path (setup.py, core.native): all or nothing, and never stale."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from core import native
from tests.fixtures import native_module_names


def test_the_search_path_is_compiled_all_or_nothing() -> None:
    names = native_module_names()
    compiled = set(native.compiled())
    assert names, "pyproject.toml lists the compiled modules"
    assert {n for n in names if n in compiled} in (set(), set(names)), compiled


def test_a_compiled_module_older_than_its_source_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = tmp_path / "fake.cpython-311-x86_64-linux-gnu.so"
    source = tmp_path / "fake.py"
    built.write_bytes(b"")
    source.write_text("")
    module = types.ModuleType("core.fake")
    module.__file__ = str(built)
    monkeypatch.setitem(sys.modules, "core.fake", module)
    os.utime(built, (1_000, 1_000))
    os.utime(source, (2_000, 2_000))  # edited after the build
    assert "core.fake" in native.compiled()
    assert "core.fake" in native.stale()
    os.utime(built, (3_000, 3_000))  # built again
    assert "core.fake" not in native.stale()
