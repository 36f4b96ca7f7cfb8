#!/usr/bin/env bash
# Run HERE, with PyPI reachable, before tests/bench/gpu/run.sh goes to a GPU machine without internet:
# downloads, at the versions uv.lock pins, the wheels that bench needs and such a machine lacks (its
# image has CUDA 13 runtime libraries, numpy, OpenCV, onnx, scikit-image, Pillow, grpcio... but not
# onnxruntime-gpu, insightface or pydantic-settings) into .whl/ (git-ignored through
# .git/info/exclude), for CPython 3.12 on x86-64 Linux. Also writes .whl/parts/wheels.tar.part-NN,
# the same wheels in 60 MiB pieces, for hosts that carry at most 64 MiB per call (run.sh --stage).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")" && { grep -qxF '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"; }
UV=$(command -v uv || echo .tools/uv/bin/uv)
WANTED='^(onnxruntime-gpu|insightface|pydantic|pydantic-core|pydantic-settings|annotated-types|typing-inspection|typing-extensions|python-dotenv|python-json-logger|grpcio|grpcio-health-checking|grpcio-reflection|grpcio-status|googleapis-common-protos|protobuf|prometheus-client|nvidia-nvimgcodec-cu13|nvidia-nvjpeg)=='
PINS=$("$UV" export --locked --no-dev --no-hashes --no-emit-project --extra embedder --group gpu \
    | sed 's/ *;.*//' | grep -E "$WANTED")
rm -rf .whl && mkdir -p .whl/parts
PLATFORMS=()
for n in 39 35 34 31 28 27 24 17; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pin in $PINS; do
    if [ "${pin%%==*}" = insightface ]; then  # an sdist on PyPI, pure Python: build its wheel here
        python3 -m pip wheel --quiet --no-deps --no-build-isolation -w .whl "$pin" \
            || python3 -m pip wheel --quiet --no-deps -w .whl "$pin"
        continue
    fi
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .whl "$pin"
done
tar -C .whl -cf - $(cd .whl && ls *.whl) | split -b 60m -d - .whl/parts/wheels.tar.part-
ls -la .whl .whl/parts
du -sh .whl/*.whl | sort -h | tail -3
