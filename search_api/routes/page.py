"""The staff search page at `/` and its script and style under `/page/`.

Security headers: a strict Content-Security-Policy lets the page load only its own
files and talk only to this API; no referrer leaves the page.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from search_api.dependencies import State
from search_api.errors import ApiError
from search_api.page import ASSETS, asset_text, search_page

router = APIRouter(include_in_schema=False)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@router.get("/")
def index(state: State) -> HTMLResponse:
    return HTMLResponse(search_page(state.settings), headers=SECURITY_HEADERS)


@router.get("/page/{name}")
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, "not_found", "no such page asset")
    return Response(asset_text(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)
