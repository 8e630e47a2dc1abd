# The two commands a new user runs: `make demo` and `make test`. Both create or reuse .venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3.11

.PHONY: demo test install redis lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,engine]'
	@touch $(STAMP)

install: $(STAMP)

# redis-server is a system package: install it once if it is missing (the tests start their own).
redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

demo: install
	$(VENV)/bin/tollgate demo

test: install redis
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check gateway policies local_engine tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache

# Arize Phoenix as a real OTLP trace sink: the gateway's spans go to it over OTLP/HTTP and are
# read back through its REST API (deploy/phoenix/README.md). Phoenix's pins conflict with the
# gateway's, so it gets a venv of its own (~850 MB, built once; bump the version to rebuild).
PHOENIX_VENV := .venv-phoenix
PHOENIX_VERSION ?= 20.26.1
PHOENIX_STAMP := $(PHOENIX_VENV)/.installed-$(PHOENIX_VERSION)

.PHONY: phoenix-check

$(PHOENIX_STAMP):
	@test -x $(PHOENIX_VENV)/bin/python || $(PYTHON) -m venv $(PHOENIX_VENV) || python3 -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install -q --upgrade pip
	$(PHOENIX_VENV)/bin/python -m pip install -q 'arize-phoenix==$(PHOENIX_VERSION)'
	@touch $(PHOENIX_STAMP)

phoenix-check: install $(PHOENIX_STAMP)
	$(PY) deploy/phoenix/check.py --phoenix $(PHOENIX_VENV)/bin/phoenix
