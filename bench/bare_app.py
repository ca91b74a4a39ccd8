"""The ceiling: a bare FastAPI endpoint served exactly like the API (the same uvicorn,
workers, listening socket per worker and even spread of keep-alive clients:
`python -m bench.bare_app PORT WORKERS`)."""

import sys

from fastapi import FastAPI

from search_api.spread import Spread, shared_surplus

app = FastAPI()
if (surplus := shared_surplus()) is not None:  # as the API's workers even their clients out
    app.add_middleware(Spread, surplus=surplus)


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
