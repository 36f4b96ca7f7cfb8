"""EmbedStream and overload against real servers on localhost: many concurrent streams of mixed good
and bad images (every result exactly once, bad items get their own status and the stream goes
on), cross-request batching, per-stream backpressure, RESOURCE_EXHAUSTED, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service import metrics
from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2
from tests import faces
from tests.fixtures.embedder import embedder_running, start_embedder

GOOD = {
    f"good{i}": faces.make_photo(
        [faces.FaceSpec(120 + 40 * i, 150, 40 + 3 * i, i), faces.FaceSpec(450, 330, 30, i + 10)],
        (640, 480),
        seed=i,
        fmt=("jpg", "png", "webp")[i % 3],
    )
    for i in range(6)
}
BAD = {
    "empty": b"",
    "garbage": b"\x00\x01garbage" * 50,
    "truncated": GOOD["good0"][:1500],
}


def _recognition_batches() -> tuple[float, float]:
    """(crops, batches) run by the recognition batcher so far in this process."""
    (family,) = metrics.BATCH_SIZE.collect()  # read through the metric itself: no copy of its name
    samples = {s.name: s.value for s in family.samples if s.labels.get("model") == "recognition"}
    return samples.get(f"{family.name}_sum", 0.0), samples.get(f"{family.name}_count", 0.0)


def _request(request_id: str, data: bytes) -> embedder_pb2.EmbedStreamRequest:
    return embedder_pb2.EmbedStreamRequest(
        request_id=request_id, input=embedder_pb2.ImageInput(encoded_image=data), options=face_pb2.EmbedOptions()
    )


@pytest.fixture(scope="module")
async def unary_answers(embedder_server) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Embeddings of each good image from the unary RPC, to compare stream results with."""
    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        answers = {}
        for name, data in GOOD.items():
            response = await stub.Embed(embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=data)))
            answers[name] = [np.array(f.embedding) for f in response.faces]
            assert len(answers[name]) == 2
        return answers


async def test_many_concurrent_streams_mixed_good_and_bad(embedder_server, unary_answers) -> None:  # type: ignore[no-untyped-def]
    streams, per_stream = 8, 18
    batches_before = _recognition_batches()
    names = [*GOOD, *BAD]

    async def one_stream(stream_no: int, stub: embedder_pb2_grpc.EmbedderServiceStub) -> dict[str, object]:
        plan = {f"s{stream_no}-{i}": names[(stream_no + i) % len(names)] for i in range(per_stream)}

        async def requests() -> AsyncIterator[embedder_pb2.EmbedStreamRequest]:
            for request_id, name in plan.items():
                yield _request(request_id, GOOD.get(name, BAD.get(name, b"")))

        seen: dict[str, object] = {}
        async for response in stub.EmbedStream(requests()):
            assert response.request_id not in seen, "a result arrived twice"
            seen[response.request_id] = response
        assert set(seen) == set(plan), "a result never arrived"
        for request_id, name in plan.items():
            response = seen[request_id]
            if name in BAD:
                assert response.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], name
                assert response.status.message and not response.faces
            else:
                assert response.status.code == 0, response.status.message
                assert response.image_size.width == 640 and len(response.faces) == 2
                for face, expected in zip(response.faces, unary_answers[name], strict=True):
                    assert float(np.dot(face.embedding, expected)) >= 0.9999
        return seen

    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        results = await asyncio.gather(*(one_stream(s, stub) for s in range(streams)))
    assert sum(len(r) for r in results) == streams * per_stream
    after = _recognition_batches()
    total, count = after[0] - batches_before[0], after[1] - batches_before[1]
    assert total / count > 1.5, f"crops of concurrent streams should share batches (mean batch {total / count:.2f})"


async def test_unordered_responses_match_by_request_id_and_empty_stream_ends(embedder_server) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        assert [r async for r in stub.EmbedStream(iter([]))] == []
        requests = [
            _request("no-input", b""),
            embedder_pb2.EmbedStreamRequest(request_id="unset"),
            embedder_pb2.EmbedStreamRequest(
                request_id="bad-option",
                input=embedder_pb2.ImageInput(encoded_image=GOOD["good1"]),
                options=face_pb2.EmbedOptions(detection_threshold=7.0),
            ),
            _request("ok", GOOD["good1"]),
        ]
        replies = {r.request_id: r async for r in stub.EmbedStream(iter(requests))}
        assert replies["ok"].status.code == 0 and len(replies["ok"].faces) == 2
        for request_id in ("no-input", "unset", "bad-option"):
            assert replies[request_id].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "detection_threshold" in replies["bad-option"].status.message


