"""FHIR facade latency beside the /v1 search it translates to: `python -m bench.fhir`.

    python -m bench.fhir [--patients N] [--queries M] [--seed S]

Loads a synthetic population (as bench.relevance does), then asks the same
patients through /v1/patients/search and through /fhir/Patient, in one process
over the ASGI stack (one client, sequential: this is the cost per request, not
throughput). FHIR searches rank one fixed window of 200 candidates for every
page (so pages never overlap), where /v1 stops at the page asked for; the
table shows what that costs. The kinds without a /v1 twin (year ranges,
:contains, paging) are printed with their own figures only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from typing import Any

import psycopg

from bench.relevance import fresh_database, prepare


def _sample(url: str, n: int, seed: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select p.clinic_id, p.given_name, p.family_name, p.birth_date, p.mrn, "
            "(select value from patient_contacts c where c.patient_id = p.id "
            " and c.kind = 'phone' order by c.id limit 1) "
            "from patients p where p.given_name is not null and p.family_name is not null "
            "and p.birth_date is not null order by hashtext(p.id || %s) limit %s",
            (str(seed), n),
        ).fetchall()


def _pairs(row: tuple[Any, ...], rng: random.Random) -> list[tuple[str, Any, Any]]:
    """(kind, /v1 body or None, FHIR parameters) for one patient."""
    _clinic, given, family, born, mrn, phone = row
    prefix = family[: rng.randint(2, 4)]
    middle = family[1:4] if len(family) >= 4 else family
    pairs: list[tuple[str, Any, Any]] = [
        ("family prefix", {"q": prefix}, {"family": prefix}),
        (
            "name + birth date",
            {"given": given, "family": family, "birthdate": born.isoformat()},
            {"given": given, "family": family, "birthdate": born.isoformat()},
        ),
        ("family + birth year", None, {"family": family, "birthdate": str(born.year)}),
        ("name:contains", None, {"name:contains": middle, "birthdate": str(born.year)}),
    ]
    if mrn:
        pairs.append(("identifier", {"mrn": mrn}, {"identifier": mrn}))
    if phone:
        pairs.append(("phone", {"phone": phone}, {"phone": phone}))
    return pairs


def _timed(call: Any, path: str, **kw: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    response = call(path, **kw)
    assert response.status_code == 200, response.text
    return (time.perf_counter() - started) * 1000, response.json()


def run(patients: int, queries: int, seed: int) -> dict[str, dict[str, list[float]]]:
    from fastapi.testclient import TestClient

    from core.apikeys import create_key
    from core.settings import Settings
    from search_api.app import create_app

    rng = random.Random(seed)
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with fresh_database() as url:
        # One client replays every query as fast as it can: no rate limit applies to it.
        prepare(url, patients, 3, seed)
        settings = Settings(database_url=url, rate_limit_enabled=False)
        rows = _sample(url, queries, seed)
        keys: dict[str, str] = {}
        with psycopg.connect(url) as conn:
            for clinic in sorted({r[0] for r in rows}):
                keys[clinic] = create_key(conn, [clinic], name="bench", scopes=["fhir", "search"])
            conn.commit()
        with TestClient(create_app(settings, url)) as client:
            for row in rows:
                headers = {"Authorization": f"Bearer {keys[row[0]]}"}
                for kind, v1, params in _pairs(row, rng):
                    if v1 is not None:
                        v1_key = {"X-API-Key": keys[row[0]]}
                        ms, _ = _timed(client.post, "/v1/patients/search", json=v1, headers=v1_key)
                        times[kind]["/v1"].append(ms)
                    ms, bundle = _timed(client.get, "/fhir/Patient", params=params, headers=headers)
                    times[kind]["/fhir"].append(ms)
                    nxt = [lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"]
                    if nxt:
                        path = "/" + nxt[0].split("://", 1)[1].split("/", 1)[1]
                        ms, _ = _timed(client.get, path, headers=headers)
                        times["next page"]["/fhir"].append(ms)
    return times


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fhir", description=__doc__)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=150, help="patients asked for")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    times = run(args.patients, args.queries, args.seed)
    print(f"\n{args.patients} patients, {args.queries} sampled; ms per request, one client")
    print("| kind | /v1 p50 | /v1 p95 | /fhir p50 | /fhir p95 | n |")
    print("|---|---|---|---|---|---|")
    for kind, by_api in times.items():
        cells = []
        for api in ("/v1", "/fhir"):
            values = by_api.get(api)
            cells += (
                [f"{statistics.median(values):.1f}", f"{_p(values, 0.95):.1f}"]
                if values
                else ["-", "-"]
            )
        print(f"| {kind} | {' | '.join(cells)} | {len(by_api['/fhir'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
