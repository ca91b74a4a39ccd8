"""Decoded change events and the one mapping from a batch of changes to patient ids.

Both sources (pgoutput and Debezium) decode into `Change`, keeping only the key
columns (`id`, `patient_id`): the indexer re-reads everything else from the
source, so row values never sit in its memory, logs or dead letters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from engines.pg_projection import owners_of_contacts

PATIENTS = "patients"
CONTACTS = "patient_contacts"
TABLES = frozenset({PATIENTS, CONTACTS})
# The only columns an event needs: which patient (and, for contacts, which contact row).
KEY_COLUMNS = frozenset({"id", "patient_id"})

Op = Literal["insert", "update", "delete", "truncate", "read"]
Keys = Mapping[str, str | None]


@dataclass(frozen=True)
class Change:
    """One row change (or a table truncate) at a source position."""

    table: str
    op: Op
    new: Keys | None = None
    old: Keys | None = None
    position: str = ""
    commit_ts: float | None = None  # source commit time, epoch seconds

    @property
    def patient_ids(self) -> set[str]:
        """Patients named by the event itself (contact deletes may name none)."""
        column = "id" if self.table == PATIENTS else "patient_id"
        return {v for k in (self.new, self.old) if k and (v := k.get(column))}

    @property
    def contact_ids(self) -> set[str]:
        if self.table != CONTACTS:
            return set()
        return {v for k in (self.new, self.old) if k and (v := k.get("id"))}


@dataclass(frozen=True)
class DeadLetter:
    """Something set aside so the rest goes on: never the row or event itself.

    `kind` is "event" (a change that could not be read: `position` says where) or
    "document" (a patient that could not be indexed: `patient_id` says who). The
    reason names a rule or an exception type, never a value.
    """

    source: str
    position: str
    reason: str
    patient_id: str | None = None
    kind: Literal["event", "document"] = "event"


@dataclass
class Affected:
    ids: set[str] = field(default_factory=set)
    full_resync: bool = False  # a truncate: every patient must be re-checked


def key_values(row: Mapping[str, Any] | None, *, placeholder: str | None = None) -> Keys | None:
    """Keep only key columns as text; unknown columns and placeholders are dropped."""
    if row is None:
        return None
    out: dict[str, str | None] = {}
    for name in KEY_COLUMNS & row.keys():
        value = row[name]
        if value is None or value == "" or value == placeholder or isinstance(value, dict | list):
            continue
        out[name] = str(value)
    return out


def affected_patients(conn: psycopg.Connection[Any], changes: Iterable[Change]) -> Affected:
    """Patient ids touched by a batch; contact owners come from contact_owner.

    A contact's owner is looked up for every contact event, not only deletes:
    with the clinic's default replica identity an update that moves a contact to
    another patient carries no old patient_id, and the old owner's document
    must lose that contact. Must run before sync_patients rewrites contact_owner.
    """
    result = Affected()
    contacts: set[str] = set()
    for change in changes:
        if change.table not in TABLES:
            continue
        if change.op == "truncate":
            result.full_resync = True
            continue
        result.ids |= change.patient_ids
        contacts |= change.contact_ids
    if contacts:
        result.ids |= owners_of_contacts(conn, contacts)
    return result


@dataclass
class Batch:
    """What a source hands the runner: write these, then `ack` makes the position durable.

    `ack` is source-specific (an LSN to advance the slot to, Kafka offsets to
    commit) and None when the batch ends inside a source transaction: the
    write is still safe (idempotent), but the position may not move yet.
    """

    changes: list[Change] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    position: str | None = None
    ack: Any = None
    commit_ts: list[float] = field(default_factory=list)
    events: int = 0  # messages consumed, including ignored ones
    # Source transaction ids (logical decoding): a commit is decodable a moment before
    # it is visible to other sessions, and the write must not read the source too early.
    xids: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.changes) + len(self.dead)
