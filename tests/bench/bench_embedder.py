"""Embedder benchmark: the service against insightface's FaceAnalysis on the same images and the
same model files (the architecture-equivalent benchmark pack, tests/bench/arch_models.py).

    uv run python -m tests.bench.bench_embedder [--rounds 2] [--event-images 32] [--compare-threads] ...

Workloads: event photos (24 MP JPEGs of groups, tests/event_photos.py), group photos (1280x960,
6 faces) and lone selfies (480x640, one at a time). For each, side by side in this one run:
(a) FaceAnalysis: `cv2.imdecode` + `get` image by image, stock and with onnxruntime's thread
    spinning off, each in a process of its own (so its peak RSS is its own);
(b) the service (`python -m embedder_service` subprocess, default settings) over gRPC: concurrent
    EmbedStream clients for photos (2 x 16 in flight = 32 event photos at once), unary for selfies;
(c) the CPU ceiling: the two models alone, measured standalone here (detector per image, recogniser
    per face, each at its best batch and threading), with no decoding at all: the most any
    pipeline could do with these models on this machine; the service's share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from facesearch.v1 import embedder_pb2, embedder_pb2_grpc
from tests import faces

ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


@dataclass
class Figures:
    """One measured run: images, faces, wall seconds and per-image latencies (seconds)."""

    images: int
    faces: int
    wall_s: float
    latencies: list[float]
    peak_rss: int = 0  # bytes, the process's high-water mark so far (0 = not measured)

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
        rss = f"  peak RSS {self.peak_rss / 2**20:6.0f} MiB" if self.peak_rss else ""
        return (
            f"  {label:<40} {self.images_per_s:7.2f} img/s {self.faces_per_s:7.2f} faces/s "
            f"p50 {self.pct(50) * 1000:8.1f} ms  p99 {self.pct(99) * 1000:8.1f} ms  "
            f"({self.images} images, {self.faces} faces){rss}"
        )


def peak_rss(pid: int | None = None) -> int:
    """VmHWM of a process (bytes), 0 where /proc is missing."""
    try:
        status = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# Images ----------------------------------------------------------------------------------------


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


def event_photo_set(distinct: int, total: int, faces_per_photo: int) -> list[bytes]:
    """`total` 24 MP event photos cycling through `distinct` generated ones (each decodes anew)."""
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        made = list(pool.map(_event_photo_bytes, range(distinct), [faces_per_photo] * distinct))
    return [made[i % distinct] for i in range(total)]


def _event_photo_bytes(seed: int, faces_per_photo: int) -> bytes:
    from tests.event_photos import event_photo

    return event_photo(seed, faces_per_photo)[0]


def selfies(count: int) -> list[bytes]:
    return [faces.selfie(identity=100 + i) for i in range(count)]


# FaceAnalysis, in a process of its own ---------------------------------------------------------

_APP: Any = None


def _reference_init(models_dir: str, spinning: bool, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
    global _APP
    import warnings

    import onnxruntime as ort
    from insightface.app import FaceAnalysis

    warnings.filterwarnings("ignore", category=FutureWarning)  # insightface's skimage call
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    app = FaceAnalysis(
        name=str(Path(models_dir) / "buffalo_l"),
        allowed_modules=["detection", "recognition"],
        providers=list(providers),
    )
    app.prepare(ctx_id=0 if providers[0] != "CPUExecutionProvider" else -1, det_thresh=0.5, det_size=(640, 640))
    if not spinning:  # the same models, their sessions reopened with intra-op spinning off
        for model in app.models.values():
            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            model.session = ort.InferenceSession(model.model_file, options, providers=list(providers))
    _APP = app
    _reference_run([faces.selfie(identity=1)])  # warm-up, like the service's


def _reference_run(images: list[bytes]) -> Figures:
    latencies, found = [], 0
    started = time.perf_counter()
    for data in images:
        t0 = time.perf_counter()
        found += len(_APP.get(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)))
        latencies.append(time.perf_counter() - t0)
    return Figures(len(images), found, time.perf_counter() - started, latencies, peak_rss())


class Reference:
    """FaceAnalysis in a worker process; `run(images)` returns its Figures."""

    def __init__(
        self, models_dir: Path, spinning: bool, providers: tuple[str, ...] = ("CPUExecutionProvider",)
    ) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_reference_init,
            initargs=(str(models_dir), spinning, providers),
        )

    def run(self, images: list[bytes]) -> Figures:
        return self.pool.submit(_reference_run, images).result()

    def close(self) -> None:
        self.pool.shutdown()


# The CPU ceiling: the two models alone ----------------------------------------------------------


def _ceiling(models_dir: str, seconds: float) -> dict[str, tuple[float, str]]:
    """Best images/s of the detector and faces/s of the recogniser, standalone: one session using
    every core at batch 1..N, or one single-threaded session per core side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from embedder_service.config import EmbedderSettings
    from embedder_service.models import Detector, Recognizer, discover

    cores = os.cpu_count() or 1
    files = discover(Path(models_dir) / "buffalo_l")
    cpu = [("CPUExecutionProvider", {})]
    rng = np.random.default_rng(0)
    det_input = rng.integers(0, 256, (640, 640, 3), dtype=np.uint8)
    crops = rng.integers(0, 256, (64, 112, 112, 3), dtype=np.uint8)

    def rate(runs: list[Callable[[], int]]) -> float:
        """Items/s of `runs` (one per thread) repeated side by side for about `seconds`."""
        for run in runs:
            run()  # warm-up
        done = 0
        started = time.perf_counter()
        with ThreadPoolExecutor(len(runs)) as pool:

            def loop(run: Callable[[], int]) -> int:
                n = 0
                while time.perf_counter() - started < seconds:
                    n += run()
                return n

            done = sum(pool.map(loop, runs))
        return done / (time.perf_counter() - started)

    best: dict[str, tuple[float, str]] = {}

    def consider(model: str, value: float, how: str) -> None:
        if value > best.get(model, (0.0, ""))[0]:
            best[model] = (value, how)

    for threads, sessions in ((0, 1), (1, cores)):
        settings = EmbedderSettings(
            intra_op_threads=threads, intra_op_spinning=True, batching={"max_detection_batch_size": 4}
        )
        how = "1 session x all cores" if sessions == 1 else f"{sessions} single-thread sessions side by side"
        detectors = [Detector(files.detector, settings, cpu) for _ in range(sessions)]
        for batch in (1, 4):
            consider(
                "detector",
                rate([lambda d=d, b=batch: len(d.run([det_input] * b)) for d in detectors]),
                f"{how}, batch {batch}",
            )
        del detectors
        recognizers = [Recognizer(files.recognizer, settings, cpu) for _ in range(sessions)]
        for batch in (1, 8, 32):
            consider(
                "recogniser",
                rate([lambda r=r, b=batch: len(r.run(list(crops[:b]))) for r in recognizers]),
                f"{how}, batch {batch}",
            )
        del recognizers
    return best


