"""GPU benchmark of the embedder, run by tests/bench/gpu/run.sh on a machine with an NVIDIA GPU:

1. parity: the TensorRT (FP16) and CUDA paths against the CPU path on the generated test pack
   (boxes, cosine of embeddings), photos from selfies to 24 MP event photos;
2. recognition alone: the r50-cost recogniser of the benchmark pack at batch 64 and 128, faces/s;
3. the service (`python -m embedder_service`, provider auto, GPU JPEG decoding where nvImageCodec is
   installed) over gRPC against FaceAnalysis on the same GPU (`cv2.imdecode` + `get`), on group
   photos and event photos: images/s, faces/s, p50/p99 latency and the ratio.

Prints a table last. Targets: service >= 5x FaceAnalysis on the same GPU; recognition >= 8,000
faces/s at batch >= 64.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from embedder_service.config import EmbedderSettings
from embedder_service.models import Recognizer, _preload_tensorrt, discover, provider_candidates
from embedder_service.server import start_server
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc
from tests import faces
from tests.bench.arch_models import write_bench_pack
from tests.bench.bench_embedder import (
    MAX_MESSAGE,
    Figures,
    Reference,
    event_photo_set,
    multi_face_photos,
    run_streams,
    start_service,
)
from tests.model_pack import write_model_pack

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


def tensorrt_loadable() -> bool:
    if TRT not in ort.get_available_providers():
        return False
    _preload_tensorrt()
    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return False
    return True


def environment() -> list[str]:
    lines = [f"onnxruntime {ort.__version__}: {', '.join(ort.get_available_providers())}"]
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except OSError:
        gpu = "nvidia-smi not found"
    lines.append(f"GPU: {gpu}")
    lines.append(f"TensorRT loadable: {tensorrt_loadable()}")
    try:
        from nvidia import nvimgcodec  # type: ignore[import-not-found]  # noqa: F401

        lines.append("nvImageCodec: installed (JPEG decoding on the GPU)")
    except ImportError:
        lines.append("nvImageCodec: not installed (JPEGs decoded on the CPU)")
    lines.append(f"CPU cores: {os.cpu_count()}")
    return lines


async def parity(models_dir: Path, providers: list[str], photos: list[bytes], cache: Path) -> list[str]:
    """Each GPU provider's faces against the CPU path's on the same photos."""
    request = [embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=p)) for p in photos]

    async def embed_all(provider: str) -> tuple[str, list[embedder_pb2.EmbedResponse]]:
        server = await start_server(
            EmbedderSettings(
                models_dir=models_dir,
                grpc_host="127.0.0.1",
                grpc_port=0,
                metrics_port=0,
                allow_download=False,
                execution_provider=provider,
                tensorrt_cache_dir=cache,
                max_message_bytes=64 << 20,
            )
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=MAX_MESSAGE) as channel:
                stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
                in_use = (await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())).execution_provider
                return in_use, [await stub.Embed(r) for r in request]
        finally:
            await server.stop(1.0)

    _, reference = await embed_all(CPU)
    lines = []
    for provider in providers:
        in_use, responses = await embed_all(provider)
        cosines, box_diffs, counts_match = [], [], True
        for ours, ref in zip(responses, reference, strict=True):
            counts_match &= len(ours.faces) == len(ref.faces)
            for face in ref.faces:
                box = np.array([face.box.x1, face.box.y1, face.box.x2, face.box.y2])
                match = min(
                    ours.faces,
                    key=lambda f: np.abs(np.array([f.box.x1, f.box.y1, f.box.x2, f.box.y2]) - box).max(),
                    default=None,
                )
                if match is None:
                    continue
                box_diffs.append(
                    float(np.abs(np.array([match.box.x1, match.box.y1, match.box.x2, match.box.y2]) - box).max())
                )
                cosines.append(float(np.dot(match.embedding, face.embedding)))
        lines.append(
            f"  {provider} (in use: {in_use}): faces {'match' if counts_match else 'DIFFER'}, "
            f"min cosine vs CPU {min(cosines):.5f}, max box difference {max(box_diffs):.2f} px "
            f"({len(cosines)} faces)"
        )
    return lines


def recognition_throughput(models_dir: Path, provider: str, cache: Path, seconds: float) -> list[str]:
    settings = EmbedderSettings(execution_provider=provider, tensorrt_cache_dir=cache, batching={"max_batch_size": 128})
    files = discover(models_dir / "buffalo_l")
    started = time.perf_counter()
    recognizer = Recognizer(files.recognizer, settings, provider_candidates(settings))
    lines = [f"  {recognizer.provider}: session ready in {time.perf_counter() - started:.1f} s"]
    crops = list(np.random.default_rng(0).integers(0, 256, (128, 112, 112, 3), dtype=np.uint8))
    for batch in (64, 128):
        recognizer.run(crops[:batch])  # warm-up (and the engine's build for this shape, if any)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            done += len(recognizer.run(crops[:batch]))
        rate = done / (time.perf_counter() - t0)
        lines.append(f"  batch {batch:>3}: {rate:9.0f} faces/s (target >= 8,000)")
    return lines


async def service_streams(target: str, pid: int, images: list[bytes], clients: int) -> Figures:
    async with grpc.aio.insecure_channel(target, options=MAX_MESSAGE) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        await run_streams(stub, images[: clients * 2], clients, pid)  # warm-up: every batch shape
        return await run_streams(stub, images, clients, pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-photos", type=int, default=256)
    parser.add_argument("--event-images", type=int, default=96)
    parser.add_argument("--event-distinct", type=int, default=16)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per recognition throughput figure")
    parser.add_argument(
        "--providers",
        help="comma-separated providers to test (default: TensorRT where loadable, and CUDA); "
        "CPUExecutionProvider runs the whole script without a GPU, as a check of the script",
    )
    args = parser.parse_args()
    t_start = time.perf_counter()
    for line in environment():
        print(line, flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    cache = work / "tensorrt-cache"
    gpu_providers = args.providers.split(",") if args.providers else ([TRT] if tensorrt_loadable() else []) + [CUDA]

    print("\n1. parity with the CPU path (generated test pack)", flush=True)
    test_pack = write_model_pack(work / "test" / "models")
    from tests.event_photos import event_photo

    parity_photos = [
        faces.selfie(identity=3),
        faces.make_photo([faces.FaceSpec(200, 180, 60, 1), faces.FaceSpec(470, 300, 35, 2)], (640, 480)),
        event_photo(0)[0],
        event_photo(1, exif_orientation=6)[0],
    ]
    parity_lines = asyncio.run(parity(test_pack.models_dir, gpu_providers, parity_photos, cache))
    for line in parity_lines:
        print(line, flush=True)

    print("\n2. recognition alone (r50-cost recogniser, benchmark pack)", flush=True)
    bench_models = write_bench_pack(work / "bench" / "models")
    recognition_lines = []
    for provider in gpu_providers:
        recognition_lines += recognition_throughput(bench_models, provider, cache, args.seconds)
    for line in recognition_lines:
        print(line, flush=True)

    print("\n3. service vs FaceAnalysis on the same GPU (benchmark pack)", flush=True)
    groups = multi_face_photos(args.group_photos, 6)
    events = event_photo_set(args.event_distinct, args.event_images, 6)
    reference = Reference(bench_models, spinning=True, providers=(gpu_providers[-1], CPU))
    rows: list[tuple[str, Figures, Figures]] = []
    try:
        ref_group, ref_event = reference.run(groups), reference.run(events)
    finally:
        reference.close()
    process, target = start_service(
        bench_models,
        {
            "EMBEDDER_EXECUTION_PROVIDER": "auto" if not args.providers else gpu_providers[0],
            "EMBEDDER_TENSORRT_CACHE_DIR": str(cache),
            "EMBEDDER_BATCHING__MAX_BATCH_SIZE": "128",
            "EMBEDDER_BATCHING__MAX_DETECTION_BATCH_SIZE": "16",
            "EMBEDDER_DECODE_THREADS": str(max(2, (os.cpu_count() or 2) - 2)),
            "EMBEDDER_MAX_IN_FLIGHT_PER_STREAM": "64",
            "EMBEDDER_MAX_DECODED_PIXELS_IN_FLIGHT": str(2_000_000_000),
        },
    )
    try:
        svc_group = asyncio.run(service_streams(target, process.pid, groups, args.clients))
        svc_event = asyncio.run(service_streams(target, process.pid, events, args.clients))
    finally:
        process.terminate()
        process.wait(timeout=120)
    rows = [
        ("group photos (1280x960, 6 faces)", ref_group, svc_group),
        ("event photos (24 MP, 6 faces)", ref_event, svc_event),
    ]

    print(f"\n=== GPU benchmark summary ({time.perf_counter() - t_start:.0f} s) ===")
    for line in environment():
        print(line)
    print("parity with the CPU path:")
    for line in parity_lines:
        print(line)
    print("recognition alone:")
    for line in recognition_lines:
        print(line)
    print("service vs FaceAnalysis (CUDA EP, image by image) on this GPU:")
    for label, ref, svc in rows:
        print(ref.line(f"{label}: FaceAnalysis"))
        print(svc.line(f"{label}: service"))
        print(f"  {label}: ratio {svc.images_per_s / ref.images_per_s:.2f}x images/s (target >= 5x)")


if __name__ == "__main__":
    main()
