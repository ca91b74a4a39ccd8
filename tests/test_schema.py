import psycopg

from core.schema import MIGRATIONS, migrate, schema_version


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
