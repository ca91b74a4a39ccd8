"""The search path's pure, typed modules compiled with mypyc when a C compiler is there.

Issue 11: under load a name search spends most of the API's CPU in Python (ranking,
building the passes' statements, parsing the query); compiled, the same source ran a
typo search with 11-43 % less API CPU in six alternated rounds (docs/benchmarks.md,
tenth pass). Everything else about the package is in pyproject.toml, which also lists
the modules compiled ([tool.patient-search] native).

The modules stay plain Python files: without a compiler, or with
PATIENT_SEARCH_COMPILE=0, they are installed as they are and behave the same. An
editable install builds next to the sources; `make` rebuilds when they change, and
`core.native` tells when a compiled module is older than its source.
"""

import os
import shutil
import sys
import sysconfig
import tomllib
from pathlib import Path

from setuptools import setup


def native_modules() -> list:
    if os.environ.get("PATIENT_SEARCH_COMPILE", "1") == "0":
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        print(f"patient-search: no C compiler ({compiler}): plain Python", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    config = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text())
    return mypycify(config["tool"]["patient-search"]["native"], opt_level="3")


setup(ext_modules=native_modules())
