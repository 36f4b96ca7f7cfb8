"""The repository against a real PostgreSQL + pgvector (pgserver): migrations, the bulk write path,
idempotency, exact grouped search, cascading deletes and the query plan of the exact scan."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest

from facesearch.errors import AlreadyExists, NotFound
from search_service.config import DatabaseSettings
from search_service.db import Database, open_database
from search_service.domain import Box, DetectedFace, FaceQuality, IndexOutcome, PhotoWrite, SearchFilter
from search_service.migrations import MIGRATIONS, migrate
from search_service.repository import Repository
from search_service.sql import Cursor

DIM = 512


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def face(vector: np.ndarray, score: float = 0.9) -> DetectedFace:
    return DetectedFace(
        box=Box(1, 2, 30, 40), det_score=0.9, quality=FaceQuality(score=score), embedding=vector, landmarks=()
    )


def photo(external_id: str, vectors: list[np.ndarray], metadata: dict | None = None, salt: str = "") -> PhotoWrite:
    digest = hashlib.sha256((external_id + salt).encode()).digest()
    return PhotoWrite(external_id, digest, metadata or {}, None, [face(v) for v in vectors])


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url, DatabaseSettings(pool_min_size=1, pool_max_size=4))
    yield db
    await db.close()


@pytest.fixture
async def repo(database: Database) -> Repository:
    return Repository(database)


async def test_migrations_are_recorded_and_idempotent(database: Database, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn) == []  # already applied by open_database
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in MIGRATIONS]
        storage = await conn.fetchval(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'faces'::regclass AND attname = 'embedding'"
        )
        assert storage == b"p"  # PLAIN: vectors stay inline, out of TOAST
        keys = await conn.fetch(
            """
            SELECT conrelid::regclass::text AS tbl, pg_get_constraintdef(oid) AS def FROM pg_constraint
            WHERE contype IN ('p', 'u') AND conrelid::regclass::text IN ('photos', 'faces', 'persons')
            """
        )
        assert len(keys) == 5
        assert all(k["def"].split("(")[1].startswith("collection_id") for k in keys), keys
    finally:
        await conn.close()
    assert database.pgvector.parts >= (0, 5)


async def test_concurrent_migrations_do_not_race(database_url: str) -> None:
    import asyncio

    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(a) for a in applied) == [0, 0, len(MIGRATIONS)]


async def test_collections_are_per_tenant(repo: Repository) -> None:
    created = await repo.create_collection("t1", "event", "Event")
    with pytest.raises(AlreadyExists):
        await repo.create_collection("t1", "event", "")
    await repo.create_collection("t2", "event", "")  # same name, other tenant
    assert (await repo.get_collection("t1", "event")).id == created.id
    with pytest.raises(NotFound):
        await repo.get_collection("t3", "event")
    names = [c.name for c in await repo.list_collections("t1", "", 10)]
    assert names == ["event"]


async def test_store_photos_is_idempotent_and_replaces_changed_faces(repo: Repository) -> None:
    rng = np.random.default_rng(1)
    col = await repo.create_collection("t", "c", "")
    first = [photo("a.jpg", [unit(rng), unit(rng)]), photo("b.jpg", [unit(rng)])]
    assert await repo.store_photos(col.id, first) == {"a.jpg": IndexOutcome.CREATED, "b.jpg": IndexOutcome.CREATED}
    assert (await repo.get_collection("t", "c", with_counts=True)).face_count == 3

    again = await repo.store_photos(col.id, [photo("a.jpg", [unit(rng)], metadata={"k": 1})])
    assert again == {"a.jpg": IndexOutcome.UNCHANGED}
    counted = await repo.get_collection("t", "c", with_counts=True)
    assert (counted.photo_count, counted.face_count) == (2, 3)

    changed = await repo.store_photos(col.id, [photo("a.jpg", [unit(rng)], salt="v2")])
    assert changed == {"a.jpg": IndexOutcome.UPDATED}
    counted = await repo.get_collection("t", "c", with_counts=True)
    assert (counted.photo_count, counted.face_count) == (2, 2)


async def test_store_photos_is_all_or_nothing(repo: Repository) -> None:
    rng = np.random.default_rng(2)
    col = await repo.create_collection("t", "c", "")
    bad = photo("bad.jpg", [rng.standard_normal(DIM - 1).astype(np.float32)])  # wrong width: COPY fails
    with pytest.raises(asyncpg.PostgresError):
        await repo.store_photos(col.id, [photo("good.jpg", [unit(rng)]), bad])
    counted = await repo.get_collection("t", "c", with_counts=True)
    assert (counted.photo_count, counted.face_count) == (0, 0)


async def test_exact_search_groups_by_photo_and_pages(repo: Repository) -> None:
    rng = np.random.default_rng(3)
    col = await repo.create_collection("t", "c", "")
    vectors = [unit(rng) for _ in range(60)]
    # 20 photos with 3 faces each.
    photos = [photo(f"p{i:02d}", vectors[3 * i : 3 * i + 3], metadata={"i": i, "even": i % 2 == 0}) for i in range(20)]
    await repo.store_photos(col.id, photos)
    query = unit(rng)
    sims = np.array(vectors) @ query
    best_per_photo = sims.reshape(20, 3).max(axis=1)
    expected = [f"p{i:02d}" for i in np.argsort(-best_per_photo)]

    page1 = await repo.search_exact(col.id, [query], SearchFilter(), None, None, 7)
    assert [m.photo_id for m in page1] == expected[:7]
    assert np.allclose([m.similarity for m in page1], np.sort(best_per_photo)[::-1][:7], atol=1e-5)
    last = page1[-1]
    page2 = await repo.search_exact(col.id, [query], SearchFilter(), None, Cursor(last.distance, last.photo_key), 100)
    assert [m.photo_id for m in page2] == expected[7:]

    evens = await repo.search_exact(col.id, [query], SearchFilter(metadata={"even": True}), None, None, 100)
    assert [m.photo_id for m in evens] == [p for p in expected if int(p[1:]) % 2 == 0]
    some = await repo.search_exact(col.id, [query], SearchFilter(photo_ids=("p03", "p05")), None, None, 100)
    assert sorted(m.photo_id for m in some) == ["p03", "p05"]
    threshold = float(np.sort(best_per_photo)[::-1][4])
    top = await repo.search_exact(col.id, [query], SearchFilter(), 1.0 - threshold + 1e-6, None, 100)
    assert [m.photo_id for m in top] == expected[:5]


async def test_deletes_leave_no_embedding(repo: Repository, database: Database) -> None:
    rng = np.random.default_rng(4)
    col = await repo.create_collection("t", "c", "")
    await repo.store_photos(col.id, [photo("a", [unit(rng), unit(rng)]), photo("b", [unit(rng)])])
    await repo.enroll_person(col.id, "alice", {"x": 1}, face(unit(rng)))
    assert await repo.delete_photo(col.id, "a") == 2
    with pytest.raises(NotFound):
        await repo.delete_photo(col.id, "a")
    assert await repo.delete_person(col.id, "alice") == 1
    assert await database.pool.fetchval("SELECT count(*) FROM faces WHERE collection_id = $1", col.id) == 1
    assert await repo.delete_collection("t", "c") == (1, 1, 0)
    for table in ("faces", "photos", "persons", "collections"):
        assert await database.pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_person_template_keeps_the_best_face(repo: Repository) -> None:
    rng = np.random.default_rng(5)
    col = await repo.create_collection("t", "reg", "")
    v1, v2 = unit(rng), unit(rng)
    person, replaced, created = await repo.enroll_person(col.id, "bob", None, face(v1, score=0.5))
    assert (replaced, created, person.template_quality) == (True, True, 0.5)
    _, replaced, created = await repo.enroll_person(col.id, "bob", None, face(v2, score=0.4))
    assert (replaced, created) == (False, False)
    _, sim = await repo.verify(col.id, "bob", v1)
    assert sim == pytest.approx(1.0, abs=1e-5)
    _, replaced, _ = await repo.enroll_person(col.id, "bob", None, face(v2, score=0.8))
    assert replaced
    _, sim = await repo.verify(col.id, "bob", v2)
    assert sim == pytest.approx(1.0, abs=1e-5)
    matches = await repo.identify(col.id, v2, 0.5, 5)
    assert [m.person.external_id for m in matches] == ["bob"]
    assert await repo.identify(col.id, v1, 0.5, 5) == []


async def test_exact_scan_uses_the_collection_index(repo: Repository, database: Database) -> None:
    rng = np.random.default_rng(6)
    cols = [await repo.create_collection("t", f"c{i}", "") for i in range(4)]
    for col in cols:
        await repo.store_photos(col.id, [photo(f"p{i}", [unit(rng)]) for i in range(500)])
    async with database.pool.acquire() as conn:
        await conn.execute("ANALYZE faces; ANALYZE photos")
        from search_service import sql

        query, args = sql.exact_search(cols[0].id, [unit(rng)], SearchFilter(), None, None, 10)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query, *args))
    # The collection's rows are found through an index on collection_id, not a scan of the table.
    assert "Seq Scan on faces" not in plan, plan
    assert "faces_pkey" in plan or "faces_photo_idx" in plan, plan


async def test_list_collections_pages_with_counts(repo: Repository) -> None:
    from search_service.catalog import Catalog

    rng = np.random.default_rng(7)
    for i in range(5):
        col = await repo.create_collection("pager", f"c{i}", "")
        await repo.store_photos(col.id, [photo(f"p{j}", [unit(rng)]) for j in range(i)])
    catalog = Catalog(repo)
    seen, token = [], ""
    while True:
        page, token = await catalog.list("pager", 2, token)
        seen += [(c.name, c.photo_count, c.face_count) for c in page]
        if not token:
            break
    assert seen == [(f"c{i}", i, i) for i in range(5)]
