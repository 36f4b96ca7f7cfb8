"""24 MP event photos through a real embedder: parity with FaceAnalysis on the full-size image while
the service decodes at reduced DCT scales, and the memory held with many of them in flight."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from insightface.app import FaceAnalysis

from embedder_service import decoding
from embedder_service.config import EmbedderSettings
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2
from tests import faces
from tests.event_photos import event_photo
from tests.fixtures.embedder import embedder_running

ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


@pytest.fixture(scope="module")
def event_photos() -> list[bytes]:
    """Three 24 MP group photos, one displayed rotated by EXIF, and one with a face too small for
    the 1/2-scale image (aligned from a full-size decode) beside a very large one."""
    photos = [event_photo(seed)[0] for seed in (0, 1)]
    photos.append(event_photo(2, faces_per_photo=4, exif_orientation=6)[0])
    mixed = faces.render([faces.FaceSpec(1500, 2000, 98, 7001), faces.FaceSpec(4200, 1900, 900, 7002)], (6000, 4000))
    photos.append(faces.encode(mixed, "jpg", 92))
    return photos


@pytest.fixture(scope="module")
def face_analysis(model_pack) -> FaceAnalysis:  # type: ignore[no-untyped-def]
    app = FaceAnalysis(
        name=str(model_pack.pack_dir), allowed_modules=["detection", "recognition"], providers=["CPUExecutionProvider"]
    )
    app.prepare(ctx_id=-1, det_thresh=0.5, det_size=(640, 640))
    return app


def _box(face: face_pb2.Face) -> np.ndarray:
    return np.array([face.box.x1, face.box.y1, face.box.x2, face.box.y2])


async def test_parity_with_face_analysis_on_full_size_24mp_photos(
    model_pack, face_analysis: FaceAnalysis, event_photos: list[bytes]
) -> None:  # type: ignore[no-untyped-def]
    # The default scale cap (1/2). Coarser caps (EMBEDDER_JPEG_MAX_REDUCTION=4 or 8) are faster for
    # detection but move boxes and landmarks by up to ~2 px at 24 MP (0.2 detector pixels), so
    # they are not the default.
    jpeg_max_reduction = EmbedderSettings().jpeg_max_reduction
    assert jpeg_max_reduction == 2
    for data in event_photos:  # the service decodes these reduced; FaceAnalysis gets the full size
        header = decoding.read_header(data, 40_000_000)
        assert decoding.detection_reduction(header, (640, 640), jpeg_max_reduction) == jpeg_max_reduction
    small_face_sources = []
    async with embedder_running(model_pack) as server:
        async with grpc.aio.insecure_channel(server.target, options=MAX_MESSAGE) as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            for data in event_photos:
                full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                reference = await asyncio.to_thread(face_analysis.get, full)
                response = await stub.Embed(
                    embedder_pb2.EmbedRequest(
                        input=embedder_pb2.ImageInput(encoded_image=data),
                        options=face_pb2.EmbedOptions(return_landmarks=True, disable_quality_gates=True),
                    )
                )
                assert (response.image_size.width, response.image_size.height) == (full.shape[1], full.shape[0])
                assert len(reference) >= 2 and len(response.faces) == len(reference)
                unmatched = list(response.faces)
                for ref in reference:
                    ours = min(unmatched, key=lambda f: np.abs(_box(f) - ref.bbox).max())
                    unmatched.remove(ours)
                    assert np.abs(_box(ours) - ref.bbox).max() <= 1.0
                    landmarks = np.array([[p.x, p.y] for p in ours.landmarks])
                    assert np.abs(landmarks - ref.kps).max() <= 1.0
                    assert float(np.array(ours.embedding, np.float32) @ ref.normed_embedding) >= 0.9999
                    small_face_sources.append(
                        decoding.alignment_reduction(decoding.crop_scale(ref.kps, 112), jpeg_max_reduction, 1.0)
                    )
    # Both alignment sources were exercised: the detection's reduced image and a finer decode.
    assert jpeg_max_reduction in small_face_sources and min(small_face_sources) < jpeg_max_reduction


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
async def test_peak_rss_with_32_event_photos_in_flight_stays_under_1_5_gb(model_pack, event_photos) -> None:  # type: ignore[no-untyped-def]
    # A process of its own, so its peak RSS is the embedder's alone.
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDER_")}
    env.update(
        EMBEDDER_MODELS_DIR=str(model_pack.models_dir),
        EMBEDDER_GRPC_HOST="127.0.0.1",
        EMBEDDER_GRPC_PORT=str(port),
        EMBEDDER_METRICS_PORT="0",
        EMBEDDER_ALLOW_DOWNLOAD="false",
        EMBEDDER_LOG_LEVEL="WARNING",
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "embedder_service", cwd=ROOT, env=env)
    try:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target, options=MAX_MESSAGE) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while True:
                assert process.returncode is None, "the embedder exited during start-up"
                assert time.monotonic() < deadline, "the embedder did not become SERVING"
                try:
                    if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == 1:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
            idle = _peak_rss_bytes(process.pid)
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            photos = [event_photos[i % 3] for i in range(32)]  # 24 MP each, all sent at once
            responses = await asyncio.gather(
                *(
                    stub.Embed(embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=p)), timeout=600)
                    for p in photos
                )
            )
            assert all(len(r.faces) >= 4 for r in responses)
            peak = _peak_rss_bytes(process.pid)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)
    print(f"embedder peak RSS: {idle / 2**20:.0f} MiB idle, {peak / 2**20:.0f} MiB with 32 24 MP photos in flight")
    # A full-size decode of each would hold 32 x 72 MB = 2.3 GB of pixels alone.
    assert peak <= 1.5 * 2**30
