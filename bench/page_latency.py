"""Search page latency: `python -m bench.page_latency --patients 1000000`.

From a keystroke to the results drawn on screen, as a member of staff sees it:
headless Chromium types real queries into the page, one key at a time at a
typist's pace, against `patient-search serve` on PostgreSQL holding N
synthetic patients (generated and reindexed unless already there, as
bench.load does). The page marks every keystroke and measures, at the next
frame after the answer to the last key is drawn, the time since that key
(`performance.measure('ps-keystroke-to-results')`). That time includes the
page's debounce (120 ms), the HTTP round trip, the search and the rendering;
the figures beside it split out the API's own time (Server-Timing `total`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.browser import chromium, missing
from bench.load import _free_port, _typo, _wait_ready
from core.apikeys import create_key
from core.database import start_embedded
from core.schema import create_source_tables, migrate

CLI = str(Path(sys.executable).parent / "patient-search")
RESULTS = Path("bench/results")
DEBOUNCE_MS = 120  # search_page.js


def queries(url: str, n: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, text, clinic) as staff type them, from real rows."""
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select p.clinic_id, p.given_name, p.family_name, p.birth_date, "
            "(select value from patient_contacts c where c.patient_id = p.id and c.kind = 'phone'"
            " order by c.id limit 1) "
            "from patients p where p.active and p.given_name is not null "
            "and p.family_name is not null order by hashtext(p.id) limit %s",
            (n,),
        ).fetchall()
    out: list[tuple[str, str, str]] = []
    for i, (clinic, given, family, born, phone) in enumerate(rows):
        kind = ("typo_name", "prefix", "name_dob", "phone")[i % 4]
        if kind == "typo_name":
            out.append((kind, f"{_typo(given, rng)} {_typo(family, rng)}", clinic))
        elif kind == "prefix":
            out.append((kind, f"{family[:4]} {given[:2]}", clinic))
        elif kind == "name_dob" and born:
            out.append((kind, f"{family} {given} {born:%m/%d/%Y}", clinic))
        elif kind == "phone" and phone:
            out.append((kind, phone, clinic))
    return out


def type_and_measure(driver: Any, text: str, key_gap_s: float) -> float:
    """Type `text` into an empty search box; ms from its last key to its results drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "q")
    box.send_keys(Keys.ESCAPE)  # the page's own clear
    driver.execute_script("performance.clearMeasures(); performance.clearMarks();")
    for ch in text:
        box.send_keys(ch)
        time.sleep(key_gap_s)
    WebDriverWait(driver, 15, poll_frequency=0.02).until(
        lambda d: d.execute_script(
            "return performance.getEntriesByName('ps-keystroke-to-results').length"
        )
    )
    return float(
        driver.execute_script(
            "const m = performance.getEntriesByName('ps-keystroke-to-results');"
            "return m[m.length - 1].duration"
        )
    )


def api_ms(base: str, key: str, text: str) -> float:
    r = httpx.post(
        f"{base}/v1/patients/search",
        json={"q": text, "limit": 15},
        headers={"X-API-Key": key},
        timeout=10,
    )
    timing = dict(
        p.strip().split(";dur=") for p in r.headers.get("server-timing", "").split(",") if p
    )
    return float(timing.get("total", "nan"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    url = os.environ.get("PATIENT_SEARCH_DATABASE_URL") or start_embedded(Path(args.data_dir))
    env = {**os.environ, "PATIENT_SEARCH_DATABASE_URL": url}
    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        migrate(conn)
        have = conn.execute("select count(*) from patients").fetchone()[0]  # type: ignore[index]
        fresh = args.fresh or have != args.patients
        if fresh:
            from patient_search.synthetic import load

            conn.execute("truncate patients cascade")
            conn.commit()
            print(f"generating {args.patients:,} patients ...", file=sys.stderr)
            load(conn, args.patients, clinics=args.clinics, seed=11, progress=True)
        conn.commit()
        clinics = [r[0] for r in conn.execute("select distinct clinic_id from patients")]
        keys = {c: create_key(conn, [c], name=f"page bench {c}") for c in clinics}
        conn.commit()
    if fresh or not args.skip_reindex:
        subprocess.run([CLI, "reindex"], env=env, check=True)
    return url, keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--clinics", type=int, default=5)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--key-gap-ms", type=float, default=80, help="pause between keys")
    parser.add_argument("--data-dir", default=".patient-search-bench-page")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--skip-reindex", action="store_true")
    parser.add_argument("--json", default=str(RESULTS / "page_latency.json"))
    args = parser.parse_args(argv)
    if (why := missing()) is not None:
        print(f"no browser: {why}", file=sys.stderr)
        return 2
    url, keys = prepare(args)
    mix = queries(url, args.queries, seed=3)
    port = _free_port()
    env = {**os.environ, "PATIENT_SEARCH_DATABASE_URL": url, "PATIENT_SEARCH_LOG_LEVEL": "WARNING"}
    api = subprocess.Popen([CLI, "serve", "--port", str(port)], env=env)
    driver = chromium()
    page: dict[str, list[float]] = {}
    server: dict[str, list[float]] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, "/readyz")
        by_clinic: dict[str, list[tuple[str, str]]] = {}
        for kind, text, clinic in mix:
            by_clinic.setdefault(clinic, []).append((kind, text))
        for clinic, items in by_clinic.items():
            driver.get(base + "/")
            driver.execute_script(
                "sessionStorage.setItem('patient-search.key', arguments[0])", keys[clinic]
            )
            driver.get(base + "/")
            type_and_measure(driver, "warm", 0.0)
            for kind, text in items:
                page.setdefault(kind, []).append(
                    type_and_measure(driver, text, args.key_gap_ms / 1000)
                )
                server.setdefault(kind, []).append(api_ms(base, keys[clinic], text))
    finally:
        driver.quit()
        api.terminate()
        api.wait(timeout=30)
    report = summarize(args, page, server)
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def summarize(
    args: argparse.Namespace, page: dict[str, list[float]], server: dict[str, list[float]]
) -> dict[str, Any]:
    every = [v for values in page.values() for v in values]
    rows = {
        kind: {
            "n": len(values),
            "page_p50_ms": round(statistics.median(values), 1),
            "page_p95_ms": round(pct(values, 0.95), 1),
            "api_p50_ms": round(statistics.median(server[kind]), 1),
            "api_p95_ms": round(pct(server[kind], 0.95), 1),
        }
        for kind, values in sorted(page.items())
    }
    return {
        "patients": args.patients,
        "queries": len(every),
        "key_gap_ms": args.key_gap_ms,
        "debounce_ms": DEBOUNCE_MS,
        "page_p50_ms": round(statistics.median(every), 1),
        "page_p95_ms": round(pct(every, 0.95), 1),
        "kinds": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Keystroke to rendered results, {report['patients']:,} patients, "
        f"{report['queries']} queries typed at {report['key_gap_ms']:.0f} ms a key "
        f"(includes the page's {report['debounce_ms']} ms debounce)",
        "",
        "| kind | n | page p50 ms | page p95 ms | API p50 ms | API p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in report["kinds"].items():
        lines.append(
            f"| {kind} | {r['n']} | {r['page_p50_ms']} | {r['page_p95_ms']} | "
            f"{r['api_p50_ms']} | {r['api_p95_ms']} |"
        )
    lines.append(
        f"| all | {report['queries']} | {report['page_p50_ms']} | {report['page_p95_ms']} | | |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
