"""The descriptor cache across replicas: two search services on one database (replica A in this
process, replica B a `python -m search_service` process), the real embedder. A cold replica
answers from PostgreSQL, a warm one from memory with the same answer, and a write through A is seen
by B's very next search (B's cache is never used at a stale version)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.metrics import CACHE_LOOKUPS
from tests.faces import FaceSpec, make_photo, selfie
from tests.fixtures.search import RunningSearch, search_database_url, search_running
from tests.integration.test_search_process import free_port
from tests.integration.test_search_service import EVENT, event_photo, index

LOOKUPS = CACHE_LOOKUPS.describe()[0].name


def cache_lookups(metrics_port: int) -> dict[str, float]:
    """The replica's descriptor-cache lookups by result, from a live /metrics scrape."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(body):
        if family.name == LOOKUPS:
            return {s.labels["result"]: s.value for s in family.samples if s.name.endswith("_total")}
    return {}


@pytest.fixture
def replica_b(pg_server, embedder_server, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """A second replica as its own process on a fresh database: (database url, target, metrics port)."""
    url = search_database_url(pg_server, f"cache_{os.getpid()}")
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": url,
        "SEARCH_GRPC_PORT": str(port),
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": str(metrics_port),
        "SEARCH_EMBEDDER_TARGET": embedder_server.target,
        "SEARCH_SHUTDOWN_GRACE_S": "1",
    }
    log_path = tmp_path / "replica-b.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "search_service"], env=env, stdout=log, stderr=log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 90
            status = None
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING, log_path.read_text(errors="replace")[-3000:]
        yield url, f"127.0.0.1:{port}", metrics_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def replica_a(replica_b, embedder_server) -> AsyncIterator[RunningSearch]:
    async with search_running(replica_b[0], embedder_server.target) as running:
        yield running


async def found(stub: search_pb2_grpc.FaceSearchServiceStub, name: str, identity: int) -> list[tuple[str, float]]:
    reply = await stub.Search(
        search_pb2.SearchRequest(
            collection=name, image=search_pb2.ImageQuery(image=selfie(identity)), min_similarity=0.8, top_k=10
        )
    )
    return [(m.photo_id, m.similarity) for m in reply.matches]


async def until_hit(stub, name: str, identity: int, metrics_port: int) -> list[tuple[str, float]]:
    """Searches until one is answered from the replica's cache (it loads in the background)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        before = (await asyncio.to_thread(cache_lookups, metrics_port)).get("hit", 0.0)
        result = await found(stub, name, identity)
        if (await asyncio.to_thread(cache_lookups, metrics_port)).get("hit", 0.0) > before:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("the replica's cache never answered")


async def test_a_write_on_one_replica_is_seen_by_the_other_cache(replica_a: RunningSearch, replica_b) -> None:
    _, target_b, metrics_b = replica_b
    async with grpc.aio.insecure_channel(replica_a.target) as ch_a, grpc.aio.insecure_channel(target_b) as ch_b:
        a, b = search_pb2_grpc.FaceSearchServiceStub(ch_a), search_pb2_grpc.FaceSearchServiceStub(ch_b)
        name = "shared-event"
        await a.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
        await index(
            a, [search_pb2.IndexPhotosRequest(collection=name, external_id=p, image=event_photo(p)) for p in EVENT]
        )

        # Cold: B's first search misses its cache and is answered from PostgreSQL, correctly.
        before = await asyncio.to_thread(cache_lookups, metrics_b)
        cold = await found(b, name, 1)
        assert sorted(p for p, _ in cold) == ["p0", "p2", "p4"]
        after = await asyncio.to_thread(cache_lookups, metrics_b)
        assert after.get("miss", 0) == before.get("miss", 0) + 1
        # Warm: the same answer from memory (similarities equal to float32 rounding).
        warm = await until_hit(b, name, 1, metrics_b)
        assert [p for p, _ in warm] == [p for p, _ in cold]
        assert all(abs(x - y) < 1e-5 for (_, x), (_, y) in zip(warm, cold, strict=True))

        # A write through A: B's very next search sees it (stale entry refused, PostgreSQL answers).
        await a.DeletePhoto(search_pb2.DeletePhotoRequest(collection=name, external_id="p2"))
        stale_before = (await asyncio.to_thread(cache_lookups, metrics_b)).get("stale", 0)
        assert sorted(p for p, _ in await found(b, name, 1)) == ["p0", "p4"]
        assert (await asyncio.to_thread(cache_lookups, metrics_b)).get("stale", 0) == stale_before + 1

        new_photo = make_photo([FaceSpec(300, 260, 70, 1)], size=(640, 480), seed=9)
        await index(a, [search_pb2.IndexPhotosRequest(collection=name, external_id="p9", image=new_photo)])
        assert sorted(p for p, _ in await found(b, name, 1)) == ["p0", "p4", "p9"]
        # And once B has reloaded, its memory answers with the new photo too.
        assert sorted(p for p, _ in await until_hit(b, name, 1, metrics_b)) == ["p0", "p4", "p9"]
        # Pages of a cached query stay on the cache's path and cover every photo once.
        query = search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1)), top_k=2)
        seen: list[str] = []
        while True:
            reply = await b.Search(query)
            seen += [m.photo_id for m in reply.matches]
            if not reply.next_page_token:
                break
            query.page_token = reply.next_page_token
        assert sorted(seen) == sorted([*(p for p in EVENT if p != "p2"), "p9"])


async def identify(stub, name: str, identity: int) -> list[tuple[str, float]]:
    reply = await stub.IdentifyPerson(
        search_pb2.IdentifyPersonRequest(
            collection=name, face=search_pb2.FaceQuery(image=selfie(identity)), top_k=3, threshold=0.5
        )
    )
    return [(c.person.external_id, c.similarity) for c in reply.candidates]


async def test_identify_from_the_cache_sees_enrolments_and_deletes_of_another_replica(
    replica_a: RunningSearch, replica_b
) -> None:
    _, target_b, metrics_b = replica_b
    async with grpc.aio.insecure_channel(replica_a.target) as ch_a, grpc.aio.insecure_channel(target_b) as ch_b:
        a, b = search_pb2_grpc.FaceSearchServiceStub(ch_a), search_pb2_grpc.FaceSearchServiceStub(ch_b)
        name = "shared-registry"
        await a.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
        for identity in (7, 8, 9):
            await a.EnrollPerson(
                search_pb2.EnrollPersonRequest(collection=name, external_id=f"id{identity}", images=[selfie(identity)])
            )
        cold = await identify(b, name, 8)
        assert [p for p, _ in cold] == ["id8"]
        deadline = time.monotonic() + 30
        while True:  # until B answers from its cache
            before = (await asyncio.to_thread(cache_lookups, metrics_b)).get("hit", 0.0)
            warm = await identify(b, name, 8)
            if (await asyncio.to_thread(cache_lookups, metrics_b)).get("hit", 0.0) > before:
                break
            assert time.monotonic() < deadline, "the replica's cache never answered"
            await asyncio.sleep(0.1)
        assert [p for p, _ in warm] == ["id8"] and abs(warm[0][1] - cold[0][1]) < 1e-5
        # Deleted through A: B's next identify no longer finds the person; enrolled again: found.
        await a.DeletePerson(search_pb2.DeletePersonRequest(collection=name, external_id="id8"))
        assert await identify(b, name, 8) == []
        await a.EnrollPerson(search_pb2.EnrollPersonRequest(collection=name, external_id="again", images=[selfie(8)]))
        assert [p for p, _ in await identify(b, name, 8)] == ["again"]
