# Two entry points for people (see README): `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format typecheck check bench-relevance bench-external bench-indexer bench-load bench-cache screenshot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The modules setup.py compiles (pyproject.toml, [tool.patient-search] native): when one
# changes, the install builds it again before the tests or the demo run.
NATIVE := $(shell $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["patient-search"]["native"])' 2>/dev/null)

$(STAMP): pyproject.toml setup.py $(NATIVE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/patient-search demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench-relevance: $(STAMP)
	$(BIN)/python -m bench.relevance $(ARGS)

bench-external: $(STAMP)
	$(BIN)/python -m bench.external $(ARGS)

bench-indexer: $(STAMP)
	$(BIN)/python -m bench.indexer $(ARGS)

bench-load: $(STAMP)
	$(BIN)/python -m bench.load $(ARGS)

bench-cache: $(STAMP)
	$(BIN)/python -m bench.cache $(ARGS)

# PNG screenshots of the search page's main states (real Chromium, real API and PostgreSQL).
SCREENSHOTS ?= docs/screenshots
screenshot: $(STAMP)
	PATIENT_SEARCH_SCREENSHOTS=$(abspath $(SCREENSHOTS)) \
		$(BIN)/python -m pytest tests/test_browser.py tests/test_browser_access.py -q -k screenshots

clean:
	rm -rf $(VENV) .patient-search .pytest_cache .mypy_cache .ruff_cache build
	find normalizers core engines indexer search_api patient_search -name '*.so' -delete
	rm -f *__mypyc*.so
