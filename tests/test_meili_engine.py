"""The Meilisearch adapter without a Meilisearch server: error classification, version
check, the requests the official client builds, the clinic post-filter, task re-waits and
compare-before-apply settings.

Nothing here answers a search. Errors are the client's own exception types, built from
HTTP responses shaped like Meilisearch's documented error body; requests are captured by
a local HTTP server that answers every call with 503, so what is checked is what the real
client put on the wire. Task handling and settings comparison are our control flow, driven
by a minimal client double that records calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from meilisearch.errors import (
    MeilisearchApiError,
    MeilisearchCommunicationError,
    MeilisearchTimeoutError,
)

from engines.base import CandidateQuery
from engines.meili import (
    MIN_VERSION,
    MeiliEngine,
    MeiliNotReady,
    MeiliTaskFailed,
    MeiliTooOld,
    check_version,
    classify_error,
    collect_hits,
    make_client,
    parse_version,
)
from engines.meili_settings import clinic_key, index_settings, term_key
from indexer.meili_sink import MeiliUnavailable, TaskWaiter, apply_settings
from search_api.plan import name_token
from tests.fixtures import ErrorServer


def api_error(status: int, code: str | None = None, type_: str | None = None) -> Exception:
    """The client's own exception, from a response shaped like Meilisearch's error body."""
    response = requests.Response()
    response.status_code = status
    body = {"message": "m", "code": code, "type": type_, "link": "l"} if code else {}
    response._content = json.dumps(body).encode() if body else b""
    return MeilisearchApiError("error", response)


# -- classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "reason", "misconfigured"),
    [
        (MeilisearchCommunicationError("refused"), "unavailable", "connection", False),
        (MeilisearchTimeoutError("slow"), "unavailable", "timeout", False),
        (TimeoutError(), "unavailable", "timeout", False),
        (api_error(500, "internal", "internal"), "unavailable", "server_error", False),
        (api_error(503), "unavailable", "server_error", False),
        (api_error(429), "unavailable", "server_error", False),
        # Not about a document: a rotated key, a bad request, a too-large payload.
        (api_error(401, "missing_authorization_header", "auth"), "unavailable", "auth", True),
        (api_error(403, "invalid_api_key", "auth"), "unavailable", "auth", True),
        (api_error(400, "bad_request", "invalid_request"), "unavailable", "bad_request", True),
        (
            api_error(413, "payload_too_large", "invalid_request"),
            "unavailable",
            "bad_request",
            True,
        ),
        (api_error(404, "index_not_found", "invalid_request"), "unavailable", "bad_request", True),
        # Tasks: only an invalid_request failure is about the documents.
        (
            MeiliTaskFailed(
                1, "failed", {"code": "invalid_document_id", "type": "invalid_request"}
            ),
            "rejected",
            "document_rejected",
            False,
        ),
        (
            MeiliTaskFailed(2, "failed", {"code": "no_space_left_on_device", "type": "system"}),
            "unavailable",
            "task_failed",
            False,
        ),
        (
            MeiliTaskFailed(
                3, "failed", {"code": "database_size_limit_reached", "type": "internal"}
            ),
            "unavailable",
            "task_failed",
            False,
        ),
        (MeiliTaskFailed(4, "canceled", None), "unavailable", "task_canceled", False),
        (MeiliNotReady("unverified"), "unavailable", "not_ready", False),
        (MeiliTooOld("1.14"), "unavailable", "version", True),
        (ValueError("ours"), "unavailable", "error", False),
    ],
)
def test_one_classification(exc: Exception, kind: str, reason: str, misconfigured: bool) -> None:
    failure = classify_error(exc)
    assert (failure.kind, failure.reason, failure.misconfigured) == (kind, reason, misconfigured)


# -- version ----------------------------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version("1.16.0") == (1, 16, 0)
    assert parse_version("v1.15.2-rc.1") == (1, 15, 2)
    assert parse_version("1.9") == (1, 9, 0)
    assert parse_version("nonsense") == (0, 0, 0)
    assert MIN_VERSION == (1, 15, 0)  # typoTolerance.disableOnNumbers
    assert "disableOnNumbers" in index_settings()["typoTolerance"]


class VersionClient:
    def __init__(self, version: str) -> None:
        self.version = version

    def get_version(self) -> dict[str, str]:
        return {"pkgVersion": self.version, "commitSha": "x", "commitDate": "y"}


def test_version_check_refuses_old_servers() -> None:
    assert check_version(VersionClient("1.16.0")) == "1.16.0"  # type: ignore[arg-type]
    assert check_version(VersionClient("1.15.0")) == "1.15.0"  # type: ignore[arg-type]
    with pytest.raises(MeiliTooOld, match=r"1\.15\.0 or later"):
        check_version(VersionClient("1.14.9"))  # type: ignore[arg-type]


# -- the requests the real client builds ------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[ErrorServer]:
    """Captures what the real client sends; answers 503 with Meilisearch's error shape."""
    error = {"message": "m", "code": "unavailable", "type": "system", "link": "l"}
    server = ErrorServer(503, json.dumps(error).encode(), "application/json")
    yield server
    server.close()


