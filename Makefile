# Every target bootstraps .venv from a clean clone; nothing relies on a hand install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BSTAMP := $(VENV)/.installed-bench
# No bytecode is written as modules are imported, so `bytecode` compiles the tree
# ahead, as `pip install` does for a wheel: without it every process netlet starts
# (workers, servers) recompiles the package from source, ~60 ms each.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test lint typecheck bench bytecode clean postgres chromium nodejs soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(BSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet -e '.[bench-native]' 2>/dev/null \
	  || echo "note: primesieve could not be installed (needs libprimesieve-dev); P2 shows it as n/a"
	touch $@

bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src bench examples >/dev/null

run: bytecode
	$(BIN)/netlet demo

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The bank's tests run its ledger on a private PostgreSQL server as well as on SQLite
# (tests/apps/bank/pgserver.py starts one from the machine's PostgreSQL binaries):
# installed here when missing. `make run` never needs them.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL for the bank's tests (apt-get install postgresql)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq postgresql >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } \
	  || echo "note: PostgreSQL could not be installed (root needed); its bank tests skip"; }

# The dashboard's browser tests (tests/web) drive Debian's Chromium through Playwright
# (never a browser Playwright downloads): installed here when missing.
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium for the dashboard's browser tests (apt-get install chromium)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: Chromium could not be installed (root needed); the browser tests skip"; }

# The chaos suite's foreign client (tests/chaos/foreign_client.mjs) runs on Node.js:
# Debian's nodejs, installed here when missing.
nodejs:
	@command -v node >/dev/null 2>&1 || { \
	  echo "installing Node.js for the chaos suite's foreign client (apt-get install nodejs)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq nodejs >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq nodejs >/dev/null; } \
	  || echo "note: Node.js could not be installed (root needed); its chaos test skips"; }

# Two processes share the tests (pytest-xdist), each taking the next test when it is
# free: the suite is mostly waiting on real sockets and child processes.
test: lint typecheck bytecode postgres chromium nodejs
	$(BIN)/pytest -q -n 2 --dist worksteal

# 10,000 seeds of the whole-cluster simulation and 10,000 of the bank's (docs/testing.md),
# one process per core (the bank's: about 4 minutes on 2 cores). `make test` runs 300 and 100.
soak: bytecode
	$(BIN)/python -m netlet.testing --seeds 0-9999 --jobs $$(nproc)
	$(BIN)/python -m netlet.testing --bank --seeds 0-9999 --jobs $$(nproc)

bench: $(BSTAMP) bytecode
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
