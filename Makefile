# Two commands on a fresh machine:
#   make run    serve the gateway on the built-in demo models (http://127.0.0.1:8000)
#   make test   install everything (Python deps, Prometheus, Alertmanager, node-exporter, HAProxy, Chromium, Redis)
#               and run lint, types and tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch, pinned: an open range would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test install system-deps bench-deps lint typecheck pytest test-unit test-integration test-e2e bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test,bench]"
	# text-generation pins an old huggingface-hub: install it beside its real deps, without its pins.
	$(BIN)/pip install --quiet --no-deps "text-generation==0.7.0"
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null \
		|| ! command -v prometheus-node-exporter >/dev/null || ! command -v chromium >/dev/null \
		|| ! command -v redis-server >/dev/null \
		|| ! { command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				prometheus prometheus-alertmanager prometheus-node-exporter chromium haproxy redis-server >/dev/null; \
		else \
			echo "missing tools: run 'sudo apt-get install prometheus prometheus-alertmanager prometheus-node-exporter chromium haproxy redis-server'"; exit 1; \
		fi; \
	fi

run: install
	$(BIN)/gateway serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

# The unit tier runs in a process of its own, where torch and transformers cannot be imported (tests/README.md).
pytest: install system-deps
	$(BIN)/python -m pytest -q -p tests.unit.no_torch tests/unit
	$(BIN)/python -m pytest -q tests --ignore=tests/unit

test-unit: install
	$(BIN)/python -m pytest -q -p tests.unit.no_torch tests/unit

test-integration: install
	$(BIN)/python -m pytest -q tests/integration

test-e2e: install system-deps
	$(BIN)/python -m pytest -q tests/e2e

test: lint typecheck pytest

# About 25 minutes on 2 cores: the gateway's sections on the demo model, then the gateway, LitServe and
# `transformers serve --continuous-batching` on the demo model and the bench Llama (bench/run_bench.py --help).
bench: install bench-deps
	$(BIN)/python bench/run_bench.py

# What only the bench needs: hey, the load generator of its second overload (bench/scenarios/overload_hey.py).
bench-deps:
	@if ! command -v hey >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null; \
		else \
			echo "missing tools: run 'sudo apt-get install hey'"; exit 1; \
		fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
