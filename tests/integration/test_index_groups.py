"""IndexPhotos writes the photos that are ready together in one transaction, and still stores
each photo whole or not at all with a response of its own: when the group's transaction fails
because of one photo, the others are stored and only that one fails. The embedder here answers
from precomputed faces (tests/bench/replay_embedder.py), holding its answers until every photo has
arrived, so the photos are ready at the same moment."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.metrics import INDEX_WRITE_PHOTOS
from tests.bench.replay_embedder import ReplayEmbedder, start
from tests.fixtures.search import search_database_url, search_running

PHOTOS = 10
_names = itertools.count()


def _writes() -> tuple[float, float]:
    """(transactions, photos) IndexPhotos has written so far in this process."""
    (family,) = INDEX_WRITE_PHOTOS.collect()
    samples = {s.name: s.value for s in family.samples}
    return samples.get(f"{family.name}_count", 0.0), samples.get(f"{family.name}_sum", 0.0)


async def _index(faces: np.ndarray, pg_server: Any) -> tuple[list[search_pb2.IndexPhotosResponse], tuple[int, int]]:
    """Indexes PHOTOS one-face photos whose embeddings are `faces`; (responses, (photos, faces) stored)."""
    embedder = await start(ReplayEmbedder(faces, np.arange(PHOTOS), hold=PHOTOS))
    url = search_database_url(pg_server, f"groups_{os.getpid()}_{next(_names)}")
    try:
        async with search_running(url, f"127.0.0.1:{embedder.port}") as running:
            async with grpc.aio.insecure_channel(running.target) as channel:
                stub = search_pb2_grpc.FaceSearchServiceStub(channel)
                await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="g"))

                async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                    for i in range(PHOTOS):
                        image = i.to_bytes(8, "little")  # the replay embedder's photo index
                        yield search_pb2.IndexPhotosRequest(collection="g", external_id=f"p{i}", image=image)

                responses = [r async for r in stub.IndexPhotos(requests(), timeout=60)]
                info = (await stub.GetCollection(search_pb2.GetCollectionRequest(name="g"))).collection
    finally:
        await embedder.stop(0)
    return responses, (info.photo_count, info.face_count)


def _unit_faces() -> np.ndarray:
    faces = np.random.default_rng(0).standard_normal((PHOTOS, 512)).astype(np.float32)
    return faces / np.linalg.norm(faces, axis=1, keepdims=True)


async def test_photos_ready_together_share_one_transaction(pg_server: Any) -> None:
    before = _writes()
    responses, stored = await _index(_unit_faces(), pg_server)
    after = _writes()
    assert sorted(r.external_id for r in responses) == sorted(f"p{i}" for i in range(PHOTOS))
    assert all(r.status.code == 0 and r.outcome == search_pb2.INDEX_OUTCOME_CREATED for r in responses)
    assert all(r.faces_indexed == 1 for r in responses)
    assert stored == (PHOTOS, PHOTOS)
    transactions, photos = after[0] - before[0], after[1] - before[1]
    assert photos == PHOTOS
    assert transactions <= 2, f"{PHOTOS} photos ready together took {transactions:.0f} transactions"


async def test_one_bad_photo_in_a_group_fails_alone(pg_server: Any) -> None:
    faces = _unit_faces()
    faces[3] = np.nan  # PostgreSQL refuses it: the group's transaction fails
    responses, stored = await _index(faces, pg_server)
    by_id = {r.external_id: r for r in responses}
    assert len(responses) == PHOTOS and len(by_id) == PHOTOS  # one response per photo
    assert by_id["p3"].status.code != 0 and by_id["p3"].faces_indexed == 0
    others = [by_id[f"p{i}"] for i in range(PHOTOS) if i != 3]
    assert all(r.status.code == 0 and r.faces_indexed == 1 for r in others), [r.status for r in others]
    assert stored == (PHOTOS - 1, PHOTOS - 1)  # the bad photo left no row behind
