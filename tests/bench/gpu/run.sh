#!/usr/bin/env bash
# The GPU benchmark, one command on a machine with an NVIDIA GPU and no internet (well under 10 min):
#
#   bash tests/bench/gpu/run.sh [bench_gpu options]
#
# It installs the wheels that tests/bench/gpu/fetch_wheels.sh saved in .whl/ (run that first, where
# PyPI is reachable, and bring .whl/ along) into a scratch site directory, then runs
# `python3 -m tests.bench.gpu.bench_gpu`: TensorRT/CUDA parity with the CPU path, recognition alone at
# batch 64/128, and the service against FaceAnalysis on the same GPU. The table comes last.
#
# Hosts that carry at most 64 MiB per call (onnxruntime-gpu alone is 255 MB): carry .whl/parts/ a few
# wheels.tar.part-NN at a time with `bash tests/bench/gpu/run.sh --stage` (each call adds the parts it
# brought to /tmp/facesearch-wheels on that machine), then run the plain command with none carried.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STAGE=/tmp/facesearch-wheels
SITE=/tmp/facesearch-site
if [ "${1:-}" = "--stage" ]; then
    mkdir -p "$STAGE"
    cp -v .whl/parts/wheels.tar.part-* "$STAGE"/
    exit 0
fi
if ! ls .whl/*.whl >/dev/null 2>&1; then  # wheels in pieces: those carried now plus those staged before
    mkdir -p "$STAGE" .whl
    cp -n .whl/parts/wheels.tar.part-* "$STAGE"/ 2>/dev/null || true
    ls "$STAGE"/wheels.tar.part-* >/dev/null 2>&1 \
        || { echo "no wheels: run tests/bench/gpu/fetch_wheels.sh where PyPI is reachable" >&2; exit 2; }
    cat "$STAGE"/wheels.tar.part-* | tar -C .whl -xf -
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || { echo "no NVIDIA GPU here" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
exec python3 -m tests.bench.gpu.bench_gpu "$@"
