"""Embedder benchmark: the service against insightface's FaceAnalysis on the same images and the
same model files (the architecture-equivalent benchmark pack, tests/bench/arch_models.py).

    uv run python -m tests.bench.bench_embedder [--rounds 3] [--photos 6] [--faces-per-photo 6] ...

(a) FaceAnalysis.get image by image (decode included, det_size 640x640 like the service);
(b) the service (`python -m embedder_service` subprocess) over gRPC, several concurrent EmbedStream
    clients sharing the same images;
(c) unary Embed of one selfie at a time (low load) vs FaceAnalysis on one selfie.
Each round runs the reference and the service back to back, so both see the same machine load;
figures are printed per round and as medians with ratios (service / reference).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np

from facesearch.v1 import embedder_pb2, embedder_pb2_grpc
from tests import faces

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Figures:
    """One measured run: images, faces, wall seconds and per-image latencies (seconds)."""

    images: int
    faces: int
    wall_s: float
    latencies: list[float]

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def line(self, label: str) -> str:
        return (
            f"  {label:<34} {self.images_per_s:7.2f} img/s {self.faces_per_s:7.2f} faces/s "
            f"p50 {self.pct(50) * 1000:8.1f} ms  p99 {self.pct(99) * 1000:8.1f} ms  "
            f"({self.images} images, {self.faces} faces)"
        )


def multi_face_photos(count: int, faces_per_photo: int) -> list[bytes]:
    """Group photos (1280x960 JPEG) with `faces_per_photo` faces of assorted sizes each."""
    photos = []
    for p in range(count):
        rng = np.random.default_rng(p)
        specs, cols = [], 3
        for f in range(faces_per_photo):
            row, col = divmod(f, cols)
            radius = float(rng.uniform(45, 80))
            cx = 200 + col * 420 + rng.uniform(-20, 20)
            cy = 170 + row * 310 + rng.uniform(-20, 20)
            specs.append(faces.FaceSpec(cx, cy, radius, identity=p * faces_per_photo + f))
        photos.append(faces.make_photo(specs, (1280, 960), seed=p, quality=90))
    return photos


def selfies(count: int) -> list[bytes]:
    return [faces.selfie(identity=100 + i) for i in range(count)]


def run_reference(app, images: list[bytes]) -> Figures:  # type: ignore[no-untyped-def]
    latencies, found = [], 0
    started = time.perf_counter()
    for data in images:
        t0 = time.perf_counter()
        found += len(app.get(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)))
        latencies.append(time.perf_counter() - t0)
    return Figures(len(images), found, time.perf_counter() - started, latencies)


async def run_streams(stub: embedder_pb2_grpc.EmbedderServiceStub, images: list[bytes], clients: int) -> Figures:
    """`clients` concurrent EmbedStream calls, image i going to client i % clients."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    found = 0

    async def client(index: int) -> None:
        nonlocal found
        mine = [(f"{index}-{i}", data) for i, data in enumerate(images) if i % clients == index]

        async def requests() -> AsyncIterator[embedder_pb2.EmbedStreamRequest]:
            for request_id, data in mine:
                sent[request_id] = time.perf_counter()
                yield embedder_pb2.EmbedStreamRequest(
                    request_id=request_id, input=embedder_pb2.ImageInput(encoded_image=data)
                )

        async for response in stub.EmbedStream(requests()):
            if response.status.code != 0:
                raise RuntimeError(f"{response.request_id}: {response.status.message}")
            latencies.append(time.perf_counter() - sent[response.request_id])
            found += len(response.faces)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return Figures(len(images), found, time.perf_counter() - started, latencies)


