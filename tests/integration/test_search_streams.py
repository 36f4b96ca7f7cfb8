"""IndexPhotos under stress, against real servers: concurrent streams over the same photos lose or
duplicate nothing, and an embedder that goes away mid-stream fails only the photos it held while
the stream goes on."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import grpc

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.faces import FaceSpec, make_photo
from tests.fixtures.embedder import embedder_running
from tests.fixtures.search import RunningSearch, search_database_url, search_running

_names = itertools.count()


def photo(i: int) -> bytes:
    return make_photo([FaceSpec(160 + (i % 5) * 20, 200, 50, 20 + i)], size=(480, 360), seed=i)


async def stream(
    stub: search_pb2_grpc.FaceSearchServiceStub, requests: list[search_pb2.IndexPhotosRequest], pause: float = 0.0
) -> list[search_pb2.IndexPhotosResponse]:
    async def gen() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
        for r in requests:
            if pause:
                await asyncio.sleep(pause)
            yield r

    return [r async for r in stub.IndexPhotos(gen())]


async def test_concurrent_streams_over_the_same_photos(search_server: RunningSearch) -> None:
    name = f"streams-{next(_names)}"
    images = [photo(i) for i in range(12)]
    async with grpc.aio.insecure_channel(search_server.target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
        requests = [
            search_pb2.IndexPhotosRequest(collection=name, external_id=f"p{i}", image=images[i]) for i in range(12)
        ]
        # Four streams, each sending all twelve photos in its own order.
        orders = [requests, requests[::-1], requests[6:] + requests[:6], requests[::2] + requests[1::2]]
        results = await asyncio.gather(*(stream(stub, order) for order in orders))
        for responses in results:
            assert sorted(r.external_id for r in responses) == sorted(f"p{i}" for i in range(12))
            assert all(r.status.code == 0 for r in responses), [r.status for r in responses if r.status.code]
        info = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))).collection
        assert (info.photo_count, info.face_count) == (12, 12)
        created = [r for responses in results for r in responses if r.outcome == search_pb2.INDEX_OUTCOME_CREATED]
        assert sorted(r.external_id for r in created) == sorted(f"p{i}" for i in range(12))  # each created once


async def test_embedder_going_away_mid_stream(model_pack, pg_server) -> None:
    url = search_database_url(pg_server, f"gone_{next(_names)}")
    async with embedder_running(model_pack) as embedder:
        async with search_running(url, embedder.target, embedder={"timeout_s": 3.0}) as running:
            async with grpc.aio.insecure_channel(running.target) as channel:
                stub = search_pb2_grpc.FaceSearchServiceStub(channel)
                await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="gone"))
                responses: list[search_pb2.IndexPhotosResponse] = []
                queue: asyncio.Queue[search_pb2.IndexPhotosRequest | None] = asyncio.Queue()

                async def gen() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                    while (item := await queue.get()) is not None:
                        yield item

                call = stub.IndexPhotos(gen())

                first_three = asyncio.Event()

                async def read() -> None:
                    async for response in call:
                        responses.append(response)
                        if len(responses) == 3:
                            first_three.set()

                reader = asyncio.create_task(read())
                for i in range(3):
                    queue.put_nowait(
                        search_pb2.IndexPhotosRequest(collection="gone", external_id=f"a{i}", image=photo(i))
                    )
                await asyncio.wait_for(first_three.wait(), 60)
                await embedder.stop(grace_s=0.1)
                for i in range(3):
                    queue.put_nowait(
                        search_pb2.IndexPhotosRequest(collection="gone", external_id=f"b{i}", image=photo(i + 3))
                    )
                queue.put_nowait(None)
                await asyncio.wait_for(reader, 60)
            by_id = {r.external_id: r for r in responses}
            assert sorted(by_id) == ["a0", "a1", "a2", "b0", "b1", "b2"]
            assert all(by_id[f"a{i}"].status.code == 0 for i in range(3))
            for i in range(3):
                status = by_id[f"b{i}"].status
                assert status.code in (grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
                assert "embedder" in status.message
            pool = running.app.database.pool
            assert await pool.fetchval("SELECT count(*) FROM photos") == 3
            assert await pool.fetchval("SELECT count(*) FROM faces") == 3
