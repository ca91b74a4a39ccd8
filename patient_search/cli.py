"""Command line entry point (`patient-search`); each command is a plain function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from core.database import exit_cleanly_on_sigterm, resolve_database_url
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
    import uvicorn

    url = resolve_database_url(settings)
    migrate_or_check(url)
    # Workers inherit the resolved URL instead of each starting a server.
    os.environ["PATIENT_SEARCH_DATABASE_URL"] = url
    exit_cleanly_on_sigterm()
    uvicorn.run(
        "search_api.asgi:app",
        host=args.host,
        port=args.port,
        workers=args.workers or settings.workers,
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    from core.apikeys import create_key

    url = resolve_database_url(settings)
    with psycopg.connect(url) as conn:
        migrate(conn)
        key = create_key(conn, args.clinic, name=args.name)
    print(f"API key for clinics {', '.join(args.clinic)} (shown once, store it now):")
    print(key)
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
    with psycopg.connect(url) as conn:
        migrate(conn)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patient-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="create or upgrade schema patient_search").set_defaults(
        func=cmd_migrate
    )

    p = sub.add_parser("reindex", help="rebuild the engines from the source tables")
    p.add_argument("--clinic", help="only this clinic")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("indexer", help="follow the source database (CDC) until stopped")
    p.add_argument("--once", action="store_true", help="drain what is pending, then exit")
    p.set_defaults(func=cmd_indexer)

    p = sub.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("apikey", help="manage API keys")
    keys = p.add_subparsers(dest="apikey_command", required=True)
    c = keys.add_parser("create", help="create a key; printed once, on the last line")
    c.add_argument("--clinic", action="append", required=True, help="clinic id (repeatable)")
    c.add_argument("--name", help="who the key is for")
    c.set_defaults(func=cmd_apikey_create)

    p = sub.add_parser("meili", help="Meilisearch administration")
    meili = p.add_subparsers(dest="meili_command", required=True)
    m = meili.add_parser(
        "keys", help="create (or show) the API's and the indexer's least-privilege keys"
    )
    m.add_argument(
        "--master-key-env",
        default="MEILI_MASTER_KEY",
        help="environment variable holding the master key (never pass it as an argument)",
    )
    m.set_defaults(func=cmd_meili_keys)

    p = sub.add_parser("check", help="compare source and projection per clinic")
    p.add_argument("--clinic")
    p.add_argument("--repair", action="store_true", help="re-sync drifting patients")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("deadletters", help="what the indexer set aside (ids and reasons only)")
    letters = p.add_subparsers(dest="deadletters_command", required=True)
    c = letters.add_parser("list", help="pending dead letters, oldest first")
    c.add_argument("--all", action="store_true", help="include replayed ones")
    c.set_defaults(func=cmd_deadletters_list)
    c = letters.add_parser("replay", help="re-sync the patients they name from the source")
    c.add_argument("--id", type=int, action="append", help="only this dead letter (repeatable)")
    c.set_defaults(func=cmd_deadletters_replay)

    p = sub.add_parser("demo", help="embedded Postgres, synthetic clinics, indexer, API, page")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--patients", type=int, default=30_000)
    p.set_defaults(func=cmd_demo)
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
