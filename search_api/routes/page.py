"""The demo search page at `/` (static HTML; it calls the API with a key the user types)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from search_api.page import search_page

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> HTMLResponse:
    return HTMLResponse(search_page())
