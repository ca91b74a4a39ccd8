"""Benchmark populations that nobody on the team tuned for.

- `census`: US names drawn with the frequencies Faker's en_US person provider
  carries (census tables: Smith 2.2 %, Johnson 1.7 %, ... over 1,000 family
  names; about 700 given names weighted by sex), so common names are as common
  as at a real front desk. Faker's own `first_name()` recomputes its weights at
  every call; we draw from the same tables with one bisect per name instead,
  which is the same distribution at a hundredth of the cost.
- `crowded`: the ten most frequent given names and the ten most frequent family
  names only, spread over the whole population: every name search matches a
  hundredth of a clinic, the worst case for any index that reads all matches.

Rows have exactly the source shape of DESIGN.md; phones are typed in the forms
front desks use. Deterministic for a seed; COPYed in batches, memory flat in n.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from patient_search.names_data import OTHER_AREA_CODES
from patient_search.synthetic import (
    CONTACT_COLUMNS,
    PATIENT_COLUMNS,
    ContactRow,
    PatientRow,
    Weighted,
)

POPULATIONS = ("census", "crowded")
_FIRST_DAY = dt.date(1930, 1, 1).toordinal()
_LAST_DAY = dt.date(2024, 12, 31).toordinal()
_STAMP = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_PHONE_FORMS = (
    "({a}) {e}-{n}",
    "{a}-{e}-{n}",
    "{a}{e}{n}",
    "{a}.{e}.{n}",
    "+1 {a} {e} {n}",
)


def _census_tables() -> tuple[Weighted, Weighted, Weighted]:
    from faker.providers.person.en_US import Provider

    return (
        Weighted(list(Provider.first_names_female.items())),
        Weighted(list(Provider.first_names_male.items())),
        Weighted(list(Provider.last_names.items())),
    )


def _crowded_tables() -> tuple[Weighted, Weighted, Weighted]:
    from faker.providers.person.en_US import Provider

    def top(table: dict[str, float], n: int) -> list[tuple[str, float]]:
        return [(name, 1.0) for name, _ in sorted(table.items(), key=lambda kv: -kv[1])[:n]]

    return (
        Weighted(top(Provider.first_names_female, 5)),
        Weighted(top(Provider.first_names_male, 5)),
        Weighted(top(Provider.last_names, 10)),
    )


def generate(
    n: int, *, population: str = "census", clinics: int = 5, seed: int = 0
) -> Iterator[tuple[PatientRow, list[ContactRow]]]:
    """n patients with their contacts, spread evenly over `clinics` clinics."""
    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}")
    rng = random.Random(seed)
    rnd = rng.random
    female, male, family = _census_tables() if population == "census" else _crowded_tables()
    areas = OTHER_AREA_CODES
    next_mrn = [0] * clinics
    for num in range(1, n + 1):
        site = int(rnd() * clinics)
        next_mrn[site] += 1 + int(rnd() * 2)
        is_female = rnd() < 0.5
        given_table = female if is_female else male
        given = given_table.pick(rnd())
        middle = given_table.pick(rnd()) if rnd() < 0.3 else None
        pid = f"p{num:07d}"
        patient = PatientRow(
            pid,
            f"clinic-{site + 1}",
            f"{next_mrn[site]:08d}",
            given,
            middle,
            family.pick(rnd()),
            dt.date.fromordinal(_FIRST_DAY + int(rnd() * (_LAST_DAY - _FIRST_DAY))),
            "female" if is_female else "male",
            f"{10000 + int(rnd() * 89999):05d}",
            rnd() < 0.97,
            _STAMP,
        )
        contacts: list[ContactRow] = []
        if rnd() < 0.92:
            area = areas[int(rnd() * len(areas))]
            form = _PHONE_FORMS[int(rnd() * len(_PHONE_FORMS))]
            value = form.format(a=area, e=200 + int(rnd() * 800), n=f"{int(rnd() * 10000):04d}")
            contacts.append(ContactRow(f"c{num:07d}-1", pid, "phone", value, "mobile"))
        if rnd() < 0.4:
            local = f"{given}.{patient.family_name}{int(rnd() * 1000)}".lower()
            contacts.append(ContactRow(f"c{num:07d}-2", pid, "email", f"{local}@example.org", None))
        yield patient, contacts


def load(
    conn: psycopg.Connection[Any],
    rows: Iterator[tuple[PatientRow, list[ContactRow]]],
    n: int,
    *,
    batch: int = 50_000,
    progress: bool = True,
) -> int:
    """COPY the rows into the source tables in the caller's transaction; returns the count."""
    from tqdm import tqdm

    patients_sql = f"copy patients ({', '.join(PATIENT_COLUMNS)}) from stdin"
    contacts_sql = f"copy patient_contacts ({', '.join(CONTACT_COLUMNS)}) from stdin"
    written = 0
    with (
        tqdm(total=n, unit=" patients", disable=not progress, file=sys.stderr) as bar,
        conn.cursor() as cur,
    ):
        while True:
            chunk = [row for _, row in zip(range(batch), rows, strict=False)]
            if not chunk:
                return written
            with cur.copy(patients_sql) as copy:
                for patient, _ in chunk:
                    copy.write_row(patient)
            with cur.copy(contacts_sql) as copy:
                for _, contacts in chunk:
                    for contact in contacts:
                        copy.write_row(contact)
            written += len(chunk)
            bar.update(len(chunk))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.population N --population census` into PATIENT_SEARCH_DATABASE_URL."""
    import argparse
    import os

    from core.schema import create_source_tables

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("patients", type=int)
    parser.add_argument("--population", choices=POPULATIONS, default="census")
    parser.add_argument("--clinics", type=int, default=5)
    args = parser.parse_args(argv)
    with psycopg.connect(os.environ["PATIENT_SEARCH_DATABASE_URL"]) as conn:
        create_source_tables(conn)
        rows = generate(args.patients, population=args.population, clinics=args.clinics)
        load(conn, rows, args.patients)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
