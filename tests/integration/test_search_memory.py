"""Memory bound of `python -m search_service` under clients that never read their IndexPhotos
answers and send large requests (10k-character external ids, 2 MiB images): the service's RSS
stays within MEMORY_BOUND_MB of its baseline, and comes back once the streams end. Prints the peak.

    .venv/bin/python -m pytest tests/integration/test_search_memory.py -s
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.faces import FaceSpec, make_photo
from tests.fixtures.search import search_database_url
from tests.integration.test_search_process import free_port

# The documented bound (search_service/README.md, "Hostile input and memory"): growth of the
# service's resident memory over its idle baseline while any number of such streams are open.
MEMORY_BOUND_MB = 300
# What may stay after the streams end (allocator caches, grown pools, compiled statements).
RETURNED_WITHIN_MB = 75
STREAMS = 2
REQUESTS_PER_STREAM = 1500
# A write that waits this long means the server stopped taking requests: backpressure works.
BLOCKED_WRITE_S = 5.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def wait_serving(target: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError(await asyncio.to_thread(log.read_text, errors="replace"))
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the search service did not become SERVING")


async def flood(stub: search_pb2_grpc.FaceSearchServiceStub, collection: str, stream: int, image: bytes) -> int:
    """Sends large requests without ever reading an answer; returns how many the server took
    before it stopped reading (or all of them)."""
    call = stub.IndexPhotos()
    sent = 0
    try:
        for i in range(REQUESTS_PER_STREAM):
            # Half refused at once (external id too long), half go to the embedder (not an image).
            external_id = ("x" * 10_000 if i % 2 else "") + f"s{stream}-{i}"
            request = search_pb2.IndexPhotosRequest(collection=collection, external_id=external_id, image=image)
            try:
                await asyncio.wait_for(call.write(request), BLOCKED_WRITE_S)
            except TimeoutError:
                break
            sent += 1
        return sent
    finally:
        call.cancel()


async def test_clients_that_never_read_keep_memory_bounded(pg_server, embedder_server, tmp_path) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": search_database_url(pg_server, f"memory_{os.getpid()}"),
        "SEARCH_GRPC_PORT": str(port),
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": str(free_port()),
        "SEARCH_EMBEDDER_TARGET": embedder_server.target,
        "SEARCH_SHUTDOWN_GRACE_S": "2",
    }
    log = tmp_path / "search.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "search_service"]
        process = await asyncio.to_thread(subprocess.Popen, command, env=env, stdout=out, stderr=out)
    try:
        await wait_serving(target, process, log)
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="memory"))
            # Warm up every path once (embedder call, database write) before the baseline.
            warm = make_photo([FaceSpec(160, 120, 50, 1)], size=(320, 240))
            answers = [
                r
                async for r in stub.IndexPhotos(
                    iter(
                        [
                            search_pb2.IndexPhotosRequest(collection="memory", external_id="warm", image=warm),
                            search_pb2.IndexPhotosRequest(collection="memory", external_id="x" * 300, image=warm),
                        ]
                    )
                )
            ]
            assert len(answers) == 2
            await asyncio.sleep(1)
            baseline = rss_mb(process.pid)
            peak = baseline
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, rss_mb(process.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            image = np.random.default_rng(0).integers(0, 256, 2 * 1024 * 1024, dtype=np.uint8).tobytes()
            sent = await asyncio.gather(*(flood(stub, "memory", s, image) for s in range(STREAMS)))
            await asyncio.sleep(2)
            during = rss_mb(process.pid)
            # The streams are cancelled now; the service must give the memory back.
            after = during
            for _ in range(40):
                await asyncio.sleep(0.25)
                after = rss_mb(process.pid)
                if after - baseline < RETURNED_WITHIN_MB:
                    break
            sampling = False
            await sampler
            # Still serving after all that.
            reply = await stub.GetCollection(search_pb2.GetCollectionRequest(name="memory"))
            assert reply.collection.photo_count == 1
        print(
            f"\nsearch service RSS: baseline {baseline:.0f} MB, peak {peak:.0f} MB (+{peak - baseline:.0f} MB, "
            f"bound +{MEMORY_BOUND_MB} MB), after the streams {after:.0f} MB; requests taken per stream "
            f"before backpressure: {sent} of {REQUESTS_PER_STREAM} (2 MiB each)"
        )
        assert peak - baseline < MEMORY_BOUND_MB, (baseline, peak, sent)
        assert after - baseline < RETURNED_WITHIN_MB, (baseline, after)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text(errors="replace")
    assert "Task was destroyed but it is pending" not in text, text[-3000:]
    assert '"levelname": "ERROR"' not in text, text[-3000:]
