"""The pipeline on onnxruntime's CUDA provider (marker `gpu`; skipped without a CUDA device): the
provider in use is CUDA and results match the CPU run."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from embedder_service.models import _cuda_device_count
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc
from tests import faces
from tests.fixtures.embedder import embedder_running

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_cuda_device_count() == 0, reason="needs an NVIDIA GPU with onnxruntime's CUDA provider"),
]


async def test_pipeline_runs_on_cuda_and_matches_cpu(model_pack, embedder_server) -> None:  # type: ignore[no-untyped-def]
    photo = faces.make_photo([faces.FaceSpec(200, 180, 60, 1), faces.FaceSpec(470, 300, 35, 2)], (640, 480))
    request = embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=photo))
    async with embedder_running(model_pack, execution_provider="CUDAExecutionProvider") as gpu:
        async with grpc.aio.insecure_channel(gpu.target) as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            info = await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())
            assert info.execution_provider == "CUDAExecutionProvider"
            on_gpu = await stub.Embed(request)
    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        on_cpu = await embedder_pb2_grpc.EmbedderServiceStub(channel).Embed(request)
    assert len(on_gpu.faces) == len(on_cpu.faces) == 2
    for g, c in zip(on_gpu.faces, on_cpu.faces, strict=True):
        assert abs(g.box.x1 - c.box.x1) <= 1 and abs(g.box.y2 - c.box.y2) <= 1
        assert float(np.dot(g.embedding, c.embedding)) >= 0.999


def _tensorrt_loadable() -> bool:
    import ctypes

    import onnxruntime as ort

    from embedder_service.models import _preload_tensorrt

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return False
    _preload_tensorrt()
    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _tensorrt_loadable(), reason="needs TensorRT 10 (tensorrt-cu13-libs)")
async def test_tensorrt_fp16_builds_engines_once_and_matches_cpu(model_pack, embedder_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    photo = faces.make_photo([faces.FaceSpec(200, 180, 60, 1), faces.FaceSpec(470, 300, 35, 2)], (640, 480))
    request = embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=photo))
    cache = tmp_path / "trt"
    for start in ("first", "second"):
        async with embedder_running(
            model_pack, execution_provider="TensorrtExecutionProvider", tensorrt_cache_dir=cache
        ) as gpu:
            async with grpc.aio.insecure_channel(gpu.target) as channel:
                stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
                info = await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())
                assert info.execution_provider == "TensorrtExecutionProvider"
                on_gpu = await stub.Embed(request)
        engines = sorted(p.name for p in cache.iterdir() if p.suffix == ".engine")
        if start == "first":
            built = engines
            assert built, "the first start wrote no engine to the cache"
        else:
            assert engines == built, "the second start built engines again instead of loading them"
    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        on_cpu = await embedder_pb2_grpc.EmbedderServiceStub(channel).Embed(request)
    assert len(on_gpu.faces) == len(on_cpu.faces) == 2
    for g, c in zip(on_gpu.faces, on_cpu.faces, strict=True):
        assert abs(g.box.x1 - c.box.x1) <= 1 and abs(g.box.y2 - c.box.y2) <= 1
        assert float(np.dot(g.embedding, c.embedding)) >= 0.999  # FP16
