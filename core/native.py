"""Which of this service's modules run compiled, and which were compiled before their
source last changed (setup.py compiles the search path's modules with mypyc).

An editable install builds next to the sources, and Python imports a compiled module
before its .py file: an edit made after the build does not run until the package is
built again (`make` does it). The tests refuse to start and `serve` warns when that is so.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGES = ("normalizers", "core", "engines", "indexer", "search_api", "patient_search")


def compiled() -> list[str]:
    """This service's loaded modules that are compiled extensions."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] in PACKAGES
        and str(getattr(module, "__file__", None) or "").endswith(tuple(EXTENSION_SUFFIXES))
    )


def stale() -> list[str]:
    """Compiled modules whose .py file is newer than the compiled file."""
    found = []
    for name in compiled():
        built = Path(str(sys.modules[name].__file__))
        source = built.with_name(name.rpartition(".")[2] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            found.append(name)
    return found