async def run_unary(stub: embedder_pb2_grpc.EmbedderServiceStub, images: list[bytes]) -> Figures:
    latencies, found = [], 0
    started = time.perf_counter()
    for data in images:
        t0 = time.perf_counter()
        response = await stub.Embed(embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=data)))
        latencies.append(time.perf_counter() - t0)
        found += len(response.faces)
    return Figures(len(images), found, time.perf_counter() - started, latencies)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(models_dir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDER_")}
    env.update(
        EMBEDDER_MODELS_DIR=str(models_dir),
        EMBEDDER_GRPC_HOST="127.0.0.1",
        EMBEDDER_GRPC_PORT=str(port),
        EMBEDDER_METRICS_PORT="0",
        EMBEDDER_ALLOW_DOWNLOAD="false",
        EMBEDDER_LOG_LEVEL="WARNING",
    )
    for name in ("intra_op_threads", "intra_op_spinning", "inference_threads", "max_batch_size", "max_queue_delay_ms"):
        value = getattr(args, name)
        if value is not None:
            key = name.upper() if name.startswith("intra_op") else f"BATCHING__{name.upper()}"
            env[f"EMBEDDER_{key}"] = str(value)
    process = subprocess.Popen([sys.executable, "-m", "embedder_service"], cwd=ROOT, env=env)
    target = f"127.0.0.1:{port}"
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 300
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit("the embedder exited during start-up")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return process, target
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the embedder did not become SERVING")


def ratio_line(label: str, service: float, reference: float, target: str) -> str:
    return (
        f"  {label:<44} service {service:9.2f}  reference {reference:9.2f}  ratio {service / reference:5.2f}x  {target}"
    )


async def main_async(args: argparse.Namespace) -> None:
    from insightface.app import FaceAnalysis

    from tests.bench.arch_models import write_bench_pack

    work = Path(tempfile.mkdtemp(prefix="bench-embedder-"))
    models_dir = Path(args.models_dir) if args.models_dir else work / "models"
    if not (models_dir / "buffalo_l").is_dir():
        print(f"writing the benchmark pack to {models_dir} ...", flush=True)
        write_bench_pack(models_dir)
    photos = multi_face_photos(args.photos, args.faces_per_photo)
    portraits = selfies(args.selfies)
    print(
        f"machine: {os.cpu_count()} CPUs (shared); images: {len(photos)} group photos x {args.faces_per_photo} faces "
        f"(1280x960 JPEG), {len(portraits)} selfies (480x640); {args.clients} streaming clients; "
        f"{args.rounds} rounds",
        flush=True,
    )

    app = FaceAnalysis(
        name=str(models_dir / "buffalo_l"),
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
    )
    app.prepare(ctx_id=-1, det_thresh=0.5, det_size=(640, 640))
    run_reference(app, portraits[:1])  # warm-up, like the service's

    process, target = start_service(models_dir, args)
    results: dict[str, list[Figures]] = {k: [] for k in ("ref_multi", "svc_multi", "ref_selfie", "svc_unary")}
    try:
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            info = await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())
            print(f"service: provider {info.execution_provider}, max batch {info.max_batch_size}", flush=True)
            await run_unary(stub, portraits[:1])
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no}:", flush=True)
                for key, coro_or_fn, label in (
                    ("ref_multi", lambda: run_reference(app, photos), "(a) FaceAnalysis, group photos"),
                    ("svc_multi", lambda: run_streams(stub, photos, args.clients), "(b) service streams, group photos"),
                    ("ref_selfie", lambda: run_reference(app, portraits), "(a) FaceAnalysis, selfies"),
                    ("svc_unary", lambda: run_unary(stub, portraits), "(c) service unary, selfies"),
                ):
                    outcome = coro_or_fn()
                    figures = await outcome if asyncio.iscoroutine(outcome) else outcome
                    results[key].append(figures)
                    print(figures.line(label), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)

    def median(key: str, metric: str) -> float:
        return statistics.median(getattr(f, metric) if metric != "p50" else f.pct(50) for f in results[key])

    def median_pct(key: str, q: float) -> float:
        return statistics.median(f.pct(q) for f in results[key]) * 1000

    assert all(f.faces == args.photos * args.faces_per_photo for f in results["ref_multi"] + results["svc_multi"])
    print("\nmedians over rounds (service vs reference, same images, same model files):")
    print(
        ratio_line(
            "group photos: faces/s",
            median("svc_multi", "faces_per_s"),
            median("ref_multi", "faces_per_s"),
            "(target >= 1.5x)",
        )
    )
    print(
        ratio_line(
            "group photos: images/s", median("svc_multi", "images_per_s"), median("ref_multi", "images_per_s"), ""
        )
    )
    print(
        ratio_line(
            "group photos: p50 latency ms",
            median_pct("svc_multi", 50),
            median_pct("ref_multi", 50),
            "(streams queue: not a target)",
        )
    )
    print(
        ratio_line(
            "selfie, low load: p50 latency ms",
            median_pct("svc_unary", 50),
            median_pct("ref_selfie", 50),
            "(target <= 1.2x)",
        )
    )
    print(ratio_line("selfie, low load: p99 latency ms", median_pct("svc_unary", 99), median_pct("ref_selfie", 99), ""))
    print(
        ratio_line("selfies: images/s", median("svc_unary", "images_per_s"), median("ref_selfie", "images_per_s"), "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models-dir", help="an existing benchmark pack's models dir (default: write one to a temp dir)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--faces-per-photo", type=int, default=6)
    parser.add_argument("--selfies", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--intra-op-threads", type=int, help="EMBEDDER_INTRA_OP_THREADS for the service")
    parser.add_argument("--intra-op-spinning", choices=["true", "false"], help="EMBEDDER_INTRA_OP_SPINNING")
    parser.add_argument("--inference-threads", type=int, help="EMBEDDER_BATCHING__INFERENCE_THREADS")
    parser.add_argument("--max-batch-size", type=int, help="EMBEDDER_BATCHING__MAX_BATCH_SIZE")
    parser.add_argument("--max-queue-delay-ms", type=float, help="EMBEDDER_BATCHING__MAX_QUEUE_DELAY_MS")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
