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
