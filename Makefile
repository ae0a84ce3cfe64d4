# Two entry points: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit prometheus redis chromium collector bench clean interop-venvs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The metric and dashboard tests run a real Prometheus; Debian packages it.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || test -x /usr/bin/prometheus || { \
	  echo "installing Debian's prometheus (needed by the dashboard tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The fleet tests start their own redis-server (127.0.0.1, free port); Debian packages it.
redis:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server || { \
	  echo "installing Debian's redis-server (needed by the fleet tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

# The HTML report's tests render it in a real browser: Debian's chromium, headless.
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium (needed by the HTML report tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# The OpenTelemetry Collector of collector-config/builder-config.yaml, built from its Go
# modules with the Collector Builder (plus a test build adding the remote-write exporter,
# tests/deploy/builder-test-additions.yaml), cached by the manifests' hash. Cold: 8 min 23 s
# measured on 2 shared cores (8.8 CPU-minutes, ~3 GB of Go caches); cached: nothing to do.
# Needs Go >= 1.24 and the Go module proxy.
OTELCOL_HASH := $(shell cat collector-config/builder-config.yaml tests/deploy/builder-test-additions.yaml | sha256sum | cut -c1-16)
OTELCOL_DIR := $(HOME)/.cache/techrevati/otelcol-$(OTELCOL_HASH)

collector: $(STAMP)
	@test -x $(OTELCOL_DIR)/shipped/otelcol-techrevati -a -x $(OTELCOL_DIR)/test/otelcol-techrevati-test || \
	  $(PY) tests/deploy/collector.py build
	@# the tests look for the binaries where this Makefile says they are
	@test "$$($(PY) tests/deploy/collector.py dir)" = "$(OTELCOL_DIR)"

# Third-party GenAI instrumentations pin conflicting versions: each set in
# tests/interop/envs/ gets its own venv, cached under ~/.cache/techrevati/ by a
# hash of its requirements (built in parallel; a warm cache costs nothing).
# The largest, `frameworks` (pydantic-ai, openai-agents, langgraph, smolagents and
# their instrumentations, ~110 packages), builds cold in 86 s on 2 cores at load ~2
# (48 CPU-s, no pip cache; 242 s with the machine at load 10), beside the others.
interop-venvs:
	$(PYTHON) tests/interop/venvs.py

# Each example keeps its own spans file, so both can be replayed afterwards; each
# file gets its HTML report beside it (the command prints the page's path).
demo: $(STAMP)
	TECHREVATI_SPANS_FILE=telemetry-out/tiny-agent.jsonl $(PY) -m examples.tiny_agent
	$(PY) -m techrevati.runtime report telemetry-out/tiny-agent.jsonl --html telemetry-out/tiny-agent.html
	TECHREVATI_SPANS_FILE=telemetry-out/decorated-agent.jsonl $(PY) -m examples.decorated_agent
	$(PY) -m techrevati.runtime report telemetry-out/decorated-agent.jsonl --html telemetry-out/decorated-agent.html

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict src

unit: $(STAMP)
	$(PY) -m pytest -q

test: $(STAMP) prometheus redis chromium collector interop-venvs lint unit

BENCH_ARGS ?=
# e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP) redis
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
