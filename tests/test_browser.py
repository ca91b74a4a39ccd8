"""The staff search page in a real browser: Debian's Chromium, driven by selenium through
chromedriver, against the real API (uvicorn) on real PostgreSQL.

Skipped, with the reason, where Chromium, chromedriver or selenium are missing (`.ci/run`
installs the browser from Debian packages). `PATIENT_SEARCH_SCREENSHOTS=DIR` makes the
screenshot test write its PNGs to DIR (`make screenshot`); otherwise they go to a temp dir.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.browser import chromium, missing
from core.apikeys import create_key
from core.settings import Settings
from search_api.app import create_app
from tests.factories import JOHN_SMITH, cloned_database, patient, seed
from tests.fixtures import free_port, serve_app

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the module is skipped below
    pass


pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

PATIENTS: list[dict[str, Any]] = [
    dict(JOHN_SMITH, id="b1", sex="male", phones=["(555) 010-2233"]),
    # b2 looks like a second registration of b1: same date of birth, near name.
    patient("b2", "Jon", "Smyth", "1985-03-14", mrn="00977"),
    patient("b3", "Johanna", "Smithers", "1962-08-30"),
    patient(
        "b4",
        "Margaret",
        "Thompson",
        "1950-12-25",
        middle="Anne",
        sex="female",
        mrn="00501",
        phones=["555-010-7788", "+44 20 7946 0958"],
        emails=["m.thompson@example.org"],
    ),
    patient("b5", "Mark", "Thomas", "1978-05-02", sex="male"),
    patient("b6", "Martha", "Thompkins", "1944-01-19"),
    # b7 and b8 share a phone and a near name (a nickname): a duplicate by phone.
    patient("b7", "Katherine", "O'Connell", "1990-06-02", sex="female", phones=["555 010 4455"]),
    patient("b8", "Kathy", "OConnell", "1991-01-07", phones=["(555) 010-4455"]),
    patient("b9", "Ahmed", "Khan", "2024-02-11", sex="male"),
    patient("b10", "Elizabeth", "Van der Berg", "1979-06-15", active=False),
    patient("b11", "William", "Garcia-Lopez", "1972-11-05"),
    patient("b12", "José", "Núñez", "2001-01-09", sex="male"),
]
# Words of the patients above that must never reach the page's URL or history.
PRIVATE = ["smith", "smyth", "thompson", "margaret", "margret", "00412", "1985", "2233", "b1"]


@pytest.fixture(scope="module")
def seeded_db(server_url: str, template_db: str) -> Iterator[tuple[str, str]]:
    """One database for the module (the browser tests only read): url and an API key."""
    with cloned_database(server_url, template_db, prefix="b") as url:
        key = seed(
            url, PATIENTS, Settings(), lambda c: create_key(c, ["clinic-a"], name="front desk")
        )
        yield url, key


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(pool_min_size=1, pool_max_size=4)


@pytest.fixture(scope="module")
def api(seeded_db: tuple[str, str], settings: Settings) -> Iterator[str]:
    with serve_app(create_app(settings, seeded_db[0])) as base:
        yield base


@contextmanager
def browser(width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A Chromium window of its own, closed afterwards."""
    d: WebDriver = chromium(width, height)
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with browser() as d:
        yield d


# ---- helpers -----------------------------------------------------------------------------


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)


def options(driver: WebDriver) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, "#results [role=option]")


def focused_id(driver: WebDriver) -> str:
    return str(driver.execute_script("return document.activeElement && document.activeElement.id"))


def open_signed_in(driver: WebDriver, base: str, key: str, staff: str = "") -> None:
    """Load the page with the key already given in this tab (as after the first sign-in)."""
    driver.get(base + "/")
    driver.execute_script(
        "sessionStorage.setItem('patient-search.key', arguments[0]);"
        "if (arguments[1]) sessionStorage.setItem('patient-search.staff', arguments[1]);",
        key,
        staff,
    )
    driver.get(base + "/")
    wait_for(driver, lambda d: focused_id(d) == "q")


