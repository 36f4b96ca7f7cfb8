# The README's two commands are `make up` and `make test`; everything else here serves them.
# uv is used when on PATH, otherwise installed once into .tools/uv (needs only python3 >= 3.11).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
BUF_VERSION := 1.75.0
UV := $(shell command -v uv 2>/dev/null || echo .tools/uv/bin/uv)
BUF := .tools/node_modules/.bin/buf

.PHONY: up test env buf protos lint bench-embedder bench-search clean

## make up: create .venv from the lock file and run the whole stack locally (facesearch up).
up: env
	$(UV) run --locked --all-extras facesearch up $(FACESEARCH_UP_ARGS)

## make test: create .venv, fetch buf, run the test suite.
test: env buf
	$(UV) run --locked --all-extras pytest

env: $(UV)
	$(UV) sync --locked --all-extras

.tools/uv/bin/uv:
	$(PYTHON) -m venv .tools/uv
	.tools/uv/bin/pip install --quiet "uv==$(UV_VERSION)"

buf: $(BUF)
$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools "@bufbuild/buf@$(BUF_VERSION)"

## make protos: regenerate facesearch/v1 from protos/ (commit the result).
protos: env
	$(UV) run --locked facesearch-codegen

lint: env buf
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(BUF) lint

bench-embedder: env
	$(UV) run --locked --all-extras python -m tests.bench.bench_embedder --compare-threads

bench-search: env
	$(UV) run --locked --all-extras python -m tests.bench.bench_search

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache
