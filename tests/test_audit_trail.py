"""The audit trail on real PostgreSQL: append-only, hash-chained, verifiable, exportable."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import threading
import time

import psycopg
import pytest

from core.audit import (
    AuditFilter,
    AuditRecord,
    AuditUnavailable,
    AuditWriter,
    append,
    chain_hash,
    prune,
    query,
    to_csv,
    to_fhir_bundle,
    to_jsonl,
    verify,
)


def record(n: int, **over: object) -> AuditRecord:
    base: dict[str, object] = dict(
        at=dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=n),
        request_id=f"req-{n}",
        key_id=7,
        clinics=("clinic-a",),
        staff_user="nurse.jones",
        purpose="TREAT",
        source="10.0.0.5",
        action="search",
        outcome=200,
        request=json.dumps({"method": "POST", "path": "/v1/patients/search", "body": '{"q":"x"}'}),
        patient_ids=(f"p{n}", "p0"),
    )
    base.update(over)
    return AuditRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def conn(db_url: str) -> psycopg.Connection:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def test_chain_verifies_and_names_an_edited_row(conn: psycopg.Connection) -> None:
    append(conn, [record(n) for n in range(1, 6)])
    append(conn, [record(6, outcome=401, staff_user=None, patient_ids=())])
    report = verify(conn)
    assert report.ok and report.checked == 6
    # An attacker with database rights bypasses the append-only trigger.
    conn.execute("set session_replication_role = replica")
    conn.execute("update patient_search.audit_log set staff_user = 'someone' where seq = 3")
    report = verify(conn)
    assert not report.ok
    assert report.problems == ["row 3: contents altered (hash mismatch)"]


def test_the_server_hashes_what_verify_recomputes(conn: psycopg.Connection) -> None:
    """The chain is completed in PostgreSQL (audit_append): its hash of a row must be the
    one core.audit.chain_hash gives, whatever the text holds."""
    awkward = [
        record(1, staff_user="José Ñúñez", note='quote " backslash \\ tab \t'),
        record(2, request='{"body":"Zoë 😀 \u2028 line\nbreak"}', purpose=None),
        record(3, staff_user="nul\x00inside", key_id=None, clinics=(), patient_ids=()),
        record(4, source=None, note=None, outcome=503),
    ]
    assert append(conn, awkward[:2]) == 2
    assert append(conn, awkward[2:]) == 4
    rows = conn.execute(
        "select seq, prev_hash, hash, staff_user from patient_search.audit_log order by seq"
    ).fetchall()
    prev = "0" * 64
    for (seq, link, digest, _), rec in zip(rows, awkward, strict=True):
        if seq == 3:  # NUL cannot be stored: it is kept as the text \u0000
            rec = record(3, staff_user="nul\\u0000inside", key_id=None, clinics=(), patient_ids=())
        assert link == prev and digest == chain_hash(prev, seq, rec)
        prev = digest
    assert rows[0][3] == "José Ñúñez"
    assert verify(conn).ok and verify(conn).checked == 4


def test_concurrent_writers_leave_one_gapless_chain(db_url: str, conn: psycopg.Connection) -> None:
    """Writers of several processes take turns at the head inside the server."""

    def write(first: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as own:
            for n in range(first, first + 200, 20):
                append(own, [record(m) for m in range(n, n + 20)])

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [r[0] for r in conn.execute("select seq from patient_search.audit_log order by seq")]
    assert seqs == list(range(1, 801))
    assert verify(conn).ok


def test_verify_names_a_deleted_row_and_a_cut_tail(conn: psycopg.Connection) -> None:
    append(conn, [record(n) for n in range(1, 8)])
    conn.execute("set session_replication_role = replica")
    conn.execute("delete from patient_search.audit_log where seq = 4")
    problems = verify(conn).problems
    assert problems[0] == "row(s) 4 removed (missing before row 5)"
    assert any("row 5: link to the previous row broken" in p for p in problems)
    conn.execute("delete from patient_search.audit_log where seq >= 6")
    problems = verify(conn).problems
    assert "row(s) 6-7 removed from the end of the trail" in problems


def test_table_is_append_only(conn: psycopg.Connection) -> None:
    append(conn, [record(1)])
    for stmt in (
        "update patient_search.audit_log set outcome = 200",
        "delete from patient_search.audit_log",
        "truncate patient_search.audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(stmt)
    assert verify(conn).ok


def test_prune_keeps_the_chain_verifiable(conn: psycopg.Connection) -> None:
    now = dt.datetime.now(dt.UTC)
    old = [record(n, at=now - dt.timedelta(days=3000 - n)) for n in range(5)]
    new = [record(n, at=now - dt.timedelta(days=10)) for n in range(5, 8)]
    append(conn, old + new)
    done = prune(conn, older_than=dt.timedelta(days=2192))
    assert (done.removed, done.through_seq) == (5, 5)
    seqs = [r[0] for r in conn.execute("select seq from patient_search.audit_log order by seq")]
    assert seqs == [6, 7, 8]
    assert verify(conn).ok
    append(conn, [record(9)])
    assert verify(conn).ok
    # Removing the first kept row is still detected after a prune.
    conn.execute("set session_replication_role = replica")
    conn.execute("delete from patient_search.audit_log where seq = 6")
    assert not verify(conn).ok
    with pytest.raises(ValueError, match="fails verification"):
        prune(conn, older_than=dt.timedelta(days=1))


def test_writer_batches_off_the_request_path(db_url: str, conn: psycopg.Connection) -> None:
    writer = AuditWriter(db_url, flush_ms=50).start()
    try:
        for n in range(250):
            writer.submit(record(n))
        deadline = time.monotonic() + 5
        while writer.written < 250 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.written == 250
    finally:
        writer.close()
    assert verify(conn).checked == 250
    # last_used_at is kept current by the writer.
    assert conn.execute("select count(*) from patient_search.audit_log").fetchone() == (250,)


def test_writer_fails_closed_and_keeps_records_while_the_database_is_away(db_url: str) -> None:
    url = db_url + " options='-c lock_timeout=100'"
    writer = AuditWriter(url, flush_ms=20, queue_size=20).start()
    try:
        # The trail becomes unwritable: a lock the writer cannot get in time.
        with psycopg.connect(db_url) as blocker:
            blocker.execute("lock table patient_search.audit_head in access exclusive mode")
            writer.submit(record(1))
            deadline = time.monotonic() + 5
            while writer.healthy and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not writer.healthy
            with pytest.raises(AuditUnavailable):
                writer.submit(record(2))
        deadline = time.monotonic() + 5
        while writer.written < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.healthy and writer.written == 2
    finally:
        writer.close()


def test_query_filters_and_export_formats(conn: psycopg.Connection) -> None:
    from fhir.resources.R4B.bundle import Bundle

    append(
        conn,
        [
            record(1),
            record(2, staff_user="dr.who", clinics=("clinic-b",), patient_ids=("q1",)),
            record(3, action="read", patient_ids=("p3",), purpose=None),
            record(4, outcome=429, patient_ids=(), note="rate limited"),
        ],
    )
    with conn.transaction():
        by_patient = list(query(conn, AuditFilter(patient="p0")))
        by_user = list(query(conn, AuditFilter(user="dr.who")))
        by_clinic = list(query(conn, AuditFilter(clinic="clinic-a")))
        within = list(query(conn, AuditFilter(within=("clinic-b",))))
        since = list(query(conn, AuditFilter(start=dt.datetime(2026, 11, 1, 8, 3, tzinfo=dt.UTC))))
        everything = list(query(conn, AuditFilter()))
    assert [r.seq for r in by_patient] == [1]
    assert [r.seq for r in by_user] == [2]
    assert [r.seq for r in by_clinic] == [1, 3, 4]
    assert [r.seq for r in within] == [2]
    assert [r.seq for r in since] == [3, 4]

    out = io.StringIO()
    assert to_csv(everything, out) == 4
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("seq,at,request_id,key_id,clinics")
    assert "rate limited" in lines[4]

    out = io.StringIO()
    to_jsonl(everything, out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[2]["patient_ids"] == ["p3"] and rows[2]["action"] == "read"

    bundle = to_fhir_bundle(everything, server="https://search.example")
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "collection" and len(parsed.entry) == 4
    events = [e.resource for e in parsed.entry]
    assert all(e.__resource_type__ == "AuditEvent" for e in events)
    first = bundle["entry"][0]["resource"]
    assert first["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
    ]
    assert first["subtype"][0]["code"] == "search" and first["action"] == "E"
    patients = [
        e["what"]["reference"] for e in first["entity"] if e.get("role", {}).get("code") == "1"
    ]
    assert patients == ["Patient/p1", "Patient/p0"]
    query_entity = next(e for e in first["entity"] if e.get("role", {}).get("code") == "24")
    assert "/v1/patients/search" in base64.b64decode(query_entity["query"]).decode()
    user = next(a for a in first["agent"] if a["requestor"])
    assert user["who"]["identifier"]["value"] == "nurse.jones"
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    read = bundle["entry"][2]["resource"]
    assert read["action"] == "R" and read["meta"]["profile"][0].endswith("PatientRead")
    refused = bundle["entry"][3]["resource"]
    assert refused["outcome"] == "4" and refused["meta"]["profile"][0].endswith("Query")


def test_api_role_appends_to_the_audit_trail_but_never_rewrites_it(roles: str) -> None:
    from core.apikeys import touch_keys
    from core.settings import Settings
    from search_api.ratelimit import record_miss
    from tests.factories import identifiers_locked
    from tests.fixtures import connect_as

    record = AuditRecord(
        at=dt.datetime.now(dt.UTC),
        request_id="r1",
        key_id=1,
        clinics=("c1",),
        staff_user=None,
        purpose=None,
        source=None,
        action="search",
        outcome=200,
        request="{}",
    )
    with connect_as(roles, "patient_search_api") as api:
        assert append(api, [record, record]) == 2
        api.execute(
            "select * from patient_search.take_tokens(array['k:1'], array[5.0], array[1.0])"
        ).fetchone()
        record_miss(api, 1, ["tel:+15550100000"], Settings())
        assert not identifiers_locked(api, 1, ["tel:+15550100000"])
        touch_keys(api, [1])
        for stmt in (
            "update patient_search.audit_log set outcome = 500",
            "delete from patient_search.audit_log",
            "truncate patient_search.audit_log",
            "insert into patient_search.audit_prunes (cutoff, through_seq, hash, removed)"
            " values (now(), 1, 'x', 1)",
            "update patient_search.api_keys set scopes = '{audit}'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                api.execute(stmt)
    with psycopg.connect(roles) as conn:
        assert verify(conn).checked == 2 and verify(conn).ok


def test_audit_commands(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit export` in three formats, `audit verify` naming the altered row, `audit prune`."""
    from fhir.resources.R4B.bundle import Bundle

    from core.settings import get_settings
    from patient_search.cli import main

    monkeypatch.setenv("PATIENT_SEARCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        now = dt.datetime.now(dt.UTC)
        with psycopg.connect(db_url, autocommit=True) as conn:
            append(
                conn,
                [
                    record(1, at=now - dt.timedelta(days=40)),
                    record(2, at=now - dt.timedelta(days=3)),
                    record(3, at=now - dt.timedelta(days=2), staff_user="dr.who"),
                ],
            )
        since = (now - dt.timedelta(days=30)).date().isoformat()
        assert main(["audit", "export", "--patient", "p0", "--from", since]) == 0
        rows = capsys.readouterr().out.strip().splitlines()
        assert len(rows) == 3 and rows[1].split(",")[2] == "req-2"  # header + 2 records
        assert main(["audit", "export", "--user", "dr.who", "--format", "jsonl"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert [json.loads(x)["request_id"] for x in lines] == ["req-3"]
        assert main(["audit", "export", "--clinic", "clinic-a", "--format", "fhir"]) == 0
        bundle = Bundle.model_validate_json(capsys.readouterr().out)
        assert len(bundle.entry) == 3
        with pytest.raises(SystemExit):
            main(["audit", "export", "--from", "last tuesday"])
        capsys.readouterr()

        assert main(["audit", "verify"]) == 0
        assert "3 records verified" in capsys.readouterr().out
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("set session_replication_role = replica")
            conn.execute("update patient_search.audit_log set outcome = 200 where seq = 2")
            conn.execute("update patient_search.audit_log set note = 'x' where seq = 3")
        assert main(["audit", "verify"]) == 2
        out = capsys.readouterr().out
        assert "row 3: contents altered" in out and "row 2" not in out
        assert main(["audit", "prune", "--older-than-days", "30"]) == 2  # refuses: tampered
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("set session_replication_role = replica")
            conn.execute("update patient_search.audit_log set note = null where seq = 3")
        capsys.readouterr()
        assert main(["audit", "prune", "--older-than-days", "30"]) == 0
        assert "pruned 1 audit records" in capsys.readouterr().out
        assert main(["audit", "verify"]) == 0
    finally:
        get_settings.cache_clear()
