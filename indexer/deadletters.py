"""The dead-letter table: what the indexer set aside so the rest could go on.

A dead letter holds ids, kind, reason and position, never patient data: an
unreadable event stays where its position says (WAL, Kafka) and a patient that
could not be indexed stays in the source, so `replay` re-reads the patients
named from the source through the one write path.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from indexer.events import DeadLetter

log = logging.getLogger(__name__)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a malformed position or id may."""
    return value.replace("\x00", "\\x00") if value is not None else None


def record(conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    """In the caller's transaction; a replay after a crash records the same letter once."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "insert into patient_search.dead_letters (source, kind, position, patient_id, reason) "
            "select %(source)s, %(kind)s, %(position)s, %(patient_id)s, %(reason)s "
            "where not exists (select 1 from patient_search.dead_letters where "
            "source = %(source)s and position = %(position)s and reason = %(reason)s "
            "and patient_id is not distinct from %(patient_id)s and replayed_at is null)",
            [
                {
                    "source": d.source,
                    "kind": d.kind,
                    "position": _text(d.position),
                    "patient_id": _text(d.patient_id),
                    "reason": _text(d.reason),
                }
                for d in letters
            ],
        )
    log.warning(
        "set aside in dead_letters",
        extra={"count": len(letters), "reasons": sorted({d.reason for d in letters})},
    )


@dataclass(frozen=True)
class Row:
    id: int
    created_at: dt.datetime
    source: str
    kind: str
    position: str | None
    patient_id: str | None
    reason: str
    replayed_at: dt.datetime | None

    def line(self) -> str:
        replayed = f" replayed {self.replayed_at:%Y-%m-%dT%H:%M:%SZ}" if self.replayed_at else ""
        return (
            f"{self.id}\t{self.created_at:%Y-%m-%dT%H:%M:%SZ}\t{self.source}\t{self.kind}\t"
            f"{self.position or '-'}\t{self.patient_id or '-'}\t{self.reason}{replayed}"
        )


def pending(conn: psycopg.Connection[Any], *, include_replayed: bool = False) -> list[Row]:
    rows = conn.execute(
        "select id, created_at at time zone 'UTC', source, kind, position, patient_id, reason, "
        "replayed_at at time zone 'UTC' from patient_search.dead_letters "
        "where %s or replayed_at is null order by id",
        (include_replayed,),
    ).fetchall()
    return [Row(*r) for r in rows]


def mark_replayed(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    conn.execute(
        "update patient_search.dead_letters set replayed_at = now() where id = any(%s)",
        (list(ids),),
    )
