# The patient-search application image: API, indexer, migrate and reindex are all
# `patient-search <command>` in this one image (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY normalizers ./normalizers
COPY core ./core
COPY engines ./engines
COPY indexer ./indexer
COPY search_api ./search_api
COPY patient_search ./patient_search
COPY deploy ./deploy
RUN pip install . && useradd --system --uid 10001 --home-dir /app patient-search

USER patient-search
EXPOSE 8000 9464
ENTRYPOINT ["patient-search"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
