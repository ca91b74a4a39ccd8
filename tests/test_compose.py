"""docker-compose.yml, the Debezium connector config and the database roles agree with the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.settings import Settings
from tests.fixtures import ROLES, connect_as

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR = json.loads((ROOT / "deploy" / "debezium-connector.json").read_text())["config"]
SERVICES = {
    "postgres",
    "kafka",
    "kafka-connect",
    "connector-register",
    "meilisearch",
    "indexer",
    "api",
    "migrate",
    "demo-data",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="pyyaml not installed (dev dependency)")
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= SERVICES
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
    for name in ("postgres", "kafka", "kafka-connect", "meilisearch", "api", "indexer"):
        assert "healthcheck" in services[name], name
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert (
        services["indexer"]["depends_on"]["connector-register"]["condition"]
        == "service_completed_successfully"
    )


def test_postgres_is_logical_with_reference_schema(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert "wal_level=logical" in pg["command"]
    # Buffers sized by the operator, and restored warm after a restart.
    assert any(c.startswith("shared_buffers=${POSTGRES_SHARED_BUFFERS") for c in pg["command"])
    assert "shared_preload_libraries=pg_prewarm" in pg["command"]
    mounts = " ".join(pg["volumes"])
    assert "./core/source_schema.sql:" in mounts and "./deploy/roles.sql:" in mounts
    for mount in pg["volumes"]:
        src = mount.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).exists(), src


def test_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "8000:8000" in services["api"]["ports"]
    assert "8000" in services["api"]["command"]
    assert "ports" not in services["meilisearch"]  # reached on the compose network only
    indexer_port = _env(services["indexer"])["PATIENT_SEARCH_INDEXER_METRICS_PORT"]
    assert f"{indexer_port}:{indexer_port}" in services["indexer"]["ports"]


def test_environment_names_are_settings(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    seen = 0
    for name, service in compose["services"].items():
        for key in _env(service):
            if key.startswith("PATIENT_SEARCH_"):
                seen += 1
                field = key.removeprefix("PATIENT_SEARCH_").lower()
                assert field in fields, f"{name}: {key} is not a Settings field"
    assert seen >= 10


def test_app_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    indexer, api = _env(services["indexer"]), _env(services["api"])
    assert services["indexer"]["command"] == ["indexer"]
    assert indexer["PATIENT_SEARCH_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert Settings(kafka_topics=indexer["PATIENT_SEARCH_KAFKA_TOPICS"]).topics == Settings().topics
    assert services["api"]["command"][:3] == ["serve", "--host", "0.0.0.0"]
    for env in (indexer, api):
        assert env["PATIENT_SEARCH_MEILI_URL"] == "http://meilisearch:7700"
    assert "MEILI_MASTER_KEY" in _env(services["meilisearch"])
    assert "${MEILI_MASTER_KEY" in _env(services["meilisearch"])["MEILI_MASTER_KEY"]
    # Least privilege: each process connects as its own role.
    assert "patient_search_api:" in api["PATIENT_SEARCH_DATABASE_URL"]
    assert "patient_search_indexer:" in indexer["PATIENT_SEARCH_DATABASE_URL"]
    assert Path(ROOT / "Dockerfile").exists()


def test_connector_register_uses_repo_config(compose: dict[str, Any]) -> None:
    reg = compose["services"]["connector-register"]
    assert any(v.startswith("./deploy:") for v in reg["volumes"])
    assert (ROOT / "deploy" / "register-connector.sh").exists()
    assert _env(reg)["CONNECTOR_CONFIG"].endswith("debezium-connector.json")


def test_connector_topics_match_settings() -> None:
    prefix = CONNECTOR["topic.prefix"]
    tables = CONNECTOR["table.include.list"].split(",")
    topics = sorted(f"{prefix}.{t}" for t in tables)
    assert topics == sorted(Settings().topics)
    assert CONNECTOR["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert CONNECTOR["plugin.name"] == "pgoutput"
    assert CONNECTOR["publication.autocreate.mode"] == "disabled"
    assert CONNECTOR["publication.name"] in (ROOT / "deploy" / "roles.sql").read_text()
    assert CONNECTOR["database.password"] == "${DEBEZIUM_PASSWORD}"  # never a real secret


# -- roles on a real PostgreSQL -------------------------------------------------------


def test_api_role_reads_the_projection_only(roles: str) -> None:
    with connect_as(roles, "patient_search_api") as api:
        api.execute("select count(*) from patient_search.patients").fetchone()
        api.execute("select count(*) from patient_search.api_keys").fetchone()
        api.execute("select value from patient_search.state").fetchall()
        # The Meilisearch lag check reads the outbox's oldest entry.
        api.execute("select min(enqueued_at) from patient_search.meili_outbox").fetchone()
        for stmt in (
            "select * from public.patients",
            "insert into patient_search.api_keys (key_hash, clinics) values ('x', '{a}')",
            "delete from patient_search.patients",
            "delete from patient_search.meili_outbox",
            "select * from patient_search.dead_letters",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                api.execute(stmt)


def test_indexer_and_debezium_read_the_source(roles: str) -> None:
    with connect_as(roles, "patient_search_indexer") as idx:
        idx.execute("select count(*) from public.patients").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            idx.execute("delete from public.patients")
    with connect_as(roles, "debezium") as dbz:
        dbz.execute("select count(*) from public.patient_contacts").fetchone()
    with psycopg.connect(roles) as conn:
        flags: dict[str, bool] = dict(
            conn.execute(
                "select rolname, rolreplication from pg_roles where rolname = any(%s)",
                (list(ROLES),),
            ).fetchall()
        )
        pubs = {r[0] for r in conn.execute("select pubname from pg_publication").fetchall()}
    assert flags == {"patient_search_indexer": True, "debezium": True, "patient_search_api": False}
    assert CONNECTOR["publication.name"] in pubs


def test_meilisearch_keys_are_least_privilege(compose: dict[str, Any]) -> None:
    """The master key reaches only Meilisearch and the key tool; API and indexer have
    their own keys, and neither waits for Meilisearch to be healthy."""
    services = compose["services"]
    for name, service in services.items():
        if name not in ("meilisearch", "meili-keys"):
            assert "MEILI_MASTER_KEY" not in json.dumps(service), name
    assert _env(services["api"])["PATIENT_SEARCH_MEILI_API_KEY"].startswith("${MEILI_API_KEY")
    indexer_key = _env(services["indexer"])["PATIENT_SEARCH_MEILI_API_KEY"]
    assert indexer_key.startswith("${MEILI_INDEXER_KEY")
    for name in ("api", "indexer"):
        assert "meilisearch" not in (services[name].get("depends_on") or {}), name
    tool = services["meili-keys"]
    assert tool["entrypoint"] == ["patient-search", "meili", "keys"]
    assert tool["profiles"] == ["tools"]


def test_key_actions_are_the_fewest_that_work() -> None:
    from engines.meili import key_specs

    specs = key_specs("patients")
    api, indexer = specs["api"], specs["indexer"]
    assert set(api["actions"]) == {"search", "settings.get", "version"}
    assert api["indexes"] == ["patients"]
    # The rebuild creates, swaps and deletes patients__rebuild: a uid pattern covers it.
    assert indexer["indexes"] == ["patients*"]
    assert {"indexes.create", "indexes.get", "indexes.swap", "indexes.delete"} <= set(
        indexer["actions"]
    )
    assert {"documents.add", "documents.delete", "settings.update", "tasks.get"} <= set(
        indexer["actions"]
    )
    for spec in specs.values():
        assert "*" not in spec["actions"]
        assert not any(a.startswith("keys.") for a in spec["actions"])
