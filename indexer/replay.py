"""`patient-search deadletters replay`: re-sync the patients dead letters name, from the source.

Every letter naming a patient is re-read through the one write path (the same
isolation as the indexer: a patient still unindexable stays set aside, with a
new letter). Letters that name no patient (an unreadable event) cannot be
replayed by id: the count is reported so an operator can run `check --repair`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from core.settings import Settings
from indexer import deadletters
from indexer.runner import make_sinks, sync_isolating

_CHUNK = 500


@dataclass(frozen=True)
class Replayed:
    letters: int  # letters marked replayed
    patients: int  # distinct patients re-synced
    still_rejected: int  # patients set aside again
    without_patient: int  # letters naming no patient (left pending)


def replay(url: str, settings: Settings, only: list[int] | None = None) -> Replayed:
    with psycopg.connect(url) as conn:
        rows = [r for r in deadletters.pending(conn) if only is None or r.id in only]
        by_patient = [r for r in rows if r.patient_id]
        ids = sorted({r.patient_id for r in by_patient if r.patient_id})
        conn.commit()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # see sync_with_owners
        sinks = make_sinks(settings, conn)  # the Meilisearch outbox, in these transactions
        rejected: set[str] = set()
        try:
            for start in range(0, len(ids), _CHUNK):
                with conn.transaction():
                    _, dead = sync_isolating(
                        conn,
                        ids[start : start + _CHUNK],
                        settings,
                        sinks,
                        source="replay",
                        position="replay",
                    )
                    done = [r.id for r in by_patient if r.patient_id in ids[start : start + _CHUNK]]
                    deadletters.mark_replayed(conn, done)
                    deadletters.record(conn, dead)
                rejected |= {d.patient_id for d in dead if d.patient_id}
        finally:
            for sink in sinks:
                sink.close()
    return Replayed(len(by_patient), len(ids), len(rejected), len(rows) - len(by_patient))
