"""Real PostgreSQL for the tests: PATIENT_SEARCH_DATABASE_URL, or the embedded server.

Each test that asks for `db_url` gets a fresh database cloned from a template
that already holds the extensions, the clinic's source tables and schema
`patient_search`, so tests never see each other's rows.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core import native
from core.database import start_embedded
from core.schema import create_source_tables, migrate
from core.settings import get_settings
from tests.factories import cloned_database

TEMPLATE = "patient_search_test_template"
pytest_plugins = ["tests.fixtures", "tests.fhir_support", "tests.kafka_broker"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Testing a compiled module older than its source would test the old code."""
    from tests.fixtures import native_module_names  # a plugin: imported once registered

    for name in native_module_names():
        importlib.import_module(name)
    if old := native.stale():
        pytest.exit(
            f"compiled before their source last changed: {', '.join(old)}; build again with"
            " `make install` (or pip install -e .), or PATIENT_SEARCH_COMPILE=0 for plain Python",
            returncode=4,
        )


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads the environment anew: `get_settings` caches one Settings per process."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    external = os.environ.get("PATIENT_SEARCH_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = Path(tempfile.mkdtemp(prefix="patient-search-test-"))
    yield start_embedded(data_dir)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(TEMPLATE)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
    with psycopg.connect(make_conninfo(server_url, dbname=TEMPLATE)) as conn:
        create_source_tables(conn)
        migrate(conn)
        conn.commit()
    return TEMPLATE


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    with cloned_database(server_url, template_db) as url:
        yield url
