from typing import Any

import psycopg

from core.schema import MIGRATIONS, migrate, schema_version
from core.settings import Settings
from indexer.sync import sync_patients
from tests.factories import patient, seed


def test_migrate_is_idempotent(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert migrate(conn) == []  # the template already holds every migration
        assert schema_version(conn) == max(version for version, _, _ in MIGRATIONS)
        tables = {
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'patient_search'"
            )
        }
    assert {"patients", "name_words", "api_keys", "checkpoints", "dead_letters"} <= tables


def _doc_column(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "select data_type from information_schema.columns where table_schema = "
        "'patient_search' and table_name = 'patients' and column_name = 'doc'"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_migration_110_moves_the_documents_to_json_unchanged(db_url: str) -> None:
    """A projection indexed before migration 110 (documents as jsonb) keeps every document,
    as json, and the indexer writes the new column after it."""
    seed(
        db_url,
        [patient("p1", "Ann", "Lee", "1980-01-02"), patient("p2", "Bo", "Ray")],
        Settings(),
        lambda conn: None,
    )
    with psycopg.connect(db_url) as conn:
        assert _doc_column(conn) == "json"  # as reindex builds the table
        conn.execute("alter table patient_search.patients alter column doc type jsonb")
        conn.execute("delete from patient_search.schema_migrations where version = 110")
        before = dict(conn.execute("select id, doc from patient_search.patients").fetchall())
        conn.commit()
        assert migrate(conn) == [110]
        assert _doc_column(conn) == "json"
        after = dict(conn.execute("select id, doc from patient_search.patients").fetchall())
    assert after == before and set(after) == {"p1", "p2"}
    with psycopg.connect(db_url) as conn:
        conn.execute("update patients set given_name = 'Anne' where id = 'p1'")
        sync_patients(conn, ["p1"])
        conn.commit()
        doc = conn.execute("select doc from patient_search.patients where id = 'p1'").fetchone()
    assert doc is not None and doc[0]["patient"]["given_name"] == "Anne"


def test_reindex_and_the_indexer_store_a_document_as_the_same_text(db_url: str) -> None:
    """The json column keeps the text it is given: COPY (reindex) and the upsert (the
    indexer) spell a document alike, so one document is one stored value."""
    seed(db_url, [patient("p1", "Zoë", "O'Brien", "1980-01-02")], Settings(), lambda conn: None)
    read = "select doc::text from patient_search.patients where id = 'p1'"
    with psycopg.connect(db_url) as conn:
        copied = conn.execute(read).fetchone()
        conn.execute("delete from patient_search.patients where id = 'p1'")
        sync_patients(conn, ["p1"])
        conn.commit()
        upserted = conn.execute(read).fetchone()
    assert copied is not None and upserted == copied
