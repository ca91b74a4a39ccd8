"""The search page meeting accountable access (issue 13) in a real browser: a key that
requires a staff user, the rate limit's 429, and the detail panel's read in the trail."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.apikeys import create_key
from core.settings import Settings
from search_api.app import create_app
from tests.fixtures import serve_app
from tests.test_browser import (
    By,
    Keys,
    WebDriver,
    browser,
    focused_id,
    open_signed_in,
    options,
    pytestmark,  # noqa: F401 - the same skip when no browser is here
    results_for,
    seeded_db,  # noqa: F401 - fixture
    settings,  # noqa: F401 - fixture
    wait_for,
)

pytest.importorskip("search_api.access", reason="needs accountable access (issue 13)")


@pytest.fixture
def d() -> Iterator[WebDriver]:
    with browser() as driver:
        yield driver


def _audit_rows(url: str, since: float) -> list[tuple[str | None, str, int, list[str]]]:
    """Audit records written since `since` (the writer flushes within AUDIT_FLUSH_MS)."""
    time.sleep(1.0)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select staff_user, action, outcome, patient_ids from patient_search.audit_log "
            "where at >= to_timestamp(%s) order by seq",
            (since,),
        ).fetchall()
    return [(r[0], r[1], r[2], list(r[3])) for r in rows]


def test_staff_user_asked_once_when_the_key_requires_it(
    d: WebDriver,
    seeded_db: tuple[str, str],  # noqa: F811
    settings: Settings,  # noqa: F811
) -> None:
    with psycopg.connect(seeded_db[0]) as conn:
        key = create_key(conn, ["clinic-a"], name="ehr desk", require_user=True)
        conn.commit()
    started = time.time()
    with serve_app(create_app(settings, seeded_db[0])) as base:
        d.get(base + "/")
        wait_for(d, lambda d: focused_id(d) == "key")
        d.switch_to.active_element.send_keys(key, Keys.ENTER)  # no staff user given
        wait_for(d, lambda d: focused_id(d) == "q")
        d.switch_to.active_element.send_keys("ahmed khan")
        # The key refuses requests without X-Staff-User: the page asks for it, once.
        wait_for(d, lambda d: d.find_element(By.ID, "sign-in").is_displayed())
        assert "staff user ID" in d.find_element(By.ID, "sign-in-error").text
        assert focused_id(d) == "staff"
        d.switch_to.active_element.send_keys("frontdesk-7", Keys.ENTER)
        wait_for(d, lambda d: len(options(d)) >= 1)
        assert options(d)[0].text.startswith("KHAN, Ahmed")
        assert d.execute_script("return sessionStorage.getItem('patient-search.staff')") == (
            "frontdesk-7"
        )
        assert "frontdesk-7" in d.find_element(By.ID, "who-label").text
        # Opening the patient reads it by id: a "read" in the trail, by that staff user.
        d.switch_to.active_element.send_keys(Keys.ENTER)
        wait_for(d, lambda d: "Clinic" in d.find_element(By.ID, "detail-fields").text)
        rows = _audit_rows(seeded_db[0], started)
    assert (None, "search", 400, []) in rows  # the refused search is on the trail too
    assert ("frontdesk-7", "search", 200, ["b9"]) in rows
    assert ("frontdesk-7", "read", 200, ["b9"]) in rows
    assert all(user in (None, "frontdesk-7") for user, *_ in rows)


def test_rate_limited_banner_counts_down_then_searches_again(
    d: WebDriver,
    seeded_db: tuple[str, str],  # noqa: F811
) -> None:
    tight = Settings(
        pool_min_size=1, pool_max_size=4, rate_limit_key_per_s=0.5, rate_limit_key_burst=2
    )
    with psycopg.connect(seeded_db[0]) as conn:
        key = create_key(conn, ["clinic-a"], name="busy desk")
        conn.commit()
    with serve_app(create_app(tight, seeded_db[0])) as base:
        open_signed_in(d, base, key)
        results_for(d, "khan")
        results_for(d, "smith")
        d.find_element(By.ID, "q").send_keys(" john")  # the third within a second: 429
        banner = d.find_element(By.ID, "banner")
        wait_for(d, lambda d: banner.get_attribute("data-kind") == "limited")
        assert "Too many searches" in banner.text and "Searching again in" in banner.text
        assert banner.get_attribute("role") == "alert"
        # After Retry-After the page searches again by itself.
        wait_for(d, lambda d: not banner.is_displayed(), timeout=20)
        assert d.find_element(By.ID, "chips").text.endswith("smith john")
        assert options(d)[0].text.startswith("SMITH, John")


def test_access_screenshots(
    d: WebDriver,
    seeded_db: tuple[str, str],  # noqa: F811
    settings: Settings,  # noqa: F811
) -> None:
    """The staff-user prompt and the rate-limit banner, for `make screenshot`."""
    if not os.environ.get("PATIENT_SEARCH_SCREENSHOTS"):
        pytest.skip("screenshots are taken by `make screenshot` (PATIENT_SEARCH_SCREENSHOTS)")
    folder = Path(os.environ["PATIENT_SEARCH_SCREENSHOTS"])
    with psycopg.connect(seeded_db[0]) as conn:
        needs_user = create_key(conn, ["clinic-a"], name="ehr desk 2", require_user=True)
        busy = create_key(conn, ["clinic-a"], name="busy desk 2")
        conn.commit()
    with serve_app(create_app(settings, seeded_db[0])) as base:
        open_signed_in(d, base, needs_user)
        d.switch_to.active_element.send_keys("ahmed khan")
        wait_for(d, lambda d: d.find_element(By.ID, "sign-in").is_displayed())
        d.save_screenshot(str(folder / "11-staff-user-required.png"))
    tight = Settings(
        pool_min_size=1, pool_max_size=4, rate_limit_key_per_s=0.2, rate_limit_key_burst=2
    )
    with serve_app(create_app(tight, seeded_db[0])) as base:
        open_signed_in(d, base, busy)
        results_for(d, "khan")
        results_for(d, "smith")
        d.find_element(By.ID, "q").send_keys(" john")
        banner = d.find_element(By.ID, "banner")
        wait_for(d, lambda d: banner.get_attribute("data-kind") == "limited")
        d.save_screenshot(str(folder / "12-rate-limited.png"))
