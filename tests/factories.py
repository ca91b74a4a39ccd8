"""Source rows in tests, written as a clinic system would, and the projection read back."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.database import drop_database
from core.settings import Settings
from indexer.reindex import reindex
from indexer.sync import load_documents

T = TypeVar("T")

# The patient the read-path tests look for ("john smith 3/14/1985", MRN 00412); each
# file adds its own id, clinic and contacts: dict(JOHN_SMITH, id="p1", phones=[...]).
JOHN_SMITH: dict[str, Any] = dict(
    given="John", family="Smith", birth_date=dt.date(1985, 3, 14), mrn="00412"
)

_contact_ids = itertools.count(1)


def patient(
    id: str, given: str | None, family: str | None, born: str | None = None, **fields: Any
) -> dict[str, Any]:
    """One source row for `seed` / `insert_patient`, written as a line of a table:
    patient("p2", "Jon", "Smyth", "1990-07-02", mrn="00413") (born: ISO date)."""
    row: dict[str, Any] = dict(id=id, given=given, family=family, **fields)
    if born is not None:
        row["birth_date"] = dt.date.fromisoformat(born)
    return row


def insert_patient(
    conn: psycopg.Connection[Any],
    id: str,
    *,
    clinic_id: str = "clinic-a",
    given: str | None = None,
    middle: str | None = None,
    family: str | None = None,
    birth_date: dt.date | str | None = None,
    mrn: str | None = None,
    sex: str | None = None,
    postal_code: str | None = None,
    active: bool = True,
    phones: list[str] | tuple[str, ...] = (),
    emails: list[str] | tuple[str, ...] = (),
) -> str:
    conn.execute(
        "insert into patients (id, clinic_id, mrn, given_name, middle_name, family_name, "
        "birth_date, sex, postal_code, active) values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (id, clinic_id, mrn, given, middle, family, birth_date, sex, postal_code, active),
    )
    for kind, values in (("phone", phones), ("email", emails)):
        for value in values:
            conn.execute(
                "insert into patient_contacts (id, patient_id, kind, value, use) "
                "values (%s, %s, %s, %s, %s)",
                (
                    f"c{next(_contact_ids)}-{id}",
                    id,
                    kind,
                    value,
                    "mobile" if kind == "phone" else None,
                ),
            )
    return id


def insert_patients(db_url: str, patients: list[dict[str, Any]]) -> None:
    """Insert the rows (`patient(...)` dicts) in one transaction; nothing is indexed."""
    with psycopg.connect(db_url) as conn:
        for p in patients:
            insert_patient(conn, **p)


def seed(
    db_url: str,
    patients: list[dict[str, Any]],
    settings: Settings,
    keys: Callable[[psycopg.Connection[Any]], T],
) -> T:
    """Insert the patients, make the API keys (`keys(conn)`, returned) and reindex."""
    with psycopg.connect(db_url) as conn:
        for p in patients:
            insert_patient(conn, **p)
        made = keys(conn)
        conn.commit()
    reindex(db_url, settings, progress=False)
    return made


@contextmanager
def cloned_database(server_url: str, template: str, prefix: str = "t") -> Iterator[str]:
    """A fresh database copied from `template`, dropped afterwards (its replication slots too)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        drop_database(server_url, name)


def projection(db_url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select id, clinic_id, active, terms, doc->'patient' from patient_search.patients"
        ).fetchall()
    return {r[0]: {"clinic_id": r[1], "active": r[2], "terms": r[3], "patient": r[4]} for r in rows}


def execute(db_url: str, *statements: str) -> None:
    with psycopg.connect(db_url) as conn:
        for stmt in statements:
            conn.execute(stmt)  # type: ignore[arg-type]


def assert_projection_matches_source(db_url: str) -> int:
    """Projection == documents rebuilt from the source: no lost, stale or resurrected patient."""
    with psycopg.connect(db_url) as conn:
        ids = [r[0] for r in conn.execute("select id from patients order by id")]
        docs, missing = load_documents(conn, ids, schema="public", region="US")
        assert not missing
        expected = {d.id: json.loads(json.dumps(d.patient)) for d in docs}
        rows = conn.execute("select id, doc->'patient' from patient_search.patients").fetchall()
        actual = {r[0]: r[1] for r in rows}
        assert set(actual) - set(expected) == set(), "resurrected or never deleted"
        assert set(expected) - set(actual) == set(), "lost"
        stale = [i for i in expected if expected[i] != actual[i]]
        assert stale == [], f"{len(stale)} stale: {[(expected[i], actual[i]) for i in stale[:2]]}"
        owners = conn.execute(
            "select count(*) from patient_search.contact_owner o "
            "left join patient_contacts c on c.id = o.contact_id and c.patient_id = o.patient_id "
            "where c.id is null"
        ).fetchone()
        assert owners is not None and owners[0] == 0, "contact_owner out of date"
    return len(expected)


