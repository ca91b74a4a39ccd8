# The patient-search application image: API, indexer, migrate and reindex are all
# `patient-search <command>` in this one image (see docker-compose.yml).

# Build the wheel where a C compiler is, so the search path is compiled (setup.py);
# the runtime image below has no compiler and needs none.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY normalizers ./normalizers
COPY core ./core
COPY engines ./engines
COPY indexer ./indexer
COPY search_api ./search_api
COPY patient_search ./patient_search
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY deploy ./deploy
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /app patient-search

USER patient-search
EXPOSE 8000 9464
ENTRYPOINT ["patient-search"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