def type_query(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "q")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def results_for(driver: WebDriver, text: str) -> list[str]:
    """Type, wait for the answer to what was typed, return the result rows' text."""
    marks = driver.execute_script(
        "return performance.getEntriesByName('ps-keystroke-to-results').length"
    )
    type_query(driver, text)
    wait_for(
        driver,
        lambda d: (
            d.execute_script(
                "return performance.getEntriesByName('ps-keystroke-to-results').length"
            )
            > marks
            and not d.execute_script(
                "return document.getElementById('q').value !== arguments[0]", text
            )
        ),
    )
    time.sleep(0.3)  # a late answer for a prefix of the text must not replace it (checked below)
    return [o.text for o in options(driver)]


def no_patient_in_url_or_history(driver: WebDriver, base: str) -> None:
    href = driver.execute_script("return location.href")
    assert href == base + "/"
    state = json.dumps(driver.execute_script("return history.state"))
    title = driver.title
    for word in PRIVATE:
        assert word not in href.lower() and word not in state.lower(), word
        assert word not in title.lower()


# ---- the tests ---------------------------------------------------------------------------


def test_misspelled_name_finds_the_right_patient_first(
    driver: WebDriver, api: str, seeded_db: tuple[str, str]
) -> None:
    open_signed_in(driver, api, seeded_db[1])
    rows = results_for(driver, "margret tompson")
    assert rows, "no results rendered"
    assert rows[0].startswith("THOMPSON, Margaret Anne"), rows
    first = options(driver)[0]
    # The matched parts are marked, the phone is written for the region, the date in MDY.
    marks = [m.text for m in first.find_elements(By.TAG_NAME, "mark")]
    assert "THOMPSON" in marks and "Margaret" in marks, marks
    assert "Born 12/25/1950" in rows[0] and "Female" in rows[0] and "MRN 00501" in rows[0]
    assert "(555) 010-7788" in rows[0] and "+44 20 7946 0958" in rows[0]
    chips = driver.find_element(By.ID, "chips").text
    assert "name: margret tompson" in chips
    assert first.get_attribute("aria-selected") == "true"


def test_a_year_typed_with_the_name_is_shown_and_marked(
    driver: WebDriver, api: str, seeded_db: tuple[str, str]
) -> None:
    """ "thompson 1950": read as a year of birth too (a chip says so), and on the result
    only the year of the date is marked."""
    open_signed_in(driver, api, seeded_db[1])
    rows = results_for(driver, "thompson 1950")
    assert rows and rows[0].startswith("THOMPSON, Margaret Anne"), rows
    marks = [m.text for m in options(driver)[0].find_elements(By.TAG_NAME, "mark")]
    assert "1950" in marks and "12/25/1950" not in marks, marks
    assert "born in 1950" in driver.find_element(By.ID, "chips").text


def test_stale_answers_are_dropped(driver: WebDriver, api: str, seeded_db: tuple[str, str]) -> None:
    open_signed_in(driver, api, seeded_db[1])
    box = driver.find_element(By.ID, "q")
    # Type fast, one key at a time: only the answer for the last text may be shown.
    for ch in "khan":
        box.send_keys(ch)
        time.sleep(0.03)
    wait_for(driver, lambda d: len(options(d)) >= 1)
    time.sleep(0.6)
    rows = [o.text for o in options(driver)]
    assert rows and rows[0].startswith("KHAN, Ahmed"), rows
    assert driver.find_element(By.ID, "chips").text.endswith("khan")


