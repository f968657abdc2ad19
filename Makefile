# actgeo: `make demo` runs the whole pipeline on the embedded default; `make test` runs the suite.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PYTHONUNBUFFERED := 1
# `make ui` serves the HTML reports and figures here (127.0.0.1 only); the assets link to it.
REPORT_PORT ?= 3001
export ACTGEO_REPORT_URL ?= http://127.0.0.1:$(REPORT_PORT)

.PHONY: demo test ui bench lint full sysdeps clean

demo: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/actgeo run --profile demo

full: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/actgeo run --profile full

test: $(VENV)/.installed-dev sysdeps $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/ruff check actgeo_assets actgeo_tests benchmarks
	$(BIN)/python -m pytest

# The Dagster UI (`dagster dev`: webserver + daemon; sensors and declarative automation run by default, and
# the backfill loop looks every 2 s, not 30: actgeo_assets/dev.py) on http://127.0.0.1:3000, and beside it
# the report server on $(ACTGEO_REPORT_URL); both stop together.
ui: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/python -m actgeo_assets.report_server --port $(REPORT_PORT) & server=$$!; \
	trap 'kill $$server 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m actgeo_assets.dev -m actgeo_assets.definitions -h 127.0.0.1 -p 3000

# Benchmarks against peers, side by side (writes benchmarks/results/*.md, then benchmarks/RESULTS.md).
# pruning.md (benchmarks/bench_pruned_tiles.py, needs a `scale` run), dagster_scale.md
# (benchmarks/dagster_scale.py, 16 min) and ui_materialize_all.md (benchmarks/ui_materialize_all.py, 20 min) are
# long hand-run benchmarks: their last results are kept and included.
# Case (a) of the graph benchmark uses the demo's activations, so the demo runs first if needed.
bench: $(VENV)/.installed-dev
	mkdir -p benchmarks/results
	@[ -f data/demo/components/summary.json ] || $(MAKE) demo
	$(BIN)/python benchmarks/demo_acts.py data/demo data/demo/bench_acts.npy
	$(BIN)/python benchmarks/bench_graph.py --acts data/demo/bench_acts.npy
	$(BIN)/python benchmarks/bench_capture.py
	cat benchmarks/results/capture.md benchmarks/results/graph.md benchmarks/results/gpu.md \
	    benchmarks/results/pruning.md benchmarks/results/dagster_scale.md \
	    benchmarks/results/ui_materialize_all.md > benchmarks/RESULTS.md

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check actgeo_assets actgeo_tests benchmarks

# The local Dagster instance (sqlite under .dagster_home), sized for this machine: dagster.local.yaml
# (pools and run queue limits); rewritten when that file changes.
$(DAGSTER_HOME)/dagster.yaml: dagster.local.yaml
	mkdir -p $(DAGSTER_HOME) && cp dagster.local.yaml $@

# Python's venv module lives in a separate Debian package on a fresh machine.
$(VENV)/bin/python:
	$(PY) -m venv $(VENV) || { $(APT) update -qq && $(APT) install -y -qq python3-venv && rm -rf $(VENV) && $(PY) -m venv $(VENV); }

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[cpu]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[cpu,dev]'
	touch $@

# Debian's chromium (driven by Playwright, no browser download) and postgresql (integration tests).
sysdeps:
	@if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing Debian packages: chromium postgresql"; \
	  $(APT) update -qq && $(APT) install -y -qq chromium postgresql >/dev/null; \
	fi

clean:
	rm -rf data .dagster_home test-output