def test_search_request_on_the_wire(recorder: ErrorServer) -> None:
    engine = MeiliEngine(make_client(recorder.url, "search-key", 1.0), "patients")
    engine._verified = True  # what a passed settings check sets; the server here only errs
    engine._last_attempt = float("inf")  # no background re-check in this test
    query = CandidateQuery(
        clinic_ids=("CLINIC-A",), names=(name_token("jon"), name_token("smith")), limit=7
    )
    with pytest.raises(MeilisearchApiError) as err:
        engine.candidates(query)
    assert classify_error(err.value).reason == "server_error"
    (sent,) = recorder.seen
    assert (sent["method"], sent["path"], sent["auth"]) == (
        "POST",
        "/multi-search",
        "Bearer search-key",
    )
    queries = sent["body"]["queries"]
    assert 1 <= len(queries) <= 6
    for q in queries:
        assert q["indexUid"] == "patients" and q["limit"] == 7
        assert q["filter"].startswith(f'clinic IN ["{clinic_key("CLINIC-A")}"] AND active = true')
        assert "CLINIC-A" not in json.dumps(q) and "clinic-a" not in json.dumps(q).lower()


def test_dictionary_expansions_reach_the_request(recorder: ErrorServer) -> None:
    engine = MeiliEngine(make_client(recorder.url, "k", 1.0), "patients")
    engine._verified, engine._last_attempt = True, float("inf")
    engine.expand = lambda tokens, clinics: ({t.text: {"n:john"} for t in tokens}, {})
    with pytest.raises(MeilisearchApiError):
        engine.candidates(CandidateQuery(clinic_ids=("c",), names=(name_token("jo"),)))
    (sent,) = recorder.seen
    assert term_key("n:john") in json.dumps(sent["body"])


def test_version_and_settings_requests_on_the_wire(recorder: ErrorServer) -> None:
    engine = MeiliEngine(make_client(recorder.url, "search-key", 1.0), "patients")
    with pytest.raises(MeilisearchApiError):
        engine.verify_settings()
    assert [(s["method"], s["path"]) for s in recorder.seen] == [("GET", "/version")]
    assert not engine.ready


def test_settings_are_checked_again_periodically(recorder: ErrorServer) -> None:
    """A verified engine re-checks in the background (one verifier: the engine's own)."""
    engine = MeiliEngine(make_client(recorder.url, "k", 1.0), "patients")
    engine._verified = True
    engine._last_attempt = float("-inf")  # the last check is older than the period
    with pytest.raises(MeilisearchApiError):
        engine.candidates(CandidateQuery(clinic_ids=("c",), strong_terms=("mrn:1",)))
    deadline = time.monotonic() + 2
    while len(recorder.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(s["path"] for s in recorder.seen) == ["/multi-search", "/version"]
    time.sleep(0.1)  # the check's thread has its 503 by now
    assert engine.ready  # an outage during the check is the breaker's business, not a verdict


def test_unverified_engine_asks_nothing_but_the_check(recorder: ErrorServer) -> None:
    engine = MeiliEngine(make_client(recorder.url, "k", 1.0), "patients")
    engine._last_attempt = float("inf")
    with pytest.raises(MeiliNotReady):
        engine.candidates(CandidateQuery(clinic_ids=("c",), strong_terms=("mrn:1",)))
    assert recorder.seen == []


# -- defence in depth ---------------------------------------------------------------------


def _hit(pid: str, clinic: str) -> dict[str, Any]:
    return {"pk": pid, "patient": {"id": pid, "clinic_id": clinic}, "match": {}}


def test_hits_outside_the_keys_clinics_are_dropped() -> None:
    """Whatever the filter matched, only exact clinic ids of the key come back."""
    results = [
        {"hits": [_hit("p1", "clinic-a"), _hit("p2", "CLINIC-A"), _hit("p3", "clinic-a ")]},
        {"hits": [_hit("p4", "clinic-b"), _hit("p1", "clinic-a")]},
    ]
    found = collect_hits(results, ("clinic-a",), limit=10)
    assert [c.id for c in found] == ["p1"]
    found = collect_hits(results, ("CLINIC-A", "clinic-b"), limit=10)
    assert [c.id for c in found] == ["p2", "p4"]
    assert collect_hits(results, ("clinic-a", "clinic-b"), limit=1)[0].id == "p1"


# -- tasks --------------------------------------------------------------------------------


class TaskClient:
    """Records submissions and waits; the first wait times out, later ones succeed."""

    def __init__(self, outcome: dict[str, Any] | None = None) -> None:
        self.submitted = 0
        self.waited: list[int] = []
        self.outcome = outcome or {"status": "succeeded", "error": None}

    def submit(self, *args: Any) -> Any:
        self.submitted += 1
        return SimpleNamespace(task_uid=40 + self.submitted)

    def wait_for_task(self, uid: int, **kwargs: Any) -> Any:
        self.waited.append(uid)
        if len(self.waited) == 1:
            raise MeilisearchTimeoutError("still processing")
        return SimpleNamespace(uid=uid, **self.outcome)


def test_a_timed_out_task_is_awaited_again_not_enqueued_again() -> None:
    client = TaskClient()
    waiter = TaskWaiter(client, 0.1)  # type: ignore[arg-type]
    with pytest.raises(MeiliUnavailable) as err:
        waiter.run(client.submit, ["docs"], key="batch-1")
    assert err.value.failure.reason == "timeout"
    waiter.run(client.submit, ["docs"], key="batch-1")
    assert client.submitted == 1 and client.waited == [41, 41]
    assert waiter.pending == {}
    waiter.run(client.submit, ["other docs"], key="batch-2")  # new content: a new task
    assert client.submitted == 2


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ({"code": "invalid_document_fields", "type": "invalid_request"}, MeiliTaskFailed),
        ({"code": "no_space_left_on_device", "type": "system"}, MeiliUnavailable),
        ({"code": "io_error", "type": "internal"}, MeiliUnavailable),
    ],
)
def test_failed_tasks_map_to_the_two_outcomes(error: dict[str, str], raised: type) -> None:
    client = TaskClient({"status": "failed", "error": error})
    client.waited.append(0)  # no timeout first
    with pytest.raises(raised):
        TaskWaiter(client, 1).run(client.submit)  # type: ignore[arg-type]


