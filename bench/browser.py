"""Debian's Chromium driven by selenium through chromedriver, for the search page's browser
tests and its latency benchmark. `missing()` says why a browser cannot be had here."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--lang=en-US",
)


def missing() -> str | None:
    """None when a browser can be started, else the reason and how to get it."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install {package} (.ci/run does this)"
    return None


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A new headless Chromium with a fresh profile (nothing kept between runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        *FLAGS,
        f"--window-size={width},{height}",
        f"--user-data-dir={tempfile.mkdtemp(prefix='ps-chromium-')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver
