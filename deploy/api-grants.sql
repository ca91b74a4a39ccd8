-- Run by the indexer role (owner of schema patient_search) after `patient-search migrate`:
-- the API role may read what serving needs and nothing else, plus the accountable-access
-- state it must write: it appends to the audit trail (INSERT, never UPDATE or DELETE),
-- moves the chain head, draws from the rate-limit buckets, counts lookup misses and
-- records when a key was last used. Idempotent.
grant usage on schema patient_search to patient_search_api;
grant select on
  patient_search.patients,
  patient_search.name_words,
  patient_search.name_keys,
  patient_search.term_counts,
  patient_search.api_keys,
  patient_search.state,
  patient_search.meili_outbox,
  patient_search.schema_migrations
to patient_search_api;
-- FHIR paging links: the API stores the search behind a `next` link and prunes expired ones.
grant select, insert, delete on patient_search.fhir_cursors to patient_search_api;

-- Audit trail: append-only for the API (the table's trigger also refuses UPDATE/DELETE).
grant select, insert on patient_search.audit_log to patient_search_api;
grant select, update on patient_search.audit_head to patient_search_api;
grant execute on function patient_search.audit_append(jsonb) to patient_search_api;
grant select on patient_search.audit_prunes to patient_search_api;
-- Keys: only the last-use time is the API's to write.
grant update (last_used_at) on patient_search.api_keys to patient_search_api;
-- Rate limits and the booking-lookup lockout.
grant select, insert, update on patient_search.rate_buckets, patient_search.lookup_misses
  to patient_search_api;
grant execute on function patient_search.take_tokens(text[], double precision[],
  double precision[]) to patient_search_api;
grant execute on function patient_search.take_tokens(text[], double precision[],
  double precision[], double precision[]) to patient_search_api;
