-- Least-privilege roles for the patient search service. Run once as a superuser in the
-- clinic database (docker-compose runs it from /docker-entrypoint-initdb.d via psql).
-- Passwords come from the environment through psql's \getenv, never from this file.
--
--   patient_search_indexer  follows the source (REPLICATION, SELECT on the two source
--                           tables), owns schema patient_search (migrate, projection,
--                           checkpoints, dead letters, state). Never writes the source.
--   patient_search_api      reads the projection, the dictionary and API keys; reads the
--                           state and schema_migrations rows for /readyz and the
--                           Meilisearch lag check. Writes only the accountable-access
--                           state: appends audit records (INSERT, never UPDATE or DELETE),
--                           rate-limit buckets, lookup misses, keys' last use
--                           (deploy/api-grants.sql).
--   debezium                Kafka Connect's Debezium connector: REPLICATION and SELECT on
--                           the source tables (initial snapshot); the publication is made
--                           here so the connector needs no table ownership.

\getenv indexer_password INDEXER_DB_PASSWORD
\getenv api_password API_DB_PASSWORD
\getenv debezium_password DEBEZIUM_PASSWORD

create role patient_search_indexer login replication password :'indexer_password';
create role patient_search_api login password :'api_password';
create role debezium login replication password :'debezium_password';

-- Source tables: read only, for the two readers of the source.
grant usage on schema public to patient_search_indexer, debezium;
grant select on public.patients, public.patient_contacts to patient_search_indexer, debezium;

-- The indexer creates schema patient_search and the trusted extensions it needs
-- (pg_trgm, fuzzystrmatch, btree_gin) on `patient-search migrate`.
do $$
begin
  execute format('grant create, connect on database %I to patient_search_indexer',
                 current_database());
  execute format('grant connect on database %I to patient_search_api, debezium',
                 current_database());
end
$$;

-- Single-machine logical decoding (no Kafka) uses this publication name by default
-- (PATIENT_SEARCH_PUBLICATION_NAME); Debezium uses its own (deploy/debezium-connector.json).
create publication patient_search for table public.patients, public.patient_contacts;
create publication dbz_patient_search for table public.patients, public.patient_contacts;
