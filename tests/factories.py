"""Writing source rows in tests: the clinic's tables, as a clinic system would."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import psycopg

_contact_ids = itertools.count(1)


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