def test_keyboard_only_flow(api: str, seeded_db: tuple[str, str]) -> None:
    with browser() as d:
        d.get(api + "/")
        # Sign in with the keyboard: focus is in the key box on load, Enter submits.
        wait_for(d, lambda d: focused_id(d) == "key")
        d.switch_to.active_element.send_keys(seeded_db[1], Keys.ENTER)
        wait_for(d, lambda d: focused_id(d) == "q")
        outline = d.execute_script(
            "const s = getComputedStyle(document.activeElement);"
            "return [s.outlineStyle, parseFloat(s.outlineWidth)]"
        )
        assert outline[0] == "solid" and outline[1] >= 2, outline  # a visible focus ring

        rows = results_for(d, "smith")
        assert len(rows) >= 3
        box = d.switch_to.active_element
        assert box.get_attribute("aria-activedescendant") == "opt-0"
        box.send_keys(Keys.ARROW_DOWN)
        box.send_keys(Keys.ARROW_DOWN)
        box.send_keys(Keys.ARROW_UP)
        assert box.get_attribute("aria-activedescendant") == "opt-1"
        assert options(d)[1].get_attribute("aria-selected") == "true"
        chosen = rows[1].split("\n")[0]

        box.send_keys(Keys.ENTER)  # opens the selected patient
        dialog = d.find_element(By.ID, "detail")
        wait_for(d, lambda d: dialog.get_attribute("open") is not None)
        assert d.find_element(By.ID, "detail-title").text == chosen
        assert focused_id(d) == "detail-title"
        fields = d.find_element(By.ID, "detail-fields").text
        assert "MRN" in fields and "Date of birth" in fields and "Status\nActive" in fields

        d.switch_to.active_element.send_keys(Keys.ESCAPE)  # back to the same list and row
        wait_for(d, lambda d: dialog.get_attribute("open") is None)
        assert focused_id(d) == "q"
        assert d.find_element(By.ID, "q").get_attribute("aria-activedescendant") == "opt-1"
        assert [o.text for o in options(d)] == rows

        # Enter while an answer is still coming opens the answer to what was typed last.
        box = d.switch_to.active_element
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("ahmed khan", Keys.ENTER)
        wait_for(d, lambda d: dialog.get_attribute("open") is not None)
        assert d.find_element(By.ID, "detail-title").text == "KHAN, Ahmed"
        d.find_element(By.ID, "detail-back").send_keys(Keys.ENTER)  # the Back button
        wait_for(d, lambda d: dialog.get_attribute("open") is None)

        d.switch_to.active_element.send_keys(Keys.ESCAPE)  # Esc clears
        assert d.find_element(By.ID, "q").get_attribute("value") == ""
        assert options(d) == []
        assert d.find_element(By.ID, "q").get_attribute("aria-expanded") == "false"
        assert not d.find_element(By.ID, "reading").is_displayed()


def test_back_button_closes_the_panel_and_nothing_reaches_url_or_history(
    driver: WebDriver, api: str, seeded_db: tuple[str, str]
) -> None:
    open_signed_in(driver, api, seeded_db[1])
    start_length = driver.execute_script("return history.length")
    results_for(driver, "smith 3/14/1985")
    no_patient_in_url_or_history(driver, api)
    options(driver)[0].click()
    dialog = driver.find_element(By.ID, "detail")
    wait_for(driver, lambda d: dialog.get_attribute("open") is not None)
    wait_for(driver, lambda d: "00412" in d.find_element(By.ID, "detail-fields").text)
    no_patient_in_url_or_history(driver, api)
    assert driver.execute_script("return history.state") == {"panel": "detail"}
    assert driver.execute_script("return history.length") == start_length + 1
    driver.back()  # the browser's Back closes the panel and stays on the page
    wait_for(driver, lambda d: dialog.get_attribute("open") is None)
    no_patient_in_url_or_history(driver, api)
    assert len(options(driver)) >= 2
    # The key is in sessionStorage only; nothing is kept in localStorage or cookies.
    assert driver.execute_script("return sessionStorage.getItem('patient-search.key')")
    assert driver.execute_script("return localStorage.length") == 0
    assert driver.get_cookies() == []


def test_duplicate_marks(driver: WebDriver, api: str, seeded_db: tuple[str, str]) -> None:
    open_signed_in(driver, api, seeded_db[1])
    rows = results_for(driver, "smith 3/14/1985")
    by_name = {r.split("\n")[0]: r for r in rows}
    smith = next(r for n, r in by_name.items() if n.startswith("SMITH, John"))
    smyth = next(r for n, r in by_name.items() if n.startswith("SMYTH, Jon"))
    for row, other in ((smith, "SMYTH, Jon"), (smyth, "SMITH, John")):
        assert "Possible duplicate" in row or "Likely duplicate" in row  # by the grades
        assert f"May be the same person as {other}" in row
        assert "same date of birth and a similar name" in row
    assert all("duplicate" not in r for n, r in by_name.items() if n.startswith("SMITHERS"))

    rows = results_for(driver, "555 010 4455")
    assert len(rows) == 2 and all("same phone and a similar name" in r for r in rows), rows


