"""Load benchmark at scale: `python -m bench.load --patients 1000000`.

1. Generates N synthetic patients with COPY (rate reported), unless the
   benchmark database already holds them (`--fresh` to regenerate).
2. Reindexes them with `patient-search reindex` in a child process, reporting
   the rate and the child's peak RSS.
3. Starts the API as in production (`patient-search serve --workers W`) and
   drives it from a separate process with C concurrent clients and a mix of
   query kinds; then drives a bare FastAPI endpoint served the same way, as
   the ceiling.
4. Prints a markdown table (p50/p95/p99 per kind, throughput, errors, share
   of time in the engine from Server-Timing, API RSS) and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from core.apikeys import create_key
from core.database import start_embedded
from core.schema import create_source_tables, migrate

RESULTS = Path("bench/results")
CLI = str(Path(sys.executable).parent / "patient-search")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


Request = tuple[str, str, dict[str, Any], str]  # kind, path, body, clinic


def build_mix(url: str, n: int, seed: int) -> list[Request]:
    """(kind, path, body, clinic) requests from real rows, in a realistic proportion."""
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select p.clinic_id, p.given_name, p.family_name, p.birth_date, p.mrn, "
            "(select value from patient_contacts c where c.patient_id = p.id and c.kind = 'phone' "
            " order by c.id limit 1) "
            "from patients p where p.active order by hashtext(p.id) limit %s",
            (n,),
        ).fetchall()
    mix: list[Request] = []
    search = "/v1/patients/search"
    for clinic, given, family, born, mrn, phone in rows:
        given, family = given or "a", family or "b"
        kinds: list[tuple[str, str, dict[str, Any]]] = [
            ("prefix", search, {"q": family[: rng.randint(2, 4)]}),
            ("prefix", search, {"q": f"{family[:3]} {given[:2]}"}),
            ("typo_name", search, {"q": f"{_typo(given, rng)} {_typo(family, rng)}"}),
        ]
        if born:
            kinds.append(("name_dob", search, {"q": f"{given} {family} {born:%m/%d/%Y}"}))
        if phone:
            kinds.append(("phone", search, {"q": phone}))
        if mrn:
            kinds.append(("mrn", search, {"q": f"MRN {mrn}"}))
        if phone and born:
            kinds.append(
                ("lookup", "/v1/patients/lookup", {"phone": phone, "birthdate": born.isoformat()})
            )
        mix.extend((kind, path, body, clinic) for kind, path, body in kinds)
    rng.shuffle(mix)
    return mix


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: one write per request, so neither Nagle's
    algorithm nor a heavy client library adds to the latency being measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, key: str) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _drive(
    base: str,
    keys: dict[str, str],
    requests: list[Request],
    clients: int,
    seconds: float,
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {}
    engine_ms: list[float] = []
    total_ms: list[float] = []
    errors: dict[str, int] = {}
    counter = 0
    deadline = time.perf_counter() + seconds
    host, port = base.removeprefix("http://").split(":")
    bodies = [json.dumps(body).encode() for _, _, body, _ in requests]

    async def worker() -> None:
        nonlocal counter
        conn = _Connection(host, int(port))
        while time.perf_counter() < deadline:
            i = counter % len(requests)
            kind, path, _, clinic = requests[i]
            counter += 1
            started = time.perf_counter()
            try:
                status, headers = await asyncio.wait_for(
                    conn.post(path, bodies[i], keys.get(clinic, "")), timeout=10
                )
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                status, headers = 0, {}
            elapsed = (time.perf_counter() - started) * 1000
            if status != 200:
                errors[kind] = errors.get(kind, 0) + 1
                continue
            latencies.setdefault(kind, []).append(elapsed)
            timing = headers.get("server-timing", "")
            parts = dict(p.strip().split(";dur=") for p in timing.split(",") if ";dur=" in p)
            if parts:
                engine_ms.append(float(parts["engine"]))
                total_ms.append(float(parts["total"]))
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "latencies": latencies,
        "errors": errors,
        "engine_share": sum(engine_ms) / sum(total_ms) if total_ms else None,
    }


def _drive_process(args: tuple[str, dict[str, str], list[Any], int, float, str]) -> None:
    base, keys, requests, clients, seconds, out = args
    result = asyncio.run(_drive(base, keys, requests, clients, seconds))
    Path(out).write_text(json.dumps(result))


def drive(
    base: str, keys: dict[str, str], requests: list[Any], clients: int, seconds: float
) -> dict[str, Any]:
    """Run the clients in a separate process so they do not share the API's interpreter."""
    out = RESULTS / f".drive-{os.getpid()}.json"
    proc = mp.get_context("spawn").Process(
        target=_drive_process, args=((base, keys, requests, clients, seconds, str(out)),)
    )
    proc.start()
    proc.join()
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return data


