-- The clinic's tables, exactly the reference shape of DESIGN.md: no index but the
-- primary keys, as many clinic databases have them (no index on
-- patient_contacts(patient_id)). The service never writes these in production;
-- the demo, tests and benchmarks create them.
create table if not exists patients (
  id          text primary key,
  clinic_id   text not null,
  mrn         text,
  given_name  text,
  middle_name text,
  family_name text,
  birth_date  date,
  sex         text,
  postal_code text,
  active      boolean not null default true,
  updated_at  timestamptz not null default now()
);
create table if not exists patient_contacts (
  id          text primary key,
  patient_id  text not null references patients(id) on delete cascade,
  kind        text not null,
  value       text not null,
  use         text
);
