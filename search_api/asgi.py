"""ASGI entry point for uvicorn workers: `uvicorn search_api.asgi:app`.

The parent process (`patient-search serve`) resolves the database URL, starting
the embedded server if needed, and hands it down in PATIENT_SEARCH_DATABASE_URL.
"""

from __future__ import annotations

from core.database import resolve_database_url
from core.logging import configure_logging
from core.settings import configure_normalizers, get_settings
from search_api.app import create_app
from search_api.primary_engine import primary_engine

settings = get_settings()
configure_logging(settings.log_level)
configure_normalizers(settings)
app = create_app(
    settings, resolve_database_url(settings), primary=primary_engine(settings), owns_process=True
)