def _wait_ready(base: str, path: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(base + path, timeout=2).status_code in (200, 405):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {base} did not become ready")


def _rss_tree_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--clinics", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=".patient-search-bench")
    parser.add_argument("--fresh", action="store_true", help="regenerate the population")
    parser.add_argument("--skip-reindex", action="store_true")
    parser.add_argument(
        "--contacts-index",
        action="store_true",
        help="add an index on patient_contacts(patient_id); default: the source exactly as"
        " DESIGN.md shows it (primary keys only)",
    )
    parser.add_argument("--json", default=str(RESULTS / "load.json"))
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "patients": args.patients,
        "clients": args.clients,
        "workers": args.workers,
        "seconds": args.seconds,
    }

    url = os.environ.get("PATIENT_SEARCH_DATABASE_URL") or start_embedded(Path(args.data_dir))
    env = {**os.environ, "PATIENT_SEARCH_DATABASE_URL": url}
    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        migrate(conn)
        have = conn.execute("select count(*) from patients").fetchone()[0]  # type: ignore[index]
        if args.fresh or have != args.patients:
            from patient_search.synthetic import load

            conn.execute("truncate patients cascade")
            conn.commit()
            print(f"generating {args.patients:,} patients ...", file=sys.stderr)
            started = time.perf_counter()
            load(conn, args.patients, clinics=args.clinics, seed=11, progress=True)
            conn.commit()
            seconds = time.perf_counter() - started
            report["generate"] = {
                "seconds": round(seconds, 1),
                "patients_per_s": round(args.patients / seconds),
            }
        if args.contacts_index:
            conn.execute(
                "create index if not exists bench_contacts_patient on patient_contacts (patient_id)"
            )
        else:
            for (name,) in conn.execute(
                "select indexname from pg_indexes where tablename = 'patient_contacts' "
                "and indexname <> 'patient_contacts_pkey'"
            ).fetchall():
                conn.execute(f'drop index "{name}"')
        report["contacts_index"] = args.contacts_index
        conn.commit()
        clinics = [r[0] for r in conn.execute("select distinct clinic_id from patients")]
        # One key per clinic, as front desks have: each query asks in its patient's clinic.
        keys = {c: create_key(conn, [c], name=f"bench {c}") for c in clinics}
        conn.commit()

    if not args.skip_reindex:
        started = time.perf_counter()
        subprocess.run([CLI, "reindex"], env=env, check=True)
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report["reindex"] = {
            "seconds": round(seconds, 1),
            "patients_per_s": round(args.patients / seconds),
            "peak_rss_mb": round(peak_mb, 1),
        }
        print(f"reindex: {seconds:.1f} s, peak RSS {peak_mb:.0f} MB", file=sys.stderr)

    mix = build_mix(url, 3000, seed=5)
    port = _free_port()
    api = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", str(args.workers)],
        env={**env, "PATIENT_SEARCH_POOL_MAX_SIZE": "10", "PATIENT_SEARCH_LOG_LEVEL": "WARNING"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, "/readyz")
        drive(base, keys, mix[:200], 10, 5)  # warm caches and connections
        print(f"driving the API: {args.clients} clients, {args.seconds:.0f} s ...", file=sys.stderr)
        api_run = drive(base, keys, mix, args.clients, args.seconds)
        print("one client alone: service time ...", file=sys.stderr)
        alone = drive(base, keys, mix, 1, min(args.seconds, 15))
        api_rss = _rss_tree_mb(api.pid)
    finally:
        api.terminate()
        api.wait(timeout=30)

    port = _free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, "/bare")
        print("driving the bare endpoint ...", file=sys.stderr)
        bare_run = drive(
            base, keys, [("bare", "/bare", {}, "")], args.clients, min(args.seconds, 15)
        )
    finally:
        bare.terminate()
        bare.wait(timeout=30)

    kinds = {}
    for kind, values in sorted(api_run["latencies"].items()):
        kinds[kind] = {
            "requests": len(values),
            "errors": api_run["errors"].get(kind, 0),
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(_percentile(values, 95), 1),
            "p99_ms": round(_percentile(values, 99), 1),
        }
    for kind, values in sorted(alone["latencies"].items()):
        kinds.setdefault(kind, {"requests": 0, "errors": 0})
        kinds[kind]["alone_p50_ms"] = round(statistics.median(values), 1)
        kinds[kind]["alone_p95_ms"] = round(_percentile(values, 95), 1)
    total = sum(len(v) for v in api_run["latencies"].values())
    bare_total = sum(len(v) for v in bare_run["latencies"].values())
    report["api"] = {
        "kinds": kinds,
        "throughput_rps": round(total / api_run["wall_s"], 1),
        "errors": sum(api_run["errors"].values()),
        "engine_time_share": round(api_run["engine_share"] or 0, 3),
        "rss_mb": round(api_rss, 1),
    }
    report["bare"] = {"throughput_rps": round(bare_total / bare_run["wall_s"], 1)}
    report["api"]["share_of_bare"] = round(
        report["api"]["throughput_rps"] / max(report["bare"]["throughput_rps"], 1), 3
    )
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Load at {report['patients']:,} patients, {report['clients']} clients, "
        f"{report['workers']} workers, {report['seconds']:.0f} s",
        "",
        "| kind | requests | errors | p50 ms | p95 ms | p99 ms | alone p50 ms | alone p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, k in report["api"]["kinds"].items():
        lines.append(
            f"| {kind} | {k['requests']} | {k['errors']} | {k['p50_ms']} | {k['p95_ms']} | "
            f"{k.get('p99_ms')} | {k.get('alone_p50_ms')} | {k.get('alone_p95_ms')} |"
        )
    api = report["api"]
    lines += [
        "",
        f"- API throughput: {api['throughput_rps']} req/s; bare FastAPI endpoint: "
        f"{report['bare']['throughput_rps']} req/s; ratio {api['share_of_bare']}",
        f"- errors: {api['errors']}; share of request time in the engine: "
        f"{api['engine_time_share']}; API RSS (all workers): {api['rss_mb']} MB",
    ]
    if "generate" in report:
        g = report["generate"]
        lines.append(f"- generate: {g['seconds']} s ({g['patients_per_s']:,} patients/s)")
    if "reindex" in report:
        r = report["reindex"]
        index = "with" if report.get("contacts_index") else "without (as DESIGN.md)"
        lines.append(
            f"- reindex: {r['seconds']} s ({r['patients_per_s']:,} patients/s), "
            f"peak RSS {r['peak_rss_mb']} MB; source {index} an index on "
            "patient_contacts(patient_id)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
