"""The staff search page: one HTML file, its script and its style, shipped in the package.

No build step and nothing fetched at run time. The clinic's date order and phone
region are written into the page when it is served, so dates read the way the
front desk writes them. Served by search_api.routes.page.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from importlib import resources

from core.settings import Settings

ASSETS = {
    "search_page.js": "text/javascript; charset=utf-8",
    "search_page.css": "text/css; charset=utf-8",
}


@lru_cache(maxsize=8)
def asset_text(name: str) -> str:
    return resources.files("search_api").joinpath(name).read_text(encoding="utf-8")


def search_page(settings: Settings | None = None) -> str:
    """The page, with the clinic's date order and phone region filled in."""
    settings = settings or Settings()
    return (
        asset_text("search_page.html")
        .replace("{{DATE_ORDER}}", escape(settings.date_order))
        .replace("{{REGION}}", escape(settings.default_region))
    )
