# syntax=docker/dockerfile:1.7
# The web page's gateway image: slim Python, the `web` extra only (Starlette, uvicorn, Pillow; no
# models, no database driver), non-root, runs with a read-only root filesystem and a data volume.
# Build from the repository root:  docker build -f deploy/docker/web.Dockerfile -t facesearch-web .

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
    uv sync --locked --no-dev --no-editable --extra web

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 facesearch \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin facesearch
# --no-editable put the project itself into the venv (static files included): nothing else is needed.
COPY --from=build /opt/facesearch/venv /opt/facesearch/venv
ENV PATH=/opt/facesearch/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FACESEARCH_WEB_HOST=0.0.0.0 \
    FACESEARCH_WEB_PORT=8080 \
    FACESEARCH_WEB_DATA_DIR=/data
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
ENTRYPOINT ["python", "-m", "facesearch.web"]