def test_empty_state_suggests_what_to_add(
    driver: WebDriver, api: str, seeded_db: tuple[str, str]
) -> None:
    open_signed_in(driver, api, seeded_db[1])
    type_query(driver, "zzyzx qwerty")
    empty = driver.find_element(By.ID, "empty")
    wait_for(driver, lambda d: empty.is_displayed())
    assert "No patient matches" in empty.text
    assert "date of birth (for example 3/14/1985)" in empty.text
    assert "phone number" in empty.text


def test_inactive_patients_on_request(
    driver: WebDriver, api: str, seeded_db: tuple[str, str]
) -> None:
    open_signed_in(driver, api, seeded_db[1])
    type_query(driver, "van der berg")
    wait_for(driver, lambda d: d.find_element(By.ID, "empty").is_displayed())
    driver.find_element(By.ID, "inactive").click()
    wait_for(driver, lambda d: len(options(d)) == 1)
    assert "Inactive" in options(driver)[0].text
    driver.find_element(By.ID, "inactive").click()


def test_degraded_banner_with_a_broken_primary(
    seeded_db: tuple[str, str], settings: Settings
) -> None:
    from engines.meili import MeiliEngine, make_client

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the primary is down
    primary = MeiliEngine(make_client(dead, "key", 0.2), "patients", require_verified=False)
    with browser() as d, serve_app(create_app(settings, seeded_db[0], primary=primary)) as base:
        open_signed_in(d, base, seeded_db[1])
        rows = results_for(d, "thompson")
        banner = d.find_element(By.ID, "banner")
        assert banner.is_displayed() and "backup engine" in banner.text
        assert banner.get_attribute("data-kind") == "degraded"
        assert rows and rows[0].startswith("THOMPSON")  # still answers, from PostgreSQL


def test_unreachable_banner_then_recovery(seeded_db: tuple[str, str], settings: Settings) -> None:
    port = free_port()
    with browser() as d:
        with serve_app(create_app(settings, seeded_db[0]), port) as base:
            open_signed_in(d, base, seeded_db[1])
            results_for(d, "khan")
        # The API is gone: typing more shows the unreachable banner, and keeps the text.
        d.find_element(By.ID, "q").send_keys(" ahmed")
        banner = d.find_element(By.ID, "banner")
        wait_for(d, lambda d: banner.get_attribute("data-kind") == "unreachable")
        assert "not answering" in banner.text and banner.get_attribute("role") == "alert"
        assert d.find_element(By.ID, "q").get_attribute("value") == "khan ahmed"
        assert "earlier search" in d.find_element(By.ID, "status").text
        # Back again: the page retries by itself and shows the answer to what was typed.
        with serve_app(create_app(settings, seeded_db[0]), port):
            wait_for(d, lambda d: not banner.is_displayed(), timeout=30)
            assert d.find_element(By.ID, "chips").text.endswith("khan ahmed")
            assert options(d)[0].text.startswith("KHAN, Ahmed")


def test_wrong_key_asks_again(driver: WebDriver, api: str) -> None:
    open_signed_in(driver, api, "not-a-key")
    type_query(driver, "smith")
    wait_for(driver, lambda d: d.find_element(By.ID, "sign-in").is_displayed())
    assert "not accepted" in driver.find_element(By.ID, "sign-in-error").text
    assert focused_id(driver) == "key"
    assert driver.execute_script("return sessionStorage.getItem('patient-search.key')") is None


def test_tablet_width_and_200_percent_zoom(api: str, seeded_db: tuple[str, str]) -> None:
    """No sideways scrolling at a tablet's width, nor at 200% zoom of a 1280 px screen
    (a 640 CSS px viewport at device scale 2)."""
    with browser() as d:
        for width, height, scale in ((768, 1024, 1), (640, 450, 2)):
            d.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": False},
            )
            open_signed_in(d, api, seeded_db[1])
            results_for(d, "thompson margaret 12/25/1950")
            options(d)[0].click()
            wait_for(d, lambda d: d.find_element(By.ID, "detail").get_attribute("open") is not None)
            overflow = d.execute_script(
                "const e = document.documentElement; return e.scrollWidth - e.clientWidth"
            )
            assert overflow <= 0, (width, overflow)
            box = d.find_element(By.ID, "q").rect
            assert box["width"] > width * 0.6
            d.switch_to.active_element.send_keys(Keys.ESCAPE)


