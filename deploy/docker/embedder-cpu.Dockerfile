# syntax=docker/dockerfile:1.7
# The embedder image for CPU nodes: slim Python, the `embedder` extra (onnxruntime-gpu also runs its
# CPU provider), non-root, runs with a read-only root filesystem.
# Build from the repository root:
#   docker build -f deploy/docker/embedder-cpu.Dockerfile -t facesearch-embedder:cpu .
# Bake a model pack in (otherwise mount one read-only at /opt/facesearch/models):
#   docker build -f deploy/docker/embedder-cpu.Dockerfile --build-context models=/path/to/models_dir \
#     --build-arg MODEL_PACK=buffalo_l -t facesearch-embedder:cpu-buffalo_l .
# where /path/to/models_dir holds <pack>/*.onnx (insightface's layout).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Empty unless the build is given `--build-context models=DIR`, which replaces this stage.
FROM scratch AS models

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
    uv sync --locked --no-dev --no-editable --extra embedder

FROM ${PYTHON_IMAGE} AS runtime
ARG MODEL_PACK=buffalo_l
# libgomp: OpenMP runtime some onnxruntime/opencv builds load; tiny.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 facesearch \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin facesearch
COPY --from=build /opt/facesearch/venv /opt/facesearch/venv
COPY --from=models --chown=0:0 / /opt/facesearch/models/
COPY deploy/docker/grpc_health_check.py /opt/facesearch/grpc_health_check.py
ENV PATH=/opt/facesearch/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    EMBEDDER_GRPC_PORT=50051 \
    EMBEDDER_METRICS_PORT=9101 \
    EMBEDDER_MODELS_DIR=/opt/facesearch/models \
    EMBEDDER_MODEL_PACK=${MODEL_PACK} \
    EMBEDDER_ALLOW_DOWNLOAD=false \
    EMBEDDER_EXECUTION_PROVIDER=CPUExecutionProvider
USER 10001:10001
EXPOSE 50051 9101
# Model load and warm-up happen before health says SERVING.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/facesearch/grpc_health_check.py", "127.0.0.1:50051"]
ENTRYPOINT ["python", "-m", "embedder_service"]
