# syntax=docker/dockerfile:1.7
# The search service image: slim Python, the `search` extra only (asyncpg, pgvector; no GPU wheels),
# non-root, runs with a read-only root filesystem.
# Build from the repository root:  docker build -f deploy/docker/search.Dockerfile -t facesearch-search .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The uv version the repository is locked with (`uv --version`).
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/facesearch/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY facesearch ./facesearch
COPY embedder_service ./embedder_service
COPY search_service ./search_service
# The README's "Production install" step, verbatim (a test keeps the two in step).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --extra search

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 facesearch \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin facesearch
# --no-editable put the project itself into the venv: nothing else from /src is needed.
COPY --from=build /opt/facesearch/venv /opt/facesearch/venv
COPY deploy/docker/grpc_health_check.py /opt/facesearch/grpc_health_check.py
ENV PATH=/opt/facesearch/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SEARCH_GRPC_PORT=50052 \
    SEARCH_METRICS_PORT=9102
USER 10001:10001
EXPOSE 50052 9102
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/facesearch/grpc_health_check.py", "127.0.0.1:50052"]
ENTRYPOINT ["python", "-m", "search_service"]
