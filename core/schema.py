"""Schema `patient_search`: versioned, idempotent migrations and the projection DDL.

The projection table's DDL lives in one function because reindex builds a
fresh copy of the table under another name and swaps it in.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from core import name_keys, term_counts

SCHEMA = "patient_search"
PROJECTION = "patients"
_LOCK_KEY = 7_345_001  # advisory lock serialising migrations across processes


def projection_table_ddl(
    table: str, *, primary_key: bool = True, terms_collate_c: bool = True, json_doc: bool = True
) -> sql.Composed:
    """One row per source patient: display document plus the terms every query kind uses.

    `terms` holds typed exact-match keys (`n:` name key, `k:` nickname canonical,
    `p:` phonetic code, `mrn:`, `tel:`, `tn:`, `t7:`, `t4:`, `em:`, `dob:`), so
    one GIN index led by clinic_id answers identifier, name, nickname, phonetic
    and date lookups alike.

    The terms are compared only for equality, so they are collated "C" (memcmp):
    under the database's C.UTF-8 PostgreSQL compares through strcoll, and the GIN
    build, a third of a reindex at 1M, took 30 % more CPU (issue 11). Migration 1
    created the column with the default collation (`terms_collate_c=False`);
    migration 80 moves it.

    `doc` is `json`, the text as written: a search reads 35-45 documents and never
    looks inside one in SQL, and PostgreSQL spelling `jsonb` back out as text cost it
    about 3 us a document, 7-13 % of its CPU per name search at 1M (issue 11).
    Migration 1 created it as `jsonb` (`json_doc=False`); migration 110 moves it.
    """
    return sql.SQL(
        """
        create table if not exists {schema}.{table} (
          id                text not null{pk},
          clinic_id         text not null,
          active            boolean not null,
          birth_date        date,
          terms             text[]{terms_collation} not null,
          name_text         text not null,
          sort_key          text not null,
          doc               {doc_type} not null,
          source_updated_at timestamptz,
          indexed_at        timestamptz not null default now()
        ) with (fillfactor = 90)
        """
    ).format(
        schema=sql.Identifier(SCHEMA),
        table=sql.Identifier(table),
        pk=sql.SQL(" primary key" if primary_key else ""),
        terms_collation=sql.SQL(' collate "C"' if terms_collate_c else ""),
        doc_type=sql.SQL("json" if json_doc else "jsonb"),
    )


def projection_indexes_ddl(table: str) -> list[sql.Composed]:
    ident = sql.Identifier(SCHEMA, table)

    def name(suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{table}_{suffix}")

    return [
        sql.SQL("create index if not exists {} on {} using gin (terms)").format(
            name("terms"), ident
        ),
        sql.SQL("create index if not exists {} on {} using gin (name_text gin_trgm_ops)").format(
            name("trgm"), ident
        ),
    ]


# Indexes of a projection table are named "<table>_<suffix>", so a rebuilt table's
# indexes can be renamed along with it.
PROJECTION_INDEX_SUFFIXES = ("terms", "trgm", "pkey")


def _m1_initial(conn: psycopg.Connection[Any]) -> None:
    for ext in ("pg_trgm", "fuzzystrmatch", "btree_gin"):
        conn.execute(sql.SQL("create extension if not exists {}").format(sql.Identifier(ext)))
    # as released
    conn.execute(projection_table_ddl(PROJECTION, terms_collate_c=False, json_doc=False))
    for ddl in projection_indexes_ddl(PROJECTION):
        conn.execute(ddl)
    conn.execute(
        """
        create table if not exists patient_search.name_dictionary (
          term      text collate "C" primary key,
          frequency integer not null default 1
        );
        create index if not exists name_dictionary_trgm
          on patient_search.name_dictionary using gin (term gin_trgm_ops);

        create table if not exists patient_search.api_keys (
          id         bigserial primary key,
          key_hash   text not null unique,
          name       text,
          clinics    text[] not null,
          created_at timestamptz not null default now(),
          revoked_at timestamptz
        );

        create table if not exists patient_search.checkpoints (
          source     text primary key,
          position   text not null,
          updated_at timestamptz not null default now()
        );

        create table if not exists patient_search.dead_letters (
          id         bigserial primary key,
          source     text not null,
          position   text,
          reason     text not null,
          payload    text,
          created_at timestamptz not null default now()
        );
        create index if not exists dead_letters_position
          on patient_search.dead_letters (source, position);

        create table if not exists patient_search.contact_owner (
          contact_id text primary key,
          patient_id text not null
        );
        create index if not exists contact_owner_patient
          on patient_search.contact_owner (patient_id);

        create table if not exists patient_search.reindex_touched (
          patient_id text primary key
        );

        create table if not exists patient_search.state (
          key        text primary key,
          value      jsonb not null,
          updated_at timestamptz not null default now()
        );
        """
    )


def _m10_dead_letters_without_data(conn: psycopg.Connection[Any]) -> None:
    """Dead letters hold ids, kind, reason and position; the old raw payloads are dropped."""
    conn.execute(
        """
        alter table patient_search.dead_letters
          add column if not exists kind text not null default 'event',
          add column if not exists patient_id text,
          add column if not exists replayed_at timestamptz;
        update patient_search.dead_letters
          set kind = 'document', patient_id = payload where reason like 'document rejected%%';
        alter table patient_search.dead_letters drop column if exists payload;
        create index if not exists dead_letters_pending
          on patient_search.dead_letters (id) where replayed_at is null;
        """
    )


def _m20_meili_outbox(conn: psycopg.Connection[Any]) -> None:
    """Patients changed since Meilisearch last took them, in queue order (indexer.meili_sink)."""
    conn.execute(
        """
        create table if not exists patient_search.meili_outbox (
          seq         bigserial primary key,
          patient_id  text not null,
          enqueued_at timestamptz not null default now()
        )
        """
    )


def _m50_accountable_access(conn: psycopg.Connection[Any]) -> None:
    """Key scopes and lifecycle, the hash-chained audit trail, shared rate-limit state.

    Existing keys keep working with `search lookup read`. The audit table is
    append-only: a trigger refuses UPDATE and DELETE (prune alone may delete, by
    setting patient_search.audit_prune for its transaction), and deploy/api-grants.sql
    gives the API role INSERT and SELECT only.
    """
    conn.execute(
        """
        alter table patient_search.api_keys
          add column if not exists scopes text[] not null default '{search,lookup,read}',
          add column if not exists require_user boolean not null default false,
          add column if not exists expires_at timestamptz,
          add column if not exists last_used_at timestamptz,
          add column if not exists rotated_from bigint;

        create table if not exists patient_search.audit_log (
          seq         bigint primary key,
          at          timestamptz not null,
          request_id  text not null,
          key_id      bigint,
          clinics     text[] not null,
          staff_user  text,
          purpose     text,
          source      text,
          action      text not null,
          outcome     smallint not null,
          request     text not null,
          patient_ids text[] not null,
          note        text,
          prev_hash   text not null,
          hash        text not null
        );
        create index if not exists audit_log_at on patient_search.audit_log (at);
        create index if not exists audit_log_patients
          on patient_search.audit_log using gin (patient_ids);
        create index if not exists audit_log_staff_user
          on patient_search.audit_log (staff_user, at);

        -- The end of the chain, so removing the newest rows is detected too; its row
        -- lock serialises writers from every API process.
        create table if not exists patient_search.audit_head (
          singleton  boolean primary key default true check (singleton),
          seq        bigint not null,
          hash       text not null,
          updated_at timestamptz not null default now()
        );
        insert into patient_search.audit_head (seq, hash)
          values (0, repeat('0', 64)) on conflict do nothing;

        -- Where the chain restarts after `audit prune`.
        create table if not exists patient_search.audit_prunes (
          id          bigserial primary key,
          at          timestamptz not null default now(),
          cutoff      timestamptz not null,
          through_seq bigint not null,
          hash        text not null,
          removed     bigint not null
        );

        create or replace function patient_search.audit_append_only() returns trigger
        language plpgsql as $$
        begin
          if tg_op = 'DELETE' and tg_table_name = 'audit_log'
             and current_setting('patient_search.audit_prune', true) = 'on' then
            return old;
          end if;
          raise exception 'patient_search.% is append-only', tg_table_name
            using errcode = 'insufficient_privilege';
        end
        $$;
        drop trigger if exists audit_log_append_only on patient_search.audit_log;
        create trigger audit_log_append_only before update or delete
          on patient_search.audit_log for each row
          execute function patient_search.audit_append_only();
        drop trigger if exists audit_log_no_truncate on patient_search.audit_log;
        create trigger audit_log_no_truncate before truncate
          on patient_search.audit_log for each statement
          execute function patient_search.audit_append_only();
        drop trigger if exists audit_prunes_append_only on patient_search.audit_prunes;
        create trigger audit_prunes_append_only before update or delete
          on patient_search.audit_prunes for each row
          execute function patient_search.audit_append_only();

        -- Token buckets shared by every API process (unlogged: losing them on a crash
        -- only refills the buckets).
        create unlogged table if not exists patient_search.rate_buckets (
          bucket text primary key,
          tokens double precision not null,
          at     timestamptz not null
        );
        create or replace function patient_search.take_tokens(
          names text[], capacities double precision[], rates double precision[]
        ) returns table (allowed boolean, remaining double precision[], wait double precision)
        language plpgsql as $$
        declare
          now_ts timestamptz := clock_timestamp();
          have double precision[] := '{}';
          ok boolean := true;
          longest double precision := 0;
          t double precision;
        begin
          -- Callers pass names sorted, so rows are locked in one order (no deadlocks).
          insert into patient_search.rate_buckets (bucket, tokens, at)
            select n, c, now_ts from unnest(names, capacities) as u(n, c)
            on conflict (bucket) do nothing;
          for i in 1 .. coalesce(array_length(names, 1), 0) loop
            select least(capacities[i],
                         b.tokens + greatest(0, extract(epoch from now_ts - b.at)) * rates[i])
              into t from patient_search.rate_buckets b where b.bucket = names[i] for update;
            have := have || t;
            if t < 1 then
              ok := false;
              longest := greatest(longest, (1 - t) / rates[i]);
            end if;
          end loop;
          if ok then
            select array_agg(h - 1 order by o) into have
              from unnest(have) with ordinality as u(h, o);
          end if;
          update patient_search.rate_buckets b set tokens = u.h, at = now_ts
            from unnest(names, have) as u(n, h) where b.bucket = u.n;
          return query select ok, have, longest;
        end
        $$;

        -- Booking lookups: misses per key and identifier (a hash, never the value).
        create table if not exists patient_search.lookup_misses (
          key_id       bigint not null,
          ident        text not null,
          first_miss   timestamptz not null,
          misses       integer not null,
          locked_until timestamptz,
          primary key (key_id, ident)
        );
        """
    )


def _m60_fhir_cursors(conn: psycopg.Connection[Any]) -> None:
    """FHIR paging links name a stored search, so no search value ever travels in a URL."""
    conn.execute(
        """
        create table if not exists patient_search.fhir_cursors (
          token      text primary key,
          clinics    text[] not null,
          params     jsonb not null,
          created_at timestamptz not null default now()
        );
        create index if not exists fhir_cursors_created on patient_search.fhir_cursors (created_at);
        """
    )


def _m70_token_leases(conn: psycopg.Connection[Any]) -> None:
    """take_tokens with how many tokens each bucket should give: an API process draws a
    small lease ahead and spends it locally, instead of one round trip per request."""
    conn.execute(
        """
        create or replace function patient_search.take_tokens(
          names text[], capacities double precision[], rates double precision[],
          wants double precision[]
        ) returns table (allowed boolean, remaining double precision[], wait double precision,
                         granted double precision[])
        language plpgsql as $$
        declare
          now_ts timestamptz := clock_timestamp();
          have double precision[] := '{}';
          gave double precision[] := '{}';
          ok boolean := true;
          longest double precision := 0;
          t double precision;
        begin
          -- Callers pass names sorted, so rows are locked in one order (no deadlocks).
          insert into patient_search.rate_buckets (bucket, tokens, at)
            select n, c, now_ts from unnest(names, capacities) as u(n, c)
            on conflict (bucket) do nothing;
          for i in 1 .. coalesce(array_length(names, 1), 0) loop
            select least(capacities[i],
                         b.tokens + greatest(0, extract(epoch from now_ts - b.at)) * rates[i])
              into t from patient_search.rate_buckets b where b.bucket = names[i] for update;
            have := have || t;
            if t < 1 then
              ok := false;
              longest := greatest(longest, (1 - t) / rates[i]);
            end if;
          end loop;
          for i in 1 .. coalesce(array_length(names, 1), 0) loop
            -- All or nothing: a refused request takes no token from any bucket. A lease
            -- takes at most half of what is left, so near the limit leases shrink.
            gave := gave || case when ok then greatest(1, least(wants[i], floor(have[i] / 2)))
                                 else 0 end;
            have[i] := have[i] - gave[i];
          end loop;
          update patient_search.rate_buckets b set tokens = u.h, at = now_ts
            from unnest(names, have) as u(n, h) where b.bucket = u.n;
          return query select ok, have, longest, gave;
        end
        $$;
        -- The token-a-request form that API processes of migration 50 still call.
        create or replace function patient_search.take_tokens(
          names text[], capacities double precision[], rates double precision[]
        ) returns table (allowed boolean, remaining double precision[], wait double precision)
        language sql as $$
          select t.allowed, t.remaining, t.wait from patient_search.take_tokens(
            names, capacities, rates, array_fill(1::double precision,
                                                 array[coalesce(array_length(names, 1), 0)])
          ) t
        $$;
        """
    )


def _m30_name_words(conn: psycopg.Connection[Any]) -> None:
    """The word dictionary per clinic, counted in patients (issue 9, item 6).

    Completions and typo corrections then come from the caller's clinics only,
    and a word leaves a clinic with its last patient. Filled from the projection.
    """
    conn.execute(
        """
        create table if not exists patient_search.name_words (
          clinic_id text not null,
          term      text collate "C" not null,
          patients  integer not null,
          primary key (clinic_id, term)
        )
        """
    )
    conn.execute(
        """
        insert into patient_search.name_words (clinic_id, term, patients)
        select p.clinic_id, substr(t, length(p.clinic_id) + 4), count(*)
        from patient_search.patients p cross join lateral unnest(p.terms) t
        where left(t, length(p.clinic_id) + 3) = p.clinic_id || E'\\x1fn:'
        group by 1, 2
        on conflict do nothing
        """
    )


def _m31_drop_global_dictionary(conn: psycopg.Connection[Any]) -> None:
    """name_dictionary had no clinic (an oracle of other clinics' names): name_words replaces it."""
    conn.execute("drop table if exists patient_search.name_dictionary")


def _m32_name_keys(conn: psycopg.Connection[Any]) -> None:
    """Name words by clinic in a B-tree, one row per patient and word (issue 11): an
    as-you-type completion reads a page of patients per word instead of whole GIN posting
    lists. Filled from the projection; kept by the projection writes and reindex."""
    conn.execute(
        """
        create table if not exists patient_search.name_keys (
          clinic_id text not null,
          term      text collate "C" not null,
          id        text not null
        )
        """
    )
    conn.execute(
        """
        insert into patient_search.name_keys (clinic_id, term, id)
        select p.clinic_id, substr(t, length(p.clinic_id) + 4), p.id
        from patient_search.patients p cross join lateral unnest(p.terms) t
        where left(t, length(p.clinic_id) + 3) = p.clinic_id || E'\\x1fn:'
        """
    )
    conn.execute(
        "alter table patient_search.name_keys add primary key (clinic_id, term, id);"
        "create index if not exists name_keys_id on patient_search.name_keys (id)"
    )


def _m80_terms_collate_c(conn: psycopg.Connection[Any]) -> None:
    """The projection's terms collated "C", as reindex builds them (projection_table_ddl).

    Same type, so the table is not rewritten; PostgreSQL rebuilds the terms index
    (at 1M patients about 40 s, searches waiting on the lock meanwhile)."""
    conn.execute('alter table patient_search.patients alter column terms type text[] collate "C"')


def _m90_name_pairs(conn: psycopg.Connection[Any]) -> None:
    """The given-family pairs of a projection built before name keys held them (issue 11):
    reindex and the projection writes fill them since; without them a two-word crowd is
    read the slower way. At 1M patients 15 s (measured), once, at the first start."""
    conn.execute(
        name_keys.fill_pairs(
            sql.Identifier(SCHEMA, "name_keys"), sql.Identifier(SCHEMA, PROJECTION)
        )
    )


def _m100_audit_append(conn: psycopg.Connection[Any]) -> None:
    """The chain appended inside the server (core.audit.append): the head's row lock,
    which serialises the writers of every API process, is held for one statement in
    PostgreSQL only. Held across a batch's round trips from Python, it waited on each
    writer thread's turn for the GIL under load; one process's stalled write held up the
    other's, and a worker answering cached searches at 1,800/s filled its audit queue and
    refused requests with 503 (issue 11, nineteenth pass).

    `records` is a JSON array of rows (oldest first), each with `chained`: its canonical
    JSON after the sequence number (core.audit.chained_text), so that each hash is the
    one `verify` recomputes: sha256(prev_hash || '\n[' || seq || ',' || chained)."""
    conn.execute(
        r"""
        create or replace function patient_search.audit_append(records jsonb)
        returns bigint language plpgsql as $$
        declare
          first_seq bigint;
          last_seq bigint;
          last_hash text;
          links text[] := '{}';
          text_after_seq text;
        begin
          select seq, hash into last_seq, last_hash
            from patient_search.audit_head for update;
          first_seq := last_seq;
          for text_after_seq in
            select e.value ->> 'chained'
              from jsonb_array_elements(records) with ordinality e(value, i) order by e.i
          loop
            last_seq := last_seq + 1;
            links := links || last_hash;
            last_hash := encode(sha256(convert_to(
              last_hash || E'\n[' || last_seq || ',' || text_after_seq, 'UTF8')), 'hex');
          end loop;
          links := links || last_hash;
          insert into patient_search.audit_log (
            seq, at, request_id, key_id, clinics, staff_user, purpose, source, action,
            outcome, request, patient_ids, note, prev_hash, hash)
          select first_seq + r.i, r.at, r.request_id, r.key_id, r.clinics, r.staff_user,
                 r.purpose, r.source, r.action, r.outcome, r.request, r.patient_ids, r.note,
                 l.prev_hash, l.hash
            from rows from (jsonb_to_recordset(records) as (
                   at timestamptz, request_id text, key_id bigint, clinics text[],
                   staff_user text, purpose text, source text, action text, outcome smallint,
                   request text, patient_ids text[], note text))
                 with ordinality r(at, request_id, key_id, clinics, staff_user, purpose,
                                   source, action, outcome, request, patient_ids, note, i)
            join unnest(links[1:last_seq - first_seq], links[2:last_seq - first_seq + 1])
                 with ordinality l(prev_hash, hash, i) using (i);
          update patient_search.audit_head
             set seq = last_seq, hash = last_hash, updated_at = now();
          return last_seq;
        end $$
        """
    )


def _m110_json_documents(conn: psycopg.Connection[Any]) -> None:
    """The projection's documents as `json`, as reindex builds them (projection_table_ddl).

    A new type, so PostgreSQL rewrites the table and rebuilds its indexes: at 1M
    patients about 45 s, searches waiting on the lock meanwhile (issue 11). A reindex
    instead builds the new table beside the live one."""
    conn.execute("alter table patient_search.patients alter column doc type json using doc::json")


# Append new migrations; never edit a released one.
MIGRATIONS: list[tuple[int, str, Callable[[psycopg.Connection[Any]], None]]] = [
    (1, "projection, dictionary, api keys, checkpoints, dead letters", _m1_initial),
    (
        10,
        "dead letters: kind and patient id, no payload; replay mark",
        _m10_dead_letters_without_data,
    ),
    (20, "meilisearch outbox", _m20_meili_outbox),
    (30, "name words per clinic, counted in patients", _m30_name_words),
    (31, "drop the global name dictionary", _m31_drop_global_dictionary),
    (32, "name keys: a B-tree of name words by clinic, for completions", _m32_name_keys),
    (40, "per-clinic counts of name words and dates of birth", term_counts.migrate_40),
    (
        50,
        "key scopes and lifecycle, audit trail, rate limits, lookup lockout",
        _m50_accountable_access,
    ),
    (60, "fhir paging cursors", _m60_fhir_cursors),
    (70, "rate limits: leases of several tokens per draw", _m70_token_leases),
    (80, 'projection terms collated "C"', _m80_terms_collate_c),
    (90, "name keys: given-family pairs", _m90_name_pairs),
    (100, "audit trail appended inside the server", _m100_audit_append),
    (110, "projection documents stored as json", _m110_json_documents),
]


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply pending migrations in one transaction each; returns the versions applied."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            """
            create table if not exists patient_search.schema_migrations (
              version    integer primary key,
              name       text not null,
              applied_at timestamptz not null default now()
            )
            """
        )
        done = {r[0] for r in conn.execute("select version from patient_search.schema_migrations")}
        for version, name, step in MIGRATIONS:
            if version in done:
                continue
            step(conn)
            conn.execute(
                "insert into patient_search.schema_migrations (version, name) values (%s, %s)",
                (version, name),
            )
            applied.append(version)
    return applied


def migrate_or_check(url: str) -> None:
    """At a service's start: migrate when allowed; a least-privilege role (the API's)
    only checks that the schema is current."""
    with psycopg.connect(url) as conn:
        try:
            migrate(conn)
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
            current = schema_version(conn)
            if current != MIGRATIONS[-1][0]:
                raise SystemExit(
                    f"schema patient_search is at version {current}; run `patient-search migrate`"
                    " with a role that may create objects"
                ) from None


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    row = conn.execute(
        "select to_regclass('patient_search.schema_migrations') is not null"
    ).fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute("select max(version) from patient_search.schema_migrations").fetchone()
    return row[0] if row else None


def create_source_tables(conn: psycopg.Connection[Any]) -> None:
    """The clinic's reference tables, for the demo, tests and benchmarks."""
    ddl = resources.files("core").joinpath("source_schema.sql").read_text()
    conn.execute(ddl)