def _axe(driver: WebDriver) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    from importlib import resources

    script = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
    driver.execute_script(script)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(done, e => done({error: String(e)}));"
    )
    assert "error" not in result, result
    return [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]


def test_accessibility_scan(api: str, seeded_db: tuple[str, str]) -> None:
    """axe-core (shipped in the axe-playwright-python wheel, run offline): no serious or
    critical violation on the sign-in form, the results list, the detail panel and the
    empty state."""
    pytest.importorskip("axe_playwright_python", reason="axe-playwright-python is not installed")
    with browser() as d:
        d.get(api + "/")
        wait_for(d, lambda d: focused_id(d) == "key")
        found = {"sign-in": _axe(d)}
        open_signed_in(d, api, seeded_db[1])
        results_for(d, "smith 3/14/1985")
        found["results"] = _axe(d)
        options(d)[0].click()
        wait_for(d, lambda d: "00412" in d.find_element(By.ID, "detail-fields").text)
        found["detail"] = _axe(d)
        d.switch_to.active_element.send_keys(Keys.ESCAPE)
        type_query(d, "zzyzx qwerty")
        wait_for(d, lambda d: d.find_element(By.ID, "empty").is_displayed())
        found["empty"] = _axe(d)
        summary = {
            k: [(v["id"], v["impact"], len(v["nodes"])) for v in vs] for k, vs in found.items()
        }
        assert not any(found.values()), summary


def test_screenshots(api: str, seeded_db: tuple[str, str], settings: Settings) -> None:
    """PNG screenshots of the main states, for `make screenshot` (docs/screenshots); the
    states themselves are checked by the tests above, so `make test` leaves this out."""
    if not os.environ.get("PATIENT_SEARCH_SCREENSHOTS"):
        pytest.skip("screenshots are taken by `make screenshot` (PATIENT_SEARCH_SCREENSHOTS)")
    folder = Path(os.environ["PATIENT_SEARCH_SCREENSHOTS"])
    folder.mkdir(parents=True, exist_ok=True)
    written = take_screenshots(folder, api, seeded_db, settings)
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def take_screenshots(
    folder: Path, api: str, seeded_db: tuple[str, str], settings: Settings
) -> list[Path]:
    from engines.meili import MeiliEngine, make_client

    written: list[Path] = []

    def shot(d: WebDriver, name: str) -> None:
        path = folder / f"{name}.png"
        d.save_screenshot(str(path))
        written.append(path)

    with browser(1200, 820) as d:
        d.get(api + "/")
        wait_for(d, lambda d: focused_id(d) == "key")
        shot(d, "01-sign-in")
        open_signed_in(d, api, seeded_db[1])
        results_for(d, "margret tompson")
        shot(d, "02-results-misspelled-name")
        results_for(d, "smith 3/14/1985")
        shot(d, "03-duplicates-name-and-date")
        box = d.find_element(By.ID, "q")
        box.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
        wait_for(d, lambda d: "MRN" in d.find_element(By.ID, "detail-fields").text)
        time.sleep(0.3)
        shot(d, "04-detail-panel")
        d.switch_to.active_element.send_keys(Keys.ESCAPE)
        results_for(d, "555 010 4455")
        shot(d, "05-duplicates-phone")
        type_query(d, "zzyzx qwerty")
        wait_for(d, lambda d: d.find_element(By.ID, "empty").is_displayed())
        shot(d, "06-empty-state")

    dead = f"http://127.0.0.1:{free_port()}"
    primary = MeiliEngine(make_client(dead, "key", 0.2), "patients", require_verified=False)
    with browser(1200, 820) as d:
        with serve_app(create_app(settings, seeded_db[0], primary=primary)) as base:
            open_signed_in(d, base, seeded_db[1])
            results_for(d, "thompson")
            shot(d, "07-degraded-banner")
        type_query(d, "thompson m")
        wait_for(
            d, lambda d: d.find_element(By.ID, "banner").get_attribute("data-kind") == "unreachable"
        )
        shot(d, "08-unreachable-banner")

    with browser() as d:
        for name, width, height, scale in (
            ("09-tablet", 768, 1024, 1),
            ("10-zoom-200", 640, 450, 2),
        ):
            d.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": False},
            )
            open_signed_in(d, api, seeded_db[1])
            results_for(d, "smith 3/14/1985")
            shot(d, name)
    return written