# -- settings: compare before applying -------------------------------------------------------


class SettingsClient:
    def __init__(self, live: dict[str, Any], version: str = "1.16.0") -> None:
        self.live = live
        self.version = version
        self.updates: list[dict[str, Any]] = []

    def get_version(self) -> dict[str, str]:
        return {"pkgVersion": self.version}

    def get_index(self, uid: str) -> Any:
        return SimpleNamespace(uid=uid)

    def index(self, uid: str) -> Any:
        return SimpleNamespace(get_settings=lambda: self.live, update_settings=self._update)

    def _update(self, body: dict[str, Any]) -> Any:
        self.updates.append(body)
        return SimpleNamespace(task_uid=1)

    def wait_for_task(self, uid: int, **kwargs: Any) -> Any:
        return SimpleNamespace(uid=uid, status="succeeded", error=None)


def test_unchanged_settings_are_not_sent_again() -> None:
    wanted = index_settings(budget_ms=200)
    client = SettingsClient(json.loads(json.dumps(wanted)))
    waiter = TaskWaiter(client, 1)  # type: ignore[arg-type]
    assert apply_settings(client, "patients", waiter, budget_ms=200) is False  # type: ignore[arg-type]
    assert client.updates == []
    client.live = {**client.live, "searchCutoffMs": 200}
    assert apply_settings(client, "patients", waiter, budget_ms=200) is False  # type: ignore[arg-type]
    assert client.updates == [wanted]
    # Documents of an older shape (indexed clinic_id, not clinic): they must all be rewritten.
    client.live = {**wanted, "filterableAttributes": ["clinic_id", "active", "keys"]}
    assert apply_settings(client, "patients", waiter, budget_ms=200) is True  # type: ignore[arg-type]


def test_settings_are_not_applied_to_a_server_too_old_for_them() -> None:
    client = SettingsClient({}, version="1.14.0")
    with pytest.raises(MeiliUnavailable) as err:
        apply_settings(client, "patients", TaskWaiter(client, 1), budget_ms=200)  # type: ignore[arg-type]
    assert err.value.failure.misconfigured and err.value.failure.reason == "version"
    assert client.updates == []


# -- the keys command ---------------------------------------------------------------------------


def test_keys_command_uses_the_master_key_from_the_environment(
    recorder: ErrorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import Settings
    from engines.meili import key_specs
    from patient_search.cli import build_parser, cmd_meili_keys

    settings = Settings(meili_url=recorder.url, meili_index="patients")
    args = build_parser().parse_args(["meili", "keys"])
    monkeypatch.delenv("MEILI_MASTER_KEY", raising=False)
    with pytest.raises(SystemExit, match="MEILI_MASTER_KEY"):
        cmd_meili_keys(settings, args)
    assert recorder.seen == []
    monkeypatch.setenv("MEILI_MASTER_KEY", "master-key-for-test")
    with pytest.raises(MeilisearchApiError):  # the recorder answers 503
        cmd_meili_keys(settings, args)
    (sent,) = recorder.seen
    assert sent["auth"] == "Bearer master-key-for-test"
    assert (sent["method"], sent["path"]) == ("GET", f"/keys/{key_specs('patients')['api']['uid']}")
