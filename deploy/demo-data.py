"""One-shot for docker-compose: synthetic clinic data into the source tables, once.

Runs as the database owner (the clinic application's role), like the clinic's own
system would; the service's roles never write the source.
"""

from __future__ import annotations

import os
import sys

import psycopg

from core.schema import create_source_tables
from patient_search.synthetic import load

url = os.environ["DEMO_DATABASE_URL"]
patients = int(os.environ.get("DEMO_PATIENTS", "20000"))
with psycopg.connect(url) as conn:
    create_source_tables(conn)
    (count,) = conn.execute("select count(*) from patients").fetchone() or (0,)
    if count:
        print(f"source already holds {count} patients; nothing to do", file=sys.stderr)
    else:
        load(conn, patients, clinics=3, seed=7, progress=False)
        print(f"loaded {patients} synthetic patients", file=sys.stderr)
    conn.commit()
