"""Large-collection search through the collection's partial HNSW index (real PostgreSQL +
pgvector): the index is used, recall@10 holds, and a selective filter never returns fewer than
top_k photos when that many match (pgvector < 0.8 has no iterative scan: the exact fallback)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import REGISTRY

from search_service.config import DatabaseSettings, SearchSettings
from search_service.db import Database, open_database
from search_service.domain import Box, DetectedFace, FaceQuality, PhotoWrite, QueryKind, SearchFilter, SearchQuery
from search_service.embedder_client import EmbedderClient
from search_service.repository import Repository
from search_service.search import SearchEngine

PHOTOS = 1500


def exact_searches() -> float:
    return REGISTRY.get_sample_value("facesearch_search_db_query_seconds_count", {"operation": "search_exact"}) or 0.0


def ann_searches() -> float:
    return REGISTRY.get_sample_value("facesearch_search_db_query_seconds_count", {"operation": "search_ann"}) or 0.0


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url, DatabaseSettings(pool_min_size=1, pool_max_size=4))
    yield db
    await db.close()


async def test_hnsw_collection_search(database: Database) -> None:
    rng = np.random.default_rng(0)
    repo = Repository(database)
    # A filter's photos are searched exactly up to filtered_exact_max_photos; 5 sends the rare
    # filter below (15 photos) through the index, the path under test here.
    settings = SearchSettings(thresholds={"hnsw_min_faces": 1000, "filtered_exact_max_photos": 5})
    embedder = EmbedderClient("127.0.0.1:1", settings.embedder, settings.max_message_bytes)  # never called here
    engine = SearchEngine(repo, embedder, settings, 512)
    collection = await repo.create_collection("t", "registry", "")
    # Identity-structured: 300 identities x 5 photos, each face = identity centre + noise.
    centres = unit_rows(rng, PHOTOS // 5)
    faces = centres.repeat(5, axis=0) + 0.9 * unit_rows(rng, PHOTOS)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    writes = [
        PhotoWrite(
            f"p{i}",
            hashlib.sha256(str(i).encode()).digest(),
            {"rare": True} if i % 100 == 0 else {},
            None,
            [DetectedFace(Box(0, 0, 10, 10), 0.9, FaceQuality(), faces[i])],
        )
        for i in range(PHOTOS)
    ]
    await repo.store_photos(collection.id, writes)
    # Two replicas deciding to build at once: one builds, the other sees the lock and skips.
    built = await asyncio.gather(*(repo.build_hnsw_index(collection.id, m=16, ef_construction=64) for _ in range(2)))
    assert sorted(built) == [False, True]
    assert (await repo.get_collection("t", "registry")).hnsw_indexed

    async with database.pool.acquire() as conn, conn.transaction():
        from search_service import sql
        from search_service.repository import ann_plan, pin_plan

        await pin_plan(conn, ann_plan(40, database.pgvector.has_iterative_scan))

        query_sql, args = sql.ann_candidates(collection.id, faces[0], SearchFilter(), 40)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query_sql, *args))
    assert f"faces_hnsw_{collection.id}" in plan, plan

    exact_before = exact_searches()
    recalls = []
    for q in range(20):
        query = centres[q * 7] + 0.9 * unit_rows(rng, 1)[0]
        query /= np.linalg.norm(query)
        exact = {f"p{i}" for i in np.argsort(-(faces @ query))[:10]}
        result = await engine.search(
            "t", SearchQuery(collection="registry", kind=QueryKind.EMBEDDING, embedding=tuple(query), top_k=10)
        )
        assert len(result.matches) == 10
        recalls.append(len(exact & {m.photo_id for m in result.matches}) / 10)
    assert np.mean(recalls) >= 0.95, recalls
    assert exact_searches() == exact_before  # every one of them was answered by the index

    # Only 15 photos carry the rare tag: the index alone would return none or few of them.
    rare = SearchFilter(metadata={"rare": True})
    result = await engine.search(
        "t",
        SearchQuery(collection="registry", kind=QueryKind.EMBEDDING, embedding=tuple(faces[1]), top_k=10, filter=rare),
    )
    rare_ids = [i for i in range(PHOTOS) if i % 100 == 0]
    expected = [f"p{i}" for i in sorted(rare_ids, key=lambda i: -float(faces[i] @ faces[1]))]
    assert [m.photo_id for m in result.matches] == expected[:10]  # 10 of the 15, never fewer
    page2 = await engine.search(
        "t",
        SearchQuery(
            collection="registry",
            kind=QueryKind.EMBEDDING,
            embedding=tuple(faces[1]),
            top_k=10,
            filter=rare,
            page_token=result.next_page_token,
        ),
    )
    assert [m.photo_id for m in page2.matches] == expected[10:]
    # With the default bound the same filter goes to the exact scan of its 15 photos, not the index.
    default_engine = SearchEngine(repo, embedder, SearchSettings(thresholds={"hnsw_min_faces": 1000}), 512)
    ann_before = ann_searches()
    result = await default_engine.search(
        "t",
        SearchQuery(collection="registry", kind=QueryKind.EMBEDDING, embedding=tuple(faces[1]), top_k=10, filter=rare),
    )
    assert [m.photo_id for m in result.matches] == expected[:10]
    assert ann_searches() == ann_before

    # Deep pages: the over-fetched candidates run out after the cursor, so the exact scan takes over;
    # every page is full, no photo comes twice.
    before = exact_searches()
    seen: list[str] = []
    token = ""
    for _ in range(6):
        page = await engine.search(
            "t",
            SearchQuery(
                collection="registry", kind=QueryKind.EMBEDDING, embedding=tuple(faces[2]), top_k=10, page_token=token
            ),
        )
        assert len(page.matches) == 10
        seen += [m.photo_id for m in page.matches]
        token = page.next_page_token
    assert len(set(seen)) == 60
    exact = [f"p{i}" for i in np.argsort(-(faces @ faces[2]))[:60]]
    assert len(set(seen) & set(exact)) >= 57
    assert exact_searches() > before
    await embedder.close()
