"""The embedder tier as it runs in production, on localhost: three embedder processes, one search
service whose target lists all three, imports through the `facesearch index` CLI. Work spreads over
every embedder (read from each one's own /metrics), losing one mid-import loses and repeats
nothing, a restarted one gets work again within seconds, and after an outage of all of them the
service works again soon after one is SERVING."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.faces import FaceSpec, make_photo
from tests.fixtures.processes import EmbedderProcess, SearchProcess, metric_value
from tests.fixtures.search import search_database_url

PHOTOS = 60
IMAGES_OK = ("facesearch_embedder_images_total", {"outcome": "ok"})
# Slowest an embedder may be to get calls again once it is SERVING (the goal is ~2 s; the
# bound is wide for a shared 2-core machine).
RECOVERY_BOUND_S = 10.0
# Every embedder down this long, then one back: Search must work again within OUTAGE_RECOVERY_S of
# it being SERVING (with gRPC's default reconnect backoff it can take many seconds more).
OUTAGE_S = 12.0
OUTAGE_RECOVERY_S = 3.0


# gRPC keeps at most 256 KiB of a call for its own retries; photos are larger than that, and a
# photo on a killed embedder must still be retried on another one.
PHOTO_BYTES = 600 * 1024


def padded(jpeg: bytes, size: int) -> bytes:
    """`jpeg` grown to about `size` bytes with comment segments (decoders skip them)."""
    segments = []
    remaining = size - len(jpeg)
    while remaining > 0:
        payload = min(remaining, 65_000)
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + bytes(payload))
        remaining -= payload + 4
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def write_photos(directory: Path, prefix: str, count: int, size: int = 0) -> Path:
    directory.mkdir(parents=True)
    for i in range(count):
        image = make_photo([FaceSpec(160 + (i % 5) * 20, 200, 50, 20 + i)], size=(480, 360), seed=i)
        (directory / f"{prefix}{i:03d}.jpg").write_bytes(padded(image, size))
    return directory


def images_done(embedder: EmbedderProcess) -> float:
    return metric_value(embedder.metrics(), *IMAGES_OK)


def index_command(target: str, collection: str, directory: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "facesearch.cli",
        "index",
        collection,
        str(directory),
        "--target",
        target,
        "--no-progress",
    ]


def summary_counts(out: str) -> dict[str, int]:
    counts = {key: int(value) for key, value in re.findall(r"^(\w+): (\d+)", out, re.MULTILINE)}
    assert {"photos", "faces", "errors", "resent"} <= counts.keys(), out
    return counts


@pytest.fixture(scope="module")
def tier(model_pack: Any, pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("tier-logs")
    embedders: list[EmbedderProcess] = []
    search = None
    try:
        # Started side by side: each loads its models while the others do.
        embedders = [EmbedderProcess.start(model_pack, logs, f"embedder{i}", wait=False) for i in range(3)]
        for embedder in embedders:
            embedder.wait_serving()
        target = "ipv4:" + ",".join(e.target for e in embedders)
        url = search_database_url(pg_server, f"tier_{os.getpid()}")
        search = SearchProcess.start(url, target, logs)
        yield {"embedders": embedders, "search": search}
    finally:
        if search is not None:
            search.stop()
        for embedder in embedders:
            embedder.stop()


def stored(target: str, collection: str) -> tuple[int, int]:
    """(photos, faces) of a collection, as GetCollection reports them."""
    with grpc.insecure_channel(target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        info = stub.GetCollection(search_pb2.GetCollectionRequest(name=collection), timeout=30).collection
    return info.photo_count, info.face_count


def test_an_import_spreads_over_every_embedder(tier: dict[str, Any], tmp_path: Path) -> None:
    embedders: list[EmbedderProcess] = tier["embedders"]
    photos = write_photos(tmp_path / "spread", "s", PHOTOS)
    before = [images_done(e) for e in embedders]
    done = subprocess.run(
        index_command(tier["search"].target, "spread", photos), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    counts = summary_counts(done.stdout)
    assert (counts["photos"], counts["faces"], counts["errors"]) == (PHOTOS, PHOTOS, 0), done.stdout
    shares = [images_done(e) - b for e, b in zip(embedders, before, strict=True)]
    assert sum(shares) == PHOTOS, shares
    assert all(share >= 0.15 * PHOTOS for share in shares), shares
    assert stored(tier["search"].target, "spread") == (PHOTOS, PHOTOS)


def test_losing_an_embedder_mid_import_loses_and_repeats_nothing(tier: dict[str, Any], tmp_path: Path) -> None:
    embedders: list[EmbedderProcess] = tier["embedders"]
    victim = embedders[2]
    photos = write_photos(tmp_path / "kill", "k", PHOTOS, PHOTO_BYTES)
    before = images_done(victim)
    cli = subprocess.Popen(
        index_command(tier["search"].target, "kill", photos),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # SIGKILL once the victim has embedded a few of this import's photos: it is mid-import.
        deadline = time.monotonic() + 120
        while images_done(victim) - before < 3:
            assert cli.poll() is None, "the import finished before the embedder could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        victim.kill()
        out, err = cli.communicate(timeout=240)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, out + err
    counts = summary_counts(out)
    # Every photo stored exactly once, no error, and nothing sent twice by the client.
    assert (counts["photos"], counts["faces"], counts["errors"], counts["resent"]) == (PHOTOS, PHOTOS, 0, 0), out
    assert "new 60, changed 0, unchanged 0, without a stored face 0" in out, out
    assert stored(tier["search"].target, "kill") == (PHOTOS, PHOTOS)
    retried = metric_value(tier["search"].metrics(), "facesearch_search_embedder_retries_total")
    assert retried >= 1  # the killed embedder's calls in flight went to another one

    # Restarted, it gets work again within seconds of being SERVING.
    victim.restart()
    serving_at = time.monotonic()
    assert images_done(victim) == 0  # a fresh process
    selfie = make_photo([FaceSpec(240, 180, 60, 21)], size=(480, 360), seed=99)

    async def search_until_the_victim_works() -> float:
        async with grpc.aio.insecure_channel(tier["search"].target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            while time.monotonic() - serving_at < RECOVERY_BOUND_S:
                await stub.Search(
                    search_pb2.SearchRequest(collection="kill", image=search_pb2.ImageQuery(image=selfie))
                )
                if images_done(victim) > 0:
                    return time.monotonic() - serving_at
                await asyncio.sleep(0.05)
        raise AssertionError(f"the restarted embedder got no work within {RECOVERY_BOUND_S} s of being SERVING")

    recovered_after = asyncio.run(search_until_the_victim_works())
    print(f"restarted embedder got work {recovered_after:.2f} s after SERVING")


def test_service_resumes_soon_after_an_outage_of_every_embedder(tier: dict[str, Any]) -> None:
    """All embedders down long enough for gRPC's default reconnect backoff to grow; once one is
    SERVING again, Search works within a couple of seconds."""
    embedders: list[EmbedderProcess] = tier["embedders"]
    selfie = make_photo([FaceSpec(240, 180, 60, 21)], size=(480, 360), seed=98)
    # A collection of its own, so this test does not depend on the others having run.
    collection = "outage"
    request = search_pb2.SearchRequest(collection=collection, image=search_pb2.ImageQuery(image=selfie))

    async def search_works(stub: search_pb2_grpc.FaceSearchServiceStub) -> bool:
        try:
            await stub.Search(request, timeout=10)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            assert "embedder" in (err.details() or "")
            return False
        return True

    async def outage() -> float:
        async with grpc.aio.insecure_channel(tier["search"].target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=collection))
            assert await search_works(stub)
            for embedder in embedders:
                embedder.kill()
            # Long enough for gRPC's default backoff (1 s, x1.6 per failed attempt) to grow past 5 s.
            down_until = time.monotonic() + OUTAGE_S
            while time.monotonic() < down_until:
                assert not await search_works(stub)
                await asyncio.sleep(0.5)
            await asyncio.to_thread(embedders[0].restart)
            serving_at = time.monotonic()
            while not await search_works(stub):
                assert time.monotonic() - serving_at < RECOVERY_BOUND_S, "Search still fails after the bound"
                await asyncio.sleep(0.05)
            return time.monotonic() - serving_at

    recovered_after = asyncio.run(outage())
    print(f"Search worked again {recovered_after:.2f} s after the embedder was SERVING")
    assert recovered_after < OUTAGE_RECOVERY_S