class Workload:
    """Random mixed changes on both tables, replayable from a seed.

    Yields (sql, params) transactions and keeps enough state to produce valid
    statements; also reports each change as a Debezium-shaped event for the
    Kafka tests (key columns only plus a name, enough for the indexer).
    """

    def __init__(self, seed: int, patients: int = 300) -> None:
        self.rng = random.Random(seed)
        self.pool = [f"p{i:04d}" for i in range(patients)]
        self.live: set[str] = set()
        self.contacts: dict[str, str] = {}  # contact id -> patient id
        self.next_contact = 0
        self.events: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = []

    def step(self) -> list[tuple[str, tuple[Any, ...]]]:
        rng = self.rng
        pid = rng.choice(self.pool)
        roll = rng.random()
        if pid not in self.live:
            self.live.add(pid)
            clinic = f"c{rng.randrange(3)}"
            given = rng.choice(["Ann", "Bob", "Jon", "Maria", "José", "Li"])
            self.events.append(("patients", "c", None, {"id": pid}))
            return [
                (
                    "insert into patients (id, clinic_id, given_name, family_name, birth_date) "
                    "values (%s, %s, %s, %s, %s)",
                    (pid, clinic, given, rng.choice(["Smith", "Garcia", "Ng"]), "1980-01-02"),
                )
            ]
        mine = [c for c, p in self.contacts.items() if p == pid]
        if roll < 0.08:
            self.live.discard(pid)
            for c in mine:
                del self.contacts[c]
                self.events.append(("patient_contacts", "d", {"id": c}, None))
            self.events.append(("patients", "d", {"id": pid}, None))
            return [("delete from patients where id = %s", (pid,))]
        if roll < 0.40:
            self.events.append(("patients", "u", None, {"id": pid}))
            return [
                (
                    "update patients set given_name = %s, active = %s, updated_at = now() "
                    "where id = %s",
                    (rng.choice(["Anne", "Robert", "Jonathan", "Mary"]), rng.random() > 0.2, pid),
                )
            ]
        if roll < 0.65 or not mine:
            cid = f"k{self.next_contact:05d}"
            self.next_contact += 1
            self.contacts[cid] = pid
            self.events.append(("patient_contacts", "c", None, {"id": cid, "patient_id": pid}))
            return [
                (
                    "insert into patient_contacts (id, patient_id, kind, value) "
                    "values (%s, %s, %s, %s)",
                    (cid, pid, "phone", f"555-01{rng.randrange(100):02d}-{rng.randrange(10000)}"),
                )
            ]
        cid = rng.choice(mine)
        if roll < 0.80:
            del self.contacts[cid]
            self.events.append(("patient_contacts", "d", {"id": cid}, None))
            return [("delete from patient_contacts where id = %s", (cid,))]
        if roll < 0.90 and len(self.live) > 1:
            other = rng.choice(sorted(self.live - {pid}))
            self.contacts[cid] = other
            self.events.append(("patient_contacts", "u", None, {"id": cid, "patient_id": other}))
            return [("update patient_contacts set patient_id = %s where id = %s", (other, cid))]
        self.events.append(("patient_contacts", "u", None, {"id": cid, "patient_id": pid}))
        return [
            (
                "update patient_contacts set value = %s where id = %s",
                (f"+1 555 01{rng.randrange(100):02d} {rng.randrange(10000)}", cid),
            )
        ]

    def apply(self, conn: psycopg.Connection[Any], changes: int, per_tx: int = 1) -> None:
        """Run `changes` statements against the source, `per_tx` per transaction."""
        done = 0
        while done < changes:
            with conn.transaction():
                for _ in range(per_tx):
                    for stmt, params in self.step():
                        conn.execute(stmt, params)  # type: ignore[arg-type]
                    done += 1


def wait_until(done: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Poll until `done()`; fail with `what` (what never happened) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def identifiers_locked(conn: psycopg.Connection[Any], key_id: int, terms: list[str]) -> bool:
    """Whether the lookup lockout (search_api.ratelimit.locked) holds for these identifiers
    of this key, as a booking lookup asks it."""
    from search_api.ratelimit import locked

    row = conn.execute(sql.SQL("select {}").format(locked(key_id, terms))).fetchone()
    return bool(row and row[0])
