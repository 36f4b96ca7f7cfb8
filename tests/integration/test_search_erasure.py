"""Erasure: deleting a collection while its HNSW index is being built leaves no index behind;
deleting a photo erases its faces (and not a person's template, which came from enrolment images);
and what PostgreSQL keeps physically until the operator's VACUUM FULL, read from its data files."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import numpy as np
import pgserver
import pytest
from pgvector.asyncpg import register_vector

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.faces import make_photo, selfie, spaced_faces
from tests.fixtures.search import search_running

_names = itertools.count()
MD = (("x-tenant-id", "erasure"),)


async def index(stub: search_pb2_grpc.FaceSearchServiceStub, collection: str, photos: dict[str, bytes]) -> list[Any]:
    async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
        for external_id, image in photos.items():
            yield search_pb2.IndexPhotosRequest(collection=collection, external_id=external_id, image=image)

    return [r async for r in stub.IndexPhotos(requests(), metadata=MD)]


async def hnsw_indexes(conn: asyncpg.Connection) -> dict[str, bool]:
    """Every collection HNSW index on faces -> whether it is valid (built)."""
    rows = await conn.fetch(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'faces'::regclass AND c.relname LIKE 'faces_hnsw_%'"
    )
    return {row["relname"]: row["indisvalid"] for row in rows}


async def test_delete_collection_during_its_hnsw_build_leaves_no_index(database_url: str, embedder_server: Any) -> None:
    """The issue's reproduction: 80 photos past SEARCH_THRESHOLDS__HNSW_MIN_FACES=200, deleted right
    after the stream ends. An open snapshot holds the build (CREATE INDEX CONCURRENTLY waits for
    it), so the delete lands mid-build every time instead of by luck."""
    photos = {
        f"p{i}": make_photo(spaced_faces([i * 3, i * 3 + 1, i * 3 + 2], size=(640, 480), radius_range=(40, 60), seed=i))
        for i in range(80)
    }
    async with search_running(database_url, embedder_server.target, thresholds={"hnsw_min_faces": 200}) as search:
        observer = await asyncpg.connect(database_url)
        holder = await asyncpg.connect(database_url)
        try:
            async with grpc.aio.insecure_channel(search.target) as channel:
                stub = search_pb2_grpc.FaceSearchServiceStub(channel)
                await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="big"), metadata=MD)
                holding = holder.transaction(isolation="repeatable_read")
                await holding.start()
                await holder.fetchval("SELECT 1")  # takes the snapshot the build must wait for
                results = await index(stub, "big", photos)
                assert sum(r.faces_indexed for r in results) > 200
                # The build has begun (its index exists, not yet valid) ...
                deadline = time.monotonic() + 60
                while not await hnsw_indexes(observer):
                    assert time.monotonic() < deadline, "the HNSW build never started"
                    await asyncio.sleep(0.1)
                assert list((await hnsw_indexes(observer)).values()) == [False]
                # ... and the collection is deleted under it.
                deleted = await stub.DeleteCollection(search_pb2.DeleteCollectionRequest(name="big"), metadata=MD)
                assert deleted.photos_deleted == 80
            await holding.rollback()
            # The build finishes, finds its collection gone and drops the index it made.
            for _ in range(600):  # up to 2 minutes
                if not (remaining := await hnsw_indexes(observer)):
                    break
                await asyncio.sleep(0.2)
            assert remaining == {}, f"index of a deleted collection survived: {remaining}"
            assert await observer.fetchval("SELECT count(*) FROM faces") == 0
        finally:
            await holder.close()
            await observer.close()


async def test_orphan_index_is_dropped_at_start_up(database_url: str, embedder_server: Any) -> None:
    """An index whose build was killed with its process, after the collection was deleted."""
    async with search_running(database_url, embedder_server.target):
        pass  # migrated
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE INDEX faces_hnsw_987654 ON faces USING hnsw (embedding vector_cosine_ops) "
            "WHERE collection_id = 987654 AND photo_id IS NOT NULL"
        )
        async with search_running(database_url, embedder_server.target):
            for _ in range(300):  # up to 30 s
                if not await hnsw_indexes(conn):
                    break
                await asyncio.sleep(0.1)
            assert await hnsw_indexes(conn) == {}
    finally:
        await conn.close()


async def test_deleting_a_photo_erases_its_faces_not_an_enrolled_template(
    database_url: str, embedder_server: Any
) -> None:
    """The documented decision: a template comes from the EnrollPerson images, not from an indexed
    photo, so DeletePhoto leaves it; DeletePerson erases it."""
    async with search_running(database_url, embedder_server.target) as search:
        async with grpc.aio.insecure_channel(search.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="people"), metadata=MD)
            await index(stub, "people", {"party": selfie(41)})
            await stub.EnrollPerson(
                search_pb2.EnrollPersonRequest(collection="people", external_id="ann", images=[selfie(41)]),
                metadata=MD,
            )
            query = search_pb2.SearchRequest(collection="people", image=search_pb2.ImageQuery(image=selfie(41)))
            face_id = (await stub.Search(query, metadata=MD)).matches[0].face_id

            deleted = await stub.DeletePhoto(
                search_pb2.DeletePhotoRequest(collection="people", external_id="party"), metadata=MD
            )
            assert deleted.faces_deleted == 1
            assert [m.photo_id for m in (await stub.Search(query, metadata=MD)).matches] == []
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await stub.Search(search_pb2.SearchRequest(collection="people", face_id=face_id), metadata=MD)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            identify = search_pb2.IdentifyPersonRequest(
                collection="people", face=search_pb2.FaceQuery(image=selfie(41))
            )
            assert [c.person.external_id for c in (await stub.IdentifyPerson(identify, metadata=MD)).candidates] == [
                "ann"
            ]

            removed = await stub.DeletePerson(
                search_pb2.DeletePersonRequest(collection="people", external_id="ann"), metadata=MD
            )
            assert removed.faces_deleted == 1
            assert list((await stub.IdentifyPerson(identify, metadata=MD)).candidates) == []
            collection = await stub.GetCollection(search_pb2.GetCollectionRequest(name="people"), metadata=MD)
            assert (collection.collection.face_count, collection.collection.person_count) == (0, 0)


@pytest.fixture
def private_database_url() -> Iterator[str]:
    """A PostgreSQL of this test's own, outside pytest's numbered temp directories: the test forces
    CHECKPOINTs, which PANIC a server whose data directory a concurrent pytest session's temp-dir
    rotation removed (several sessions share /tmp/pytest-of-<user> on one machine)."""
    data_dir = Path(tempfile.mkdtemp(prefix="facesearch-erasure-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_deleted_embedding_stays_in_the_data_file_until_vacuum_full(
    private_database_url: str, embedder_server: Any
) -> None:
    """What deploy/README.md tells operators: a DELETE leaves the row's bytes in the table file (a
    dead tuple) until VACUUM FULL rewrites the table. Read from the data files themselves."""
    database_url = private_database_url
    async with search_running(database_url, embedder_server.target) as search:
        conn = await asyncpg.connect(database_url)
        await register_vector(conn)
        try:
            async with grpc.aio.insecure_channel(search.target) as channel:
                stub = search_pb2_grpc.FaceSearchServiceStub(channel)
                await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="gone"), metadata=MD)
                await index(stub, "gone", {"me": selfie(51)})
                embedding = await conn.fetchval("SELECT embedding FROM faces")
                # pgvector stores float4 in the machine's (little-endian) order.
                needle = np.asarray(embedding.to_numpy(), dtype="<f4").tobytes()[:256]
                data_dir = Path(await conn.fetchval("SELECT current_setting('data_directory')"))

                async def table_bytes() -> bytes:
                    await conn.execute("CHECKPOINT")
                    relative = await conn.fetchval("SELECT pg_relation_filepath('faces')")
                    return await asyncio.to_thread((data_dir / relative).read_bytes)

                assert needle in await table_bytes()
                await stub.DeletePhoto(search_pb2.DeletePhotoRequest(collection="gone", external_id="me"), metadata=MD)
                assert await conn.fetchval("SELECT count(*) FROM faces") == 0
                assert needle in await table_bytes(), "a deleted row's bytes stay until the table is rewritten"
                await conn.execute("VACUUM (FULL) faces")
                assert needle not in await table_bytes()
        finally:
            await conn.close()