async def test_stream_backpressure_bounds_images_in_flight(model_pack) -> None:  # type: ignore[no-untyped-def]
    async with embedder_running(model_pack, max_in_flight_per_stream=2) as server:
        engine = server.server.engine
        peak = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, engine.in_flight)
                await asyncio.sleep(0.0005)

        watcher = asyncio.create_task(watch())
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            requests = [_request(f"r{i}", GOOD[f"good{i % 6}"]) for i in range(30)]
            got = []
            async for response in stub.EmbedStream(iter(requests)):
                got.append(response.request_id)
                await asyncio.sleep(0.01)  # a slow reader
        stop.set()
        await watcher
        assert sorted(got) == sorted(r.request_id for r in requests)
        assert 1 <= peak <= 2


async def test_overload_answers_resource_exhausted_and_recovers(model_pack) -> None:  # type: ignore[no-untyped-def]
    async with embedder_running(model_pack, max_decoded_pixels_in_flight=1) as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            calls = [
                stub.Embed(embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=GOOD["good2"])))
                for _ in range(12)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert refused and all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
            assert any(not isinstance(o, Exception) for o in outcomes)
            # In a stream the overloaded item gets its own status and the stream goes on.
            replies = [r async for r in stub.EmbedStream(iter([_request(f"x{i}", GOOD["good3"]) for i in range(8)]))]
            codes = {r.status.code for r in replies}
            assert len(replies) == 8 and codes <= {0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
            assert grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] in codes
            again = await stub.Embed(
                embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=GOOD["good3"]))
            )
            assert len(again.faces) == 2


async def test_graceful_stop_finishes_in_flight_calls_and_refuses_new_ones(model_pack) -> None:  # type: ignore[no-untyped-def]
    server = await start_embedder(model_pack.models_dir, model_pack.pack_name)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())  # connected before the race starts
        # Large photos keep each call busy long enough (decode + letterbox) for all to be in flight.
        big = faces.make_photo([faces.FaceSpec(1500, 1000, 300, 1), faces.FaceSpec(3000, 1500, 200, 2)], (4000, 3000))
        calls = [
            asyncio.ensure_future(
                stub.Embed(embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=big)))
            )
            for _ in range(4)
        ]
        deadline = time.monotonic() + 10
        # Polls the engine's counter: it has no event to wait on, and this is a test.
        while server.server.engine.in_flight < len(calls) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.0005)
        assert server.server.engine.in_flight == len(calls)
        stopping = asyncio.create_task(server.stop(grace_s=5.0))
        await asyncio.sleep(0)
        results = await asyncio.gather(*calls)
        assert all(len(r.faces) == 2 for r in results)
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _wait_serving(target: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError("embedder did not become SERVING")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDER_")}
    env.update(values)
    return env


def test_process_serves_and_exits_cleanly_on_sigterm(model_pack) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "embedder_service"],
        cwd=Path(__file__).resolve().parents[2],
        env=_env(
            EMBEDDER_MODELS_DIR=str(model_pack.models_dir),
            EMBEDDER_GRPC_PORT=str(port),
            EMBEDDER_GRPC_HOST="127.0.0.1",
            EMBEDDER_METRICS_PORT="0",
            EMBEDDER_SHUTDOWN_GRACE_S="2",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_serving(f"127.0.0.1:{port}", process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = embedder_pb2_grpc.EmbedderServiceStub(channel).Embed(
                embedder_pb2.EmbedRequest(input=embedder_pb2.ImageInput(encoded_image=GOOD["good4"])), timeout=10
            )
            assert len(reply.faces) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_process_without_models_fails_with_a_clear_message(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "embedder_service"],
        cwd=Path(__file__).resolve().parents[2],
        env=_env(
            EMBEDDER_MODELS_DIR=str(tmp_path),
            EMBEDDER_ALLOW_DOWNLOAD="false",
            EMBEDDER_GRPC_PORT="0",
            EMBEDDER_METRICS_PORT="0",
        ),
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == 2
    stderr = completed.stderr.decode()
    assert str(tmp_path / "buffalo_l") in stderr and "python -m tests.model_pack" in stderr
