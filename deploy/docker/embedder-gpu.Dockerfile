# syntax=docker/dockerfile:1.7
# The embedder image for NVIDIA GPU nodes: CUDA runtime + cuDNN base, the `embedder` extra
# (onnxruntime-gpu), non-root, runs with a read-only root filesystem.
#
# onnxruntime-gpu 1.31 from PyPI is built against CUDA 13 and cuDNN 9 (its CUDA provider links
# libcudart.so.13 / libcublas.so.13 and loads libcudnn.so.9), so the base is a CUDA 13 cuDNN runtime
# image. The host needs an NVIDIA driver new enough for CUDA 13 (>= 580).
#
# TensorRT: onnxruntime-gpu 1.31's TensorRT EP links libnvinfer.so.10, so TensorRT 10 for CUDA 13
# (`tensorrt-cu13-libs` 10.x). Its PyPI package is a stub that downloads the real wheel from NVIDIA's
# index when installed, which the lock file cannot pin, so it is installed with pip after the locked
# sync (TENSORRT_VERSION; empty = no TensorRT, and `auto` uses CUDA). The embedder loads it from
# site-packages itself. Engines are built on first start and cached in EMBEDDER_TENSORRT_CACHE_DIR:
# mount a volume there (deploy/k8s/components/gpu does).
# The `gpu` dependency group adds nvImageCodec (nvJPEG), which decodes JPEGs on the GPU.
#
# Build from the repository root:
#   docker build -f deploy/docker/embedder-gpu.Dockerfile -t facesearch-embedder:gpu .
# Bake a model pack in (otherwise mount one read-only at /opt/facesearch/models):
#   docker build -f deploy/docker/embedder-gpu.Dockerfile --build-context models=/path/to/models_dir \
#     --build-arg MODEL_PACK=buffalo_l -t facesearch-embedder:gpu-buffalo_l .

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# Empty unless the build is given `--build-context models=DIR`, which replaces this stage.
FROM scratch AS models

# Ubuntu 24.04's Python (3.12, inside the project's >=3.11,<3.14) so build and runtime stages share
# one interpreter path; the venv is copied across as it is.
FROM ${CUDA_IMAGE} AS python-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates libgomp1 \
    && rm -rf /var/lib/apt/lists/*

FROM python-base AS build
# The uv version the repository is locked with (`uv --version`).
RUN pip install --no-cache-dir --break-system-packages uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/facesearch/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY facesearch ./facesearch
COPY embedder_service ./embedder_service
COPY search_service ./search_service
# The README's "Production install" step, verbatim (a test keeps the two in step).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --extra embedder --group gpu
ARG TENSORRT_VERSION=10.16.1.11
RUN if [ -n "$TENSORRT_VERSION" ]; then \
        uv pip install --python /opt/facesearch/venv/bin/python --no-cache "tensorrt-cu13-libs==${TENSORRT_VERSION}"; \
    fi

FROM python-base AS runtime
ARG MODEL_PACK=buffalo_l
RUN groupadd --gid 10001 facesearch \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin facesearch
COPY --from=build /opt/facesearch/venv /opt/facesearch/venv
COPY --from=models --chown=0:0 / /opt/facesearch/models/
COPY deploy/docker/grpc_health_check.py /opt/facesearch/grpc_health_check.py
ENV PATH=/opt/facesearch/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    EMBEDDER_GRPC_PORT=50051 \
    EMBEDDER_METRICS_PORT=9101 \
    EMBEDDER_MODELS_DIR=/opt/facesearch/models \
    EMBEDDER_MODEL_PACK=${MODEL_PACK} \
    EMBEDDER_ALLOW_DOWNLOAD=false \
    EMBEDDER_EXECUTION_PROVIDER=auto \
    EMBEDDER_TENSORRT_CACHE_DIR=/var/cache/facesearch/tensorrt
USER 10001:10001
EXPOSE 50051 9101
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/facesearch/grpc_health_check.py", "127.0.0.1:50051"]
ENTRYPOINT ["python", "-m", "embedder_service"]
