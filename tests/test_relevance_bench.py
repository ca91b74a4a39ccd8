"""The relevance benchmark's parts: query generator, metrics, and the two baselines."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.queries import (
    KINDS,
    Query,
    digits10,
    dob_one_digit_wrong,
    make_queries,
    spacing_variant,
    strip_accents,
    typo_transposition,
)
from bench.relevance import (
    BASELINE_INDEXES,
    Metrics,
    check_targets,
    evaluate,
    markdown,
    mrr,
    rank_of,
    recall_at,
    trgm_baseline,
    tsvector_baseline,
)
from patient_search.synthetic import ContactRow, PatientRow, generate, load


@pytest.fixture(scope="module")
def population() -> list[tuple[PatientRow, list[ContactRow]]]:
    return list(generate(3_000, clinics=3, seed=1))


def test_every_kind_is_produced_and_every_target_exists(
    population: list[tuple[PatientRow, list[ContactRow]]],
) -> None:
    queries = make_queries(population, 5, seed=2)
    by_id = {p.id: p for p, _ in population}
    assert {q.kind for q in queries} == set(KINDS)
    for q in queries:
        target = by_id[q.target_id]
        assert q.clinic_id == target.clinic_id
        assert target.active
        assert q.q.strip() and q.group == KINDS[q.kind][0]
    assert make_queries(population, 5, seed=2) == queries  # deterministic


def test_queries_carry_the_error_they_claim(
    population: list[tuple[PatientRow, list[ContactRow]]],
) -> None:
    queries = make_queries(population, 20, seed=3)
    by_id = {p.id: (p, cs) for p, cs in population}
    for q in queries:
        p, contacts = by_id[q.target_id]
        if q.kind == "mrn":
            assert q.q == p.mrn
        elif q.kind == "mrn_label":
            assert "mrn" in q.q.lower() and (p.mrn or "") in q.q
        elif q.kind == "last_first":
            assert "," in q.q
        elif q.kind == "dob_iso":
            assert p.birth_date is not None and p.birth_date.isoformat() in q.q
        elif q.kind == "dob_compact":
            assert p.birth_date is not None and p.birth_date.strftime("%Y%m%d") in q.q
        elif q.kind.startswith("phone_") and not q.kind.endswith("_name"):
            phones = {digits10(c.value) for c in contacts if c.kind == "phone"}
            assert digits10(q.q) in phones
        elif q.kind == "email":
            assert q.q.lower() in {c.value.lower() for c in contacts if c.kind == "email"}
        elif q.kind == "prefix":
            assert len(q.q) == 6 and q.q[3] == " "


def test_name_mistakes() -> None:
    rng = random.Random(0)
    assert typo_transposition("ab", rng) is None
    swapped = typo_transposition("Smith", rng)
    assert swapped and sorted(swapped) == sorted("Smith") and swapped != "Smith"
    assert spacing_variant("Garcia-Lopez", random.Random(1)) in ("Garcia Lopez", "GarciaLopez")
    assert spacing_variant("Mc Donald", rng) == "McDonald"
    assert spacing_variant("McDonald", rng) == "Mc Donald"
    assert spacing_variant("Smith", rng) is None
    assert strip_accents("Nguyễn Đặng Łukasz Zoë") == "Nguyen Dang Lukasz Zoe"
    wrong = dob_one_digit_wrong(dt.date(1985, 3, 14), rng)
    assert wrong and wrong != "03/14/1985" and len(wrong) == 10


def test_metrics_on_a_hand_made_example() -> None:
    results = {
        "a": ["a", "x", "y"],  # rank 1
        "b": ["x", "y", "b"],  # rank 3
        "c": ["x"] * 10,  # absent
        "d": ["x", "d"],  # rank 2
    }
    ranks = [rank_of(t, ids) for t, ids in results.items()]
    assert ranks == [1, 3, None, 2]
    assert recall_at(ranks, 1) == 0.25
    assert recall_at(ranks, 10) == 0.75
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert recall_at([], 1) == 0.0 and mrr([]) == 0.0
    m = Metrics.of(ranks)
    assert (m.n, m.r1, m.r10) == (4, 0.25, 0.75)


def test_targets_and_table() -> None:
    good, bad = Metrics(10, 1.0, 1.0, 1.0), Metrics(10, 0.5, 0.9, 0.6)
    summary = {
        "kinds": {
            "exact": {"ours": good, "pg_trgm": bad},
            "dob_iso": {"ours": bad, "pg_trgm": good},
        },
        "groups": {
            "name": {"ours": good, "pg_trgm": bad},
            "name_dob": {"ours": bad, "pg_trgm": good},
        },
    }
    targets = check_targets(summary)
    assert targets["name_recall@10"]["met"] is True
    assert targets["name_dob_recall@1"]["met"] is False
    assert targets["no_kind_below_a_baseline"]["below"]
    assert targets["met"] is False
    table = markdown(summary, ["ours", "pg_trgm"], {"exact": 0.25})
    assert table.splitlines()[0].startswith("| kind | group | n | shared | ours R@1")
    assert "| exact | name | 10 | 0.25 | 1.000 |" in table


def test_baselines_return_ranked_ids(db_url: str) -> None:
    population = list(generate(200, clinics=2, seed=4))
    queries = make_queries(population, 2, seed=4, kinds=["exact", "typo_dropped", "mrn"])
    with psycopg.connect(db_url) as conn:
        load(conn, 200, clinics=2, seed=4)
        for ddl in BASELINE_INDEXES:
            conn.execute(ddl)
        conn.commit()
        exact = [q for q in queries if q.kind == "exact"]
        for q in exact:
            ids = trgm_baseline(conn, q.q, q.clinic_id)
            assert 1 <= len(ids) <= 10 and len(set(ids)) == len(ids)
            assert q.target_id in ids
            assert tsvector_baseline(conn, q.q, q.clinic_id)[0:10]
            assert q.target_id in tsvector_baseline(conn, q.q, q.clinic_id)
        mrn = next(q for q in queries if q.kind == "mrn")
        assert tsvector_baseline(conn, mrn.q, mrn.clinic_id) == []  # names only
        other_clinic = "clinic-2" if exact[0].clinic_id == "clinic-1" else "clinic-1"
        assert exact[0].target_id not in trgm_baseline(conn, exact[0].q, other_clinic)


def test_searches_cut_short_by_the_deadline_are_counted_per_kind(db_url: str) -> None:
    """A search the engine cut short (its Prometheus counter rose) is told apart from a
    ranking miss: load lowers recall without any error."""
    from engines.pg_search import SEARCH_DEADLINES

    queries = [
        Query("exact", "name", "ann lee", "p1", "clinic-1"),
        Query("prefix_2", "prefix", "an", "p1", "clinic-1"),
        Query("exact", "name", "bo li", "p2", "clinic-1"),
    ]

    def cut_on_prefix(conn: psycopg.Connection[Any], q: str, clinic_id: str) -> list[str]:
        if len(q) == 2:  # as the engine does when the deadline passes between passes
            SEARCH_DEADLINES.inc()
        return ["p1"]

    def steady(conn: psycopg.Connection[Any], q: str, clinic_id: str) -> list[str]:
        return []

    with psycopg.connect(db_url) as conn:
        outcome = evaluate(conn, queries, {"ours": cut_on_prefix, "other": steady}, progress=False)
    assert outcome.cut_short["ours"] == {"prefix_2": 1}
    assert not outcome.cut_short["other"]
    assert outcome.ranks["ours"]["exact"] == [1, None]


def test_query_is_frozen() -> None:
    q = Query("exact", "name", "john smith", "p0000001", "clinic-1")
    with pytest.raises(AttributeError):
        q.q = "x"  # type: ignore[misc]


def test_a_kept_database_is_built_once_and_asked_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--data-dir: two runs (two trees of the code, in use) ask one build, so their figures
    differ only by the code; a kept build of another population is refused."""
    from bench.relevance import run

    kept = tmp_path / "db"
    first = run(
        patients=300, queries=84, seed=3, clinics=2, json_path=tmp_path / "a.json", data_dir=kept
    )
    assert "asking the database built before" not in capsys.readouterr().err
    again = run(
        patients=300, queries=84, seed=3, clinics=2, json_path=tmp_path / "b.json", data_dir=kept
    )
    assert "asking the database built before" in capsys.readouterr().err
    assert again["kinds"] == first["kinds"] and again["misses"] == first["misses"]
    assert first["kinds"]["exact"]["ours"]["recall@10"] > 0  # our search answered
    with pytest.raises(SystemExit, match="holds"):
        run(
            patients=301,
            queries=84,
            seed=3,
            clinics=2,
            json_path=tmp_path / "c.json",
            data_dir=kept,
        )
