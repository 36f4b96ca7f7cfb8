# The README's two commands are `make up` and `make test`; everything else here serves them.
# uv is used when on PATH, otherwise installed once into .tools/uv (needs only python3 >= 3.11 with
# its venv module). Every other tool (buf, kubectl) comes from the lock file into .venv/bin.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/uv/bin/uv)

.PHONY: up test env protos lint bench-embedder bench-search bench-ingest clean

## make up: create .venv from the lock file and run the whole stack locally (facesearch up).
up: env
	$(UV) run --locked --all-extras facesearch up $(FACESEARCH_UP_ARGS)

## make test: create .venv, run the test suite.
test: env
	$(UV) run --locked --all-extras pytest

env: $(UV)
	$(UV) sync --locked --all-extras

.tools/uv/bin/uv:
	$(PYTHON) -m venv .tools/uv
	.tools/uv/bin/pip install --quiet "uv==$(UV_VERSION)"

## make protos: regenerate facesearch/v1 from protos/ (commit the result).
protos: env
	$(UV) run --locked facesearch-codegen

lint: env
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked buf lint

bench-embedder: env
	$(UV) run --locked --all-extras python -m tests.bench.bench_embedder --compare-threads

bench-search: env
	$(UV) run --locked --all-extras python -m tests.bench.bench_search

bench-ingest: env
	$(UV) run --locked --all-extras python -m tests.bench.bench_ingest

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache
