"""The staff search page: one HTML file, its script and its style, shipped in the package.

No build step and nothing fetched at run time. The clinic's date order and phone
region are written into the page when it is served, so dates read the way the
front desk writes them. A strict Content-Security-Policy lets the page talk to
this API only; the page itself never holds patient data in its URL or history.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from core.settings import Settings
from search_api.errors import ApiError

ASSETS = {
    "search_page.js": "text/javascript; charset=utf-8",
    "search_page.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=8)
def _asset(name: str) -> str:
    return resources.files("search_api").joinpath(name).read_text(encoding="utf-8")


def search_page(settings: Settings | None = None) -> str:
    """The page, with the clinic's date order and phone region filled in."""
    settings = settings or Settings()
    return (
        _asset("search_page.html")
        .replace("{{DATE_ORDER}}", escape(settings.date_order))
        .replace("{{REGION}}", escape(settings.default_region))
    )


def _settings(request: Request) -> Settings:
    state = getattr(request.app.state, "search", None)
    return state.settings if state is not None else Settings()


@router.get("/")
def index(request: Request) -> HTMLResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return HTMLResponse(search_page(_settings(request)), headers=headers)


@router.get("/page/{name}")
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, "not_found", "no such page asset")
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(_asset(name), media_type=ASSETS[name], headers=headers)