def measure_ceiling(models_dir: Path, seconds: float) -> dict[str, tuple[float, str]]:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_ceiling, str(models_dir), seconds).result()


# The service -----------------------------------------------------------------------------------


async def run_streams(
    stub: embedder_pb2_grpc.EmbedderServiceStub, images: list[bytes], clients: int, pid: int
) -> Figures:
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
    return Figures(len(images), found, time.perf_counter() - started, latencies, peak_rss(pid))


async def run_unary(stub: embedder_pb2_grpc.EmbedderServiceStub, images: list[bytes], pid: int) -> Figures:
    latencies, found = [], 0
    started = time.perf_counter()
    for data in images:
        t0 = time.perf_counter()
        response = await stub.Embed(embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=data)))
        latencies.append(time.perf_counter() - t0)
        found += len(response.faces)
    return Figures(len(images), found, time.perf_counter() - started, latencies, peak_rss(pid))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(models_dir: Path, overrides: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDER_")}
    env.update(
        EMBEDDER_MODELS_DIR=str(models_dir),
        EMBEDDER_GRPC_HOST="127.0.0.1",
        EMBEDDER_GRPC_PORT=str(port),
        EMBEDDER_METRICS_PORT="0",
        EMBEDDER_ALLOW_DOWNLOAD="false",
        EMBEDDER_LOG_LEVEL="WARNING",
        **overrides,
    )
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


@dataclass
class Workload:
    name: str
    images: list[bytes]
    service: Callable[[embedder_pb2_grpc.EmbedderServiceStub, int], Any]  # (stub, pid) -> awaitable Figures
    faces_each: float = 0.0
    results: dict[str, list[Figures]] = field(default_factory=dict)

    def add(self, key: str, figures: Figures) -> None:
        self.results.setdefault(key, []).append(figures)

    def median(self, key: str, metric: str) -> float:
        runs = self.results[key]
        if metric == "p50":
            return statistics.median(f.pct(50) for f in runs) * 1000
        if metric == "rss":
            return max(f.peak_rss for f in runs) / 2**20
        return statistics.median(getattr(f, metric) for f in runs)


async def service_run(target: str, pid: int, workload: Workload | None) -> Figures:
    """One workload through the service; None = a warm-up selfie."""
    async with grpc.aio.insecure_channel(target, options=MAX_MESSAGE) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        if workload is None:
            return await run_unary(stub, selfies(1), pid)
        return await workload.service(stub, pid)


def main_async(args: argparse.Namespace) -> None:
    from tests.bench.arch_models import write_bench_pack

    work = Path(tempfile.mkdtemp(prefix="bench-embedder-"))
    models_dir = Path(args.models_dir) if args.models_dir else work / "models"
    if not (models_dir / "buffalo_l").is_dir():
        print(f"writing the benchmark pack to {models_dir} ...", flush=True)
        write_bench_pack(models_dir)
    print("generating images ...", flush=True)
    events = event_photo_set(args.event_distinct, args.event_images, args.event_faces)
    groups = multi_face_photos(args.photos, args.faces_per_photo)
    portraits = selfies(args.selfies)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(
        f"machine: {os.cpu_count()} CPUs (shared; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start); "
        f"{len(events)} event photos (6000x4000 JPEG, {args.event_faces} faces, {args.event_distinct} distinct, "
        f"{np.mean([len(e) for e in events]) / 1e6:.1f} MB each), {len(groups)} group photos x "
        f"{args.faces_per_photo} faces (1280x960), {len(portraits)} selfies (480x640); {args.rounds} round(s)",
        flush=True,
    )
    workloads = [
        Workload("event photos", events, lambda stub, pid: run_streams(stub, events, 2, pid), args.event_faces),
        Workload("group photos", groups, lambda stub, pid: run_streams(stub, groups, 4, pid), args.faces_per_photo),
        Workload("selfies", portraits, lambda stub, pid: run_unary(stub, portraits, pid), 1),
    ]
    services = {"service": {}}
    if args.compare_threads:
        # The other thread layout worth having on 2 cores (the default is 1 inference thread per
        # model x onnxruntime's intra-op threads on every core): 2 per model x 1 intra-op thread.
        services["service, 2 inference threads x 1 intra-op"] = {
            "EMBEDDER_INTRA_OP_THREADS": "1",
            "EMBEDDER_BATCHING__INFERENCE_THREADS": "2",
        }
    references = {
        "FaceAnalysis stock": Reference(models_dir, spinning=True),
        "FaceAnalysis spinning off": Reference(models_dir, spinning=False),
    }
    ceilings: dict[str, list[float]] = {}
    running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def ceiling_round() -> None:
        for model, (rate, how) in measure_ceiling(models_dir, args.ceiling_seconds).items():
            ceilings.setdefault(model, []).append(rate)
            unit = "images" if model == "detector" else "faces"
            print(f"  CPU ceiling: {model:<10} {rate:6.2f} {unit}/s ({how})", flush=True)

    try:
        for key, overrides in services.items():  # all up front: idle, they cost no CPU
            running[key] = start_service(models_dir, overrides)
            asyncio.run(service_run(running[key][1], running[key][0].pid, None))  # warm-up
        contenders = [*references, *services]
        for round_no in range(1, args.rounds + 1):
            # The machine's load drifts: every contender runs each workload back to back, in the
            # reverse order every other round, and the ceiling is measured in every round.
            order = contenders if round_no % 2 else contenders[::-1]
            print(f"round {round_no}: {', '.join(order)}", flush=True)
            if round_no % 2:
                ceiling_round()
            for workload in workloads:
                for key in order:
                    if key in references:
                        figures = references[key].run(workload.images)
                    else:
                        process, target = running[key]
                        figures = asyncio.run(service_run(target, process.pid, workload))
                    workload.add(key, figures)
                    print(figures.line(f"{workload.name}: {key}"), flush=True)
            if not round_no % 2:
                ceiling_round()
    finally:
        for reference in references.values():
            reference.close()
        for process, _ in running.values():
            process.terminate()
            process.wait(timeout=60)
    det_rate = statistics.median(ceilings["detector"])
    rec_rate = statistics.median(ceilings["recogniser"])

    for workload in workloads:
        faces_each = workload.results["service"][0].faces / workload.results["service"][0].images
        limit = 1.0 / (1.0 / det_rate + faces_each / rec_rate)
        stock = workload.median("FaceAnalysis stock", "images_per_s")
        spin_off = workload.median("FaceAnalysis spinning off", "images_per_s")
        print(f"\n{workload.name} (medians over rounds; ceiling {limit:.2f} img/s = detector + {faces_each:g} faces):")
        print(
            f"  {'':<52} {'img/s':>7} {'faces/s':>8} {'p50 ms':>9} {'peak RSS':>9} {'vs stock':>9} "
            f"{'vs spin-off':>11} {'of ceiling':>10}"
        )
        for key in [*references, *services]:
            ips = workload.median(key, "images_per_s")
            print(
                f"  {key:<52} {ips:7.2f} {workload.median(key, 'faces_per_s'):8.2f} "
                f"{workload.median(key, 'p50'):9.1f} {workload.median(key, 'rss'):6.0f} MiB "
                f"{ips / stock:8.2f}x {ips / spin_off:10.2f}x {ips / limit:9.0%}"
            )
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(
        "targets (2 CPU cores): event and group photos >= 90% of the ceiling; event photos >= 1.4x FaceAnalysis "
        "stock; selfie p50 latency <= 1.0x FaceAnalysis spinning off; peak RSS with 32 event photos in flight "
        "<= 1.5 GB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models-dir", help="an existing benchmark pack's models dir (default: write one to a temp dir)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--event-images", type=int, default=32, help="event photos per run (32 in flight)")
    parser.add_argument("--event-distinct", type=int, default=8, help="distinct generated event photos")
    parser.add_argument("--event-faces", type=int, default=6)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--faces-per-photo", type=int, default=6)
    parser.add_argument("--selfies", type=int, default=8)
    parser.add_argument("--ceiling-seconds", type=float, default=4.0, help="time per ceiling measurement")
    parser.add_argument(
        "--compare-threads", action="store_true", help="also run the service with the other thread layout"
    )
    main_async(parser.parse_args())


if __name__ == "__main__":
    main()
