"""The demo search page: a search box calling the API with a key the user types."""

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def search_page() -> str:
    return resources.files("search_api").joinpath("search_page.html").read_text(encoding="utf-8")
