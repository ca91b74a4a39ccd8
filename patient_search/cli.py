"""Command line entry point (`patient-search`); each command is a plain function."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from core.database import exit_cleanly_on_sigterm, prewarm_in_background, resolve_database_url
from core.logging import configure_logging
from core.schema import migrate, migrate_or_check
from core.settings import Settings, configure_normalizers, get_settings

log = logging.getLogger("patient_search")


def _source_hints(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """What the operator could change on the clinic's side (we never alter its tables)."""
    from indexer.source import contacts_index_hint

    hint = contacts_index_hint(conn, schema=settings.source_schema)
    if hint:
        print(hint)


@contextmanager
def _migrated(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a schema brought up to date (committed before the command's own work)."""
    with psycopg.connect(url) as conn:
        migrate(conn)
        conn.commit()
        yield conn


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url = resolve_database_url(settings)
    with psycopg.connect(url) as conn:
        applied = migrate(conn)
        print(f"schema patient_search up to date (applied: {applied or 'none'})")
        _source_hints(conn, settings)
    return 0


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> int:
    from indexer.reindex import reindex

    url = resolve_database_url(settings)
    with psycopg.connect(url) as conn:
        migrate(conn)
    count = reindex(url, settings, clinic_id=args.clinic, progress=not args.quiet)
    print(f"reindexed {count} patients")
    if settings.meili_url:
        from indexer.meili_sink import rebuild_meili

        count = rebuild_meili(url, settings, progress=not args.quiet)
        print(f"rebuilt the Meilisearch index with {count} patients")
    return 0


def cmd_indexer(settings: Settings, args: argparse.Namespace) -> int:
    from indexer.runner import start

    return start(settings, once=args.once)


def cmd_meili_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Least-privilege Meilisearch keys for the API and the indexer, from the master key."""
    from engines.meili import ensure_keys, make_client

    if not settings.meili_url:
        raise SystemExit("set PATIENT_SEARCH_MEILI_URL")
    master = os.environ.get(args.master_key_env)
    if not master:
        raise SystemExit(f"set {args.master_key_env} to the Meilisearch master key")
    keys = ensure_keys(make_client(settings.meili_url, master, 10.0), settings.meili_index)
    print(f"MEILI_API_KEY={keys['api']}")
    print(f"MEILI_INDEXER_KEY={keys['indexer']}")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from patient_search import serving

    url = resolve_database_url(settings)
    migrate_or_check(url)
    if not settings.database_url:  # the embedded server is this service's alone
        prewarm_in_background(url)
    # Workers inherit the resolved URL instead of each starting a server, and the
    # worker count, so each sizes its connection pool to its share of the cores.
    os.environ["PATIENT_SEARCH_DATABASE_URL"] = url
    workers = args.workers or settings.workers
    os.environ["PATIENT_SEARCH_WORKERS"] = str(workers)
    exit_cleanly_on_sigterm()
    serving.run(
        "search_api.asgi:app",
        host=args.host,
        port=args.port,
        workers=workers,
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    from core.apikeys import create_key, normalize_scopes

    url = resolve_database_url(settings)
    try:
        scopes = normalize_scopes(args.scope) if args.scope else None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    with _migrated(url) as conn:
        key = create_key(
            conn,
            args.clinic,
            name=args.name,
            scopes=scopes,
            require_user=args.require_user,
            expires_days=args.expires,
        )
    granted = " ".join(scopes or ("search", "lookup", "read"))
    print(
        f"API key for clinics {', '.join(args.clinic)}, scopes {granted}"
        f"{', staff user required' if args.require_user else ''}"
        f"{f', expires in {args.expires:g} days' if args.expires else ''}"
        " (shown once, store it now):"
    )
    print(key)
    return 0


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else "-"


def cmd_apikey_list(settings: Settings, args: argparse.Namespace) -> int:
    from core.apikeys import list_keys

    url = resolve_database_url(settings)
    with _migrated(url) as conn:
        keys = list_keys(conn)
    header = (
        "id",
        "name",
        "clinics",
        "scopes",
        "user",
        "created",
        "expires",
        "last used",
        "status",
    )
    rows = [
        (
            str(k.id),
            k.name or "-",
            ",".join(k.clinics),
            ",".join(k.scopes),
            "required" if k.require_user else "-",
            _when(k.created_at),
            _when(k.expires_at),
            _when(k.last_used_at),
            k.status + (f" (rotated from {k.rotated_from})" if k.rotated_from else ""),
        )
        for k in keys
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_apikey_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from core.apikeys import revoke_key

    url = resolve_database_url(settings)
    with _migrated(url) as conn:
        done = revoke_key(conn, args.id)
    if not done:
        print(f"no active API key {args.id}", file=sys.stderr)
        return 1
    print(f"API key {args.id} revoked; every API process refuses it within a second")
    return 0


def cmd_apikey_rotate(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt

    from core.apikeys import rotate_key

    url = resolve_database_url(settings)
    hours = settings.key_rotation_grace_hours if args.grace_hours is None else args.grace_hours
    with _migrated(url) as conn:
        try:
            new_id, key = rotate_key(conn, args.id, grace=dt.timedelta(hours=hours))
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    print(
        f"API key {args.id} rotated to key {new_id}; the old key keeps working for {hours:g} h."
        " New key (shown once, store it now):"
    )
    print(key)
    return 0


def _timestamp(text: str) -> dt.datetime:
    """An ISO date or time for --from/--to; UTC unless it names its zone."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO date or time: {text!r} (e.g. 2026-10-01 or 2026-10-01T08:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def cmd_audit_export(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from core.audit import AuditFilter, query, to_csv, to_fhir_bundle, to_jsonl

    url = resolve_database_url(settings)
    filters = AuditFilter(
        patient=args.patient, user=args.user, clinic=args.clinic, start=args.start, end=args.end
    )
    with _migrated(url) as conn:
        records = query(conn, filters)
        if args.format == "csv":
            count = to_csv(records, sys.stdout)
        elif args.format == "jsonl":
            count = to_jsonl(records, sys.stdout)
        else:
            bundle = to_fhir_bundle(records, server="patient-search")
            json.dump(bundle, sys.stdout, ensure_ascii=False, indent=1)
            sys.stdout.write("\n")
            count = len(bundle["entry"])
    print(f"{count} audit records exported", file=sys.stderr)
    return 0


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from core.audit import verify

    url = resolve_database_url(settings)
    with _migrated(url) as conn:
        report = verify(conn)
    if report.ok:
        print(f"audit trail intact: {report.checked} records verified")
        return 0
    for problem in report.problems:
        print(f"TAMPERED: {problem}")
    print(f"audit trail altered: {len(report.problems)} problem(s) in {report.checked} records")
    return 2


def cmd_audit_prune(settings: Settings, args: argparse.Namespace) -> int:
    from core.audit import prune

    url = resolve_database_url(settings)
    days = args.older_than_days or settings.audit_retention_days
    with _migrated(url) as conn:
        try:
            done = prune(conn, older_than=dt.timedelta(days=days))
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    print(
        f"pruned {done.removed} audit records older than {days} days"
        f" (the chain now starts after record {done.through_seq})"
    )
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from indexer.check import check
    from indexer.runner import make_sinks

    url = resolve_database_url(settings)
    sinks: list[Any] = []
    try:
        with psycopg.connect(url) as conn:
            sinks = make_sinks(settings, conn) if args.repair else []  # repair every engine
            reports = check(
                conn,
                schema=settings.source_schema,
                region=settings.default_region,
                clinic_id=args.clinic,
                repair=args.repair,
                sinks=sinks,
            )
            _source_hints(conn, settings)
    finally:
        for sink in sinks:
            sink.close()
    drift = False
    for report in reports:
        print(report)
        drift |= not getattr(report, "ok", True)
    return 1 if drift and not args.repair else 0


def cmd_deadletters_list(settings: Settings, args: argparse.Namespace) -> int:
    from indexer import deadletters

    url = resolve_database_url(settings)
    with _migrated(url) as conn:
        rows = deadletters.pending(conn, include_replayed=args.all)
    print("id\tcreated_at\tsource\tkind\tposition\tpatient_id\treason")
    for row in rows:
        print(row.line())
    print(f"{len(rows)} dead letter(s)", file=sys.stderr)
    return 0


def cmd_deadletters_replay(settings: Settings, args: argparse.Namespace) -> int:
    from indexer.replay import replay

    url = resolve_database_url(settings)
    with psycopg.connect(url) as conn:
        migrate(conn)
    done = replay(url, settings, only=args.id or None)
    print(
        f"replayed {done.letters} dead letter(s): {done.patients} patient(s) re-synced from the"
        f" source, {done.still_rejected} still rejected (recorded again)"
    )
    if done.without_patient:
        print(
            f"{done.without_patient} dead letter(s) name no patient (unreadable events):"
            " run `patient-search check --repair` to compare every patient with the source"
        )
    return 1 if done.still_rejected else 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from patient_search.demo import run_demo

    return run_demo(settings, host=args.host, port=args.port, patients=args.patients)


Command = Callable[[Settings, argparse.Namespace], int]
Commands = argparse._SubParsersAction  # the group `add_subparsers` returns


def _command(group: Commands, name: str, func: Command, help: str) -> argparse.ArgumentParser:
    """A subcommand that runs `func(settings, args)`; the caller adds its options."""
    parser: argparse.ArgumentParser = group.add_parser(name, help=help)
    parser.set_defaults(func=func)
    return parser


def _group(sub: Commands, name: str, help: str) -> Commands:
    """A command with subcommands of its own (`patient-search apikey create`)."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def _apikey_commands(keys: Commands) -> None:
    c = _command(keys, "create", cmd_apikey_create, "create a key; printed once, on the last line")
    c.add_argument("--clinic", action="append", required=True, help="clinic id (repeatable)")
    c.add_argument("--name", help="who the key is for")
    c.add_argument(
        "--scope",
        action="append",
        help="search, lookup, read, fhir or audit (repeatable; default: search lookup read)",
    )
    c.add_argument(
        "--require-user", action="store_true", help="refuse requests without X-Staff-User"
    )
    c.add_argument("--expires", type=float, metavar="DAYS", help="the key expires after DAYS")
    _command(keys, "list", cmd_apikey_list, "every key: grants, dates, last use (never the secret)")
    c = _command(
        keys, "revoke", cmd_apikey_revoke, "revoke a key in every API process within a second"
    )
    c.add_argument("id", type=int)
    c = _command(
        keys, "rotate", cmd_apikey_rotate, "new secret, same grants; the old one works a while"
    )
    c.add_argument("id", type=int)
    c.add_argument(
        "--grace-hours",
        type=float,
        help="how long the old key keeps working (default PATIENT_SEARCH_KEY_ROTATION_GRACE_HOURS)",
    )


def _audit_commands(audit: Commands) -> None:
    c = _command(audit, "export", cmd_audit_export, "records matching the filters, oldest first")
    c.add_argument("--patient", help="records that returned this patient id")
    c.add_argument("--user", help="records of this staff user (X-Staff-User)")
    c.add_argument("--clinic", help="records of keys covering this clinic")
    c.add_argument("--from", dest="start", type=_timestamp, help="from this time (inclusive)")
    c.add_argument("--to", dest="end", type=_timestamp, help="until this time (exclusive)")
    c.add_argument("--format", choices=("csv", "jsonl", "fhir"), default="csv")
    _command(audit, "verify", cmd_audit_verify, "check the hash chain; exit 2 naming altered rows")
    c = _command(
        audit, "prune", cmd_audit_prune, "remove records past retention; the chain stays verifiable"
    )
    c.add_argument(
        "--older-than-days", type=int, help="default PATIENT_SEARCH_AUDIT_RETENTION_DAYS (6 years)"
    )


def _operator_commands(sub: Commands) -> None:
    """Meilisearch keys, the source/projection check and the dead letters."""
    m = _command(
        _group(sub, "meili", "Meilisearch administration"),
        "keys",
        cmd_meili_keys,
        "create (or show) the API's and the indexer's least-privilege keys",
    )
    m.add_argument(
        "--master-key-env",
        default="MEILI_MASTER_KEY",
        help="environment variable holding the master key (never pass it as an argument)",
    )
    p = _command(sub, "check", cmd_check, "compare source and projection per clinic")
    p.add_argument("--clinic")
    p.add_argument("--repair", action="store_true", help="re-sync drifting patients")
    letters = _group(sub, "deadletters", "what the indexer set aside (ids and reasons only)")
    c = _command(letters, "list", cmd_deadletters_list, "pending dead letters, oldest first")
    c.add_argument("--all", action="store_true", help="include replayed ones")
    c = _command(
        letters, "replay", cmd_deadletters_replay, "re-sync the patients they name from the source"
    )
    c.add_argument("--id", type=int, action="append", help="only this dead letter (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patient-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _command(sub, "migrate", cmd_migrate, "create or upgrade schema patient_search")
    p = _command(sub, "reindex", cmd_reindex, "rebuild the engines from the source tables")
    p.add_argument("--clinic", help="only this clinic")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = _command(sub, "indexer", cmd_indexer, "follow the source database (CDC) until stopped")
    p.add_argument("--once", action="store_true", help="drain what is pending, then exit")
    p = _command(sub, "serve", cmd_serve, "run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=None)
    _apikey_commands(_group(sub, "apikey", "manage API keys"))
    _audit_commands(_group(sub, "audit", "the audit trail: export, verify, prune"))
    _operator_commands(sub)
    p = _command(sub, "demo", cmd_demo, "embedded Postgres, synthetic clinics, indexer, API, page")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--patients", type=int, default=30_000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    configure_normalizers(settings)
    try:
        code: int = args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
