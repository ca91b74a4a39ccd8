"""The ceiling: a bare FastAPI endpoint served exactly like the API (same uvicorn, workers)."""

from fastapi import FastAPI

app = FastAPI()


@app.post("/bare")
def bare() -> dict[str, list[str]]:
    return {"results": []}
