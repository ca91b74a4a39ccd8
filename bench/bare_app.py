"""The ceiling: a bare FastAPI endpoint served exactly like the API (the same uvicorn,
workers and listening socket per worker: `python -m bench.bare_app PORT WORKERS`)."""

import sys

from fastapi import FastAPI

app = FastAPI()


@app.post("/bare")
def bare() -> dict[str, list[str]]:
    return {"results": []}


if __name__ == "__main__":
    from patient_search.serving import run

    port, workers = (int(arg) for arg in sys.argv[1:3])
    run(
        "bench.bare_app:app",
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
