"""`patient-search demo`: everything embedded, ready in well under a minute.

PostgreSQL from the wheel, the clinic's reference tables filled with a
synthetic population, the projection rebuilt with a progress bar, the CDC
indexer following changes in a child process, and the API with its search
page. Ctrl-C stops it all; the data stays in PATIENT_SEARCH_DATA_DIR.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from core.apikeys import create_key
from core.database import exit_cleanly_on_sigterm, resolve_database_url
from core.schema import create_source_tables, migrate
from core.settings import Settings
from indexer.reindex import reindex
from indexer.source import count_patients


def _prepare(url: str, settings: Settings, patients: int) -> list[str]:
    from patient_search.synthetic import load

    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        migrate(conn)
        if count_patients(conn, schema=settings.source_schema) == 0:
            print(f"Generating {patients:,} synthetic patients ...", file=sys.stderr)
            load(conn, patients, clinics=3, seed=7, progress=True)
        conn.commit()
        clinics = [r[0] for r in conn.execute("select distinct clinic_id from patients order by 1")]
    reindex(url, settings, progress=True)
    return clinics


def _example_queries(url: str) -> list[str]:
    """Real rows of the demo data, so the printed examples find someone."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select p.given_name, p.family_name, p.birth_date, p.mrn, c.value "
            "from patients p join patient_contacts c on c.patient_id = p.id and c.kind = 'phone' "
            "where p.active and p.clinic_id = 'clinic-1' order by p.id limit 1"
        ).fetchone()
    if not row:
        return ["smith"]
    given, family, born, mrn, phone = row
    typo = family[:2] + family[3] + family[2] + family[4:] if len(family) > 4 else family  # swap
    return [
        f"{family}, {given}",
        f"{given[:3]} {typo} {born:%m/%d/%Y}" if born else f"{given} {typo}",
        phone,
        f"MRN {mrn}" if mrn else family[:3],
    ]


def run_demo(settings: Settings, *, host: str, port: int, patients: int) -> int:
    import json

    import uvicorn

    from search_api.app import create_app

    url = resolve_database_url(settings)
    clinics = _prepare(url, settings, patients)
    with psycopg.connect(url) as conn:
        key = create_key(conn, clinics, name="demo")
    env = {**os.environ, "PATIENT_SEARCH_DATABASE_URL": url}
    indexer = subprocess.Popen([sys.executable, "-m", "indexer"], env=env)
    base = f"http://{host}:{port}"
    print("\nPatient search demo is up.")
    print(f"  Search page : {base}/  (paste the demo API key printed below; never put it in a URL)")
    print(f"  API docs    : {base}/docs")
    print(f"  Clinics     : {', '.join(clinics)}")
    print("  Try:")
    for q in _example_queries(url):
        body = json.dumps({"q": q, "limit": 5})
        print(
            f"    curl -s {base}/v1/patients/search -H 'X-API-Key: {key}' "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )
    print(f"  Demo API key (all demo clinics):\n{key}\n", flush=True)
    exit_cleanly_on_sigterm()
    try:
        uvicorn.run(
            create_app(settings, url), host=host, port=port, log_config=None, access_log=False
        )
    finally:
        indexer.terminate()
        try:
            indexer.wait(timeout=15)
        except subprocess.TimeoutExpired:
            indexer.kill()
    return 0
