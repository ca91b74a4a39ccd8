-- Run by the indexer role (owner of schema patient_search) after `patient-search migrate`:
-- the API role may read what serving needs and nothing else. Idempotent.
grant usage on schema patient_search to patient_search_api;
grant select on
  patient_search.patients,
  patient_search.name_dictionary,
  patient_search.api_keys,
  patient_search.state,
  patient_search.meili_outbox,
  patient_search.schema_migrations
to patient_search_api;
-- FHIR paging links: the API stores the search behind a `next` link and prunes expired ones.
grant select, insert, delete on patient_search.fhir_cursors to patient_search_api;
