# Two commands matter: `make demo` (the offline tour) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantlab-installed

.PHONY: setup test demo lab bench clean

# Idempotent: re-installs only when pyproject.toml changed since the last install.
setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test: setup
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m quantlab demo

lab: setup
	$(BIN)/python -m quantlab lab

bench: setup
	@for b in benchmarks/ingest.py benchmarks/store.py benchmarks/analytics.py benchmarks/backtest.py benchmarks/archive.py benchmarks/scan.py benchmarks/report.py benchmarks/live.py; do echo "== $$b"; OPENBLAS_NUM_THREADS=1 $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) data/demo.db* .pytest_cache
