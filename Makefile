# Two commands matter: `make demo` (the offline tour) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantlab-installed
# Exact versions of every dependency and of the `test` extra (Python 3.11, Linux).
LOCK := requirements.lock
LOCK_PY ?= python3.11
LOCK_TOOLS := $(VENV)/lock-tools
PIP_TOOLS ?= pip-tools==7.7.0

.PHONY: setup test demo lab bench clean lock

# Idempotent: re-installs only when pyproject.toml or the lock changed since the last
# install. Installs the lock's exact versions, then the project itself without resolving
# anything; `pip check` fails when the lock misses a dependency of pyproject.toml.
setup: $(STAMP)
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r $(LOCK)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip check || { echo "make setup: $(LOCK) does not match pyproject.toml: run 'make lock' and commit $(LOCK)"; exit 1; }
	touch $(STAMP)

# Regenerate the lock from pyproject.toml (dependencies + the `test` extra) with pip-tools,
# in a venv of its own. Keeps existing pins where they still fit; `make lock LOCK_ARGS=--upgrade`
# moves every pin to the newest version allowed.
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(LOCK_PY) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/python -m pip install -q --disable-pip-version-check '$(PIP_TOOLS)'; }
	$(LOCK_TOOLS)/bin/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "make lock: the lock is for Python 3.11; set LOCK_PY to a python3.11")'
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile -q --extra test --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml

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
