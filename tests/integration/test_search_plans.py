"""Query plans on a real PostgreSQL: approximate searches really go through the collection's HNSW
index (its idx_scan grows during searches made over gRPC), exact queries stay exact while HNSW
indexes exist (PostgreSQL 18 would otherwise serve them from the index), and face rows stay out
of TOAST."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.config import DatabaseSettings
from search_service.db import Database, open_database
from search_service.domain import Box, DetectedFace, FaceQuality, PhotoWrite, SearchFilter
from search_service.repository import EXACT_PLAN, Repository, pin_plan
from search_service.sql import hnsw_index_name
from tests.faces import FaceSpec, make_photo, selfie
from tests.fixtures.search import search_database_url, search_running
from tests.integration.test_search_service import index


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def identity_faces(rng: np.random.Generator, identities: int, per: int, noise: float = 0.9) -> np.ndarray:
    """Faces clustered by identity, as real embeddings are: the hard case for HNSW recall."""
    faces = unit_rows(rng, identities).repeat(per, axis=0) + noise * unit_rows(rng, identities * per)
    return faces / np.linalg.norm(faces, axis=1, keepdims=True)


def detected(vector: np.ndarray, landmarks: tuple[float, ...] = ()) -> DetectedFace:
    return DetectedFace(Box(1, 2, 30, 40), 0.9, FaceQuality(score=0.9), vector, landmarks)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url, DatabaseSettings(pool_min_size=1, pool_max_size=4))
    yield db
    await db.close()


async def index_scans(pool, index_name: str) -> int:
    return await pool.fetchval("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1", index_name) or 0


async def test_hnsw_searches_over_grpc_use_the_index(pg_server, embedder_server) -> None:
    url = search_database_url(pg_server, f"plans_{time.monotonic_ns()}")
    overrides = {"thresholds": {"hnsw_min_faces": 12}, "descriptor_cache": {"max_bytes": 0}}
    async with search_running(url, embedder_server.target, **overrides) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="big"))
            photos = [make_photo([FaceSpec(320, 240, 90, i)], size=(640, 480), seed=i) for i in range(16)]
            await index(
                stub,
                [
                    search_pb2.IndexPhotosRequest(collection="big", external_id=f"p{i}", image=p)
                    for i, p in enumerate(photos)
                ],
            )
            pool = running.app.database.pool
            deadline = time.monotonic() + 60
            while not await pool.fetchval("SELECT hnsw_indexed FROM collections WHERE name = 'big'"):
                assert time.monotonic() < deadline, "the collection's HNSW index was never built"
                await asyncio.sleep(0.2)
            name = hnsw_index_name(await pool.fetchval("SELECT id FROM collections WHERE name = 'big'"))
            before = await index_scans(pool, name)
            for identity in (3, 7, 11):
                reply = await stub.Search(
                    search_pb2.SearchRequest(collection="big", image=search_pb2.ImageQuery(image=selfie(identity)))
                )
                assert reply.matches[0].photo_id == f"p{identity}"
            # Statistics reach pg_stat_user_indexes when the backends flush them (within ~10 s).
            deadline = time.monotonic() + 30
            while await index_scans(pool, name) < before + 3:
                assert time.monotonic() < deadline, "searches did not scan the HNSW index"
                await asyncio.sleep(0.5)


async def test_exact_queries_stay_exact_with_hnsw_indexes_present(database: Database) -> None:
    rng = np.random.default_rng(3)
    repo = Repository(database)
    collection = await repo.create_collection("t", "both", "")
    faces = identity_faces(rng, 300, 5)
    await repo.store_photos(
        collection.id,
        [
            PhotoWrite(f"p{i}", hashlib.sha256(str(i).encode()).digest(), {}, None, [detected(faces[i])])
            for i in range(len(faces))
        ],
    )
    templates = identity_faces(rng, 400, 1)
    for i, template in enumerate(templates):
        await repo.enroll_person(collection.id, f"person{i}", None, detected(template))
    # Both kinds of index a deployment may hold: the collection's and a templates' index, built
    # small (m 4, ef_construction 8) so that any query they answered would be visibly approximate.
    assert await repo.build_hnsw_index(collection.id, m=4, ef_construction=8)
    async with database.pool.acquire() as conn:
        await conn.execute(
            "CREATE INDEX faces_templates_hnsw ON faces USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 4, ef_construction = 8) WHERE person_id IS NOT NULL"
        )
        await conn.execute("ANALYZE faces")
        # The trap is real: left to itself the planner answers identify's SQL from that index.
        identify_sql = (
            "SELECT f.person_id FROM faces f WHERE f.collection_id = $1 AND f.person_id IS NOT NULL "
            "ORDER BY f.embedding <=> $2 LIMIT 1"
        )
        free = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + identify_sql, collection.id, templates[0]))
        async with conn.transaction():
            await pin_plan(conn, EXACT_PLAN)
            pinned = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + identify_sql, collection.id, templates[0]))
    assert "faces_templates_hnsw" in free, free
    assert "hnsw" not in pinned, pinned

    wrong_faces = wrong_persons = 0
    for q in range(60):
        query = identity_faces(rng, 1, 1)[0] * 0.3 + faces[q * 20] * 0.7
        query /= np.linalg.norm(query)
        rows = await repo.exact_candidates(collection.id, [query], SearchFilter(), None, 10)
        expected = [f"p{i}" for i in np.argsort(-(faces @ query), kind="stable")[:10]]
        wrong_faces += [r["external_id"] for r in rows] != expected
        person_query = templates[q] * 0.6 + identity_faces(rng, 1, 1)[0] * 0.4
        person_query /= np.linalg.norm(person_query)
        matches = await repo.identify(collection.id, person_query, 2.0, 3)
        best = [f"person{i}" for i in np.argsort(-(templates @ person_query), kind="stable")[:3]]
        wrong_persons += [m.person.external_id for m in matches] != best
    assert (wrong_faces, wrong_persons) == (0, 0)


async def test_face_rows_stay_out_of_toast(database: Database) -> None:
    rng = np.random.default_rng(4)
    repo = Repository(database)
    collection = await repo.create_collection("t", "toast", "")
    landmarks = tuple(float(x) for x in range(10))
    await repo.store_photos(
        collection.id,
        [
            PhotoWrite(f"p{i}", bytes([i]) * 32, {}, None, [detected(v, landmarks) for v in unit_rows(rng, 3)])
            for i in range(50)
        ],
    )
    toast_bytes = await database.pool.fetchval(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'faces'"
    )
    assert toast_bytes == 0
