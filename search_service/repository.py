"""All SQL of the search service, over the asyncpg pool: collections, the bulk photo+faces write
path (one transaction, faces by binary COPY), search queries, persons. Every value is a
parameter; vectors go through pgvector's binary codec."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import asyncpg
import numpy as np

from facesearch.errors import AlreadyExists, DeadlineExceeded, NotFound, Unavailable
from search_service import sql
from search_service.db import Database, PgvectorVersion
from search_service.domain import (
    Box,
    Collection,
    DetectedFace,
    IndexOutcome,
    JsonObject,
    Person,
    PersonMatch,
    PhotoMatch,
    PhotoWrite,
    SearchFilter,
)
from search_service.metrics import timed_query

# Building a large collection's HNSW index takes minutes, far past the statement timeout.
INDEX_BUILD_TIMEOUT_S = 6 * 3600.0
# First key of the (int, int) advisory lock a replica holds while building a collection's index.
HNSW_BUILD_LOCK = 0x686E7377

FACE_COLUMNS = (
    "collection_id",
    "photo_id",
    "person_id",
    "box",
    "landmarks",
    "det_score",
    "blur_score",
    "face_size",
    "yaw",
    "pitch",
    "roll",
    "quality_score",
    "embedding",
)


def _face_record(collection_id: int, photo_id: int | None, person_id: int | None, face: DetectedFace) -> tuple:
    q = face.quality
    return (
        collection_id,
        photo_id,
        person_id,
        face.box.as_list(),
        list(face.landmarks) or None,
        face.det_score,
        q.blur_score,
        q.face_size,
        q.yaw,
        q.pitch,
        q.roll,
        q.score,
        np.asarray(face.embedding, dtype=np.float32),
    )


def _collection(row: asyncpg.Record) -> Collection:
    """A collection with its counters (kept by triggers in the write's own transaction)."""
    return Collection(
        id=row["id"],
        name=row["name"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        hnsw_indexed=row["hnsw_indexed"],
        photo_count=row["photo_count"],
        face_count=row["face_count"],
        person_count=row["person_count"],
        faces_version=row["faces_version"],
    )


def _person(row: asyncpg.Record) -> Person:
    return Person(
        id=row["id"],
        external_id=row["external_id"],
        metadata=json.loads(row["metadata"]),
        template_quality=float(row["template_quality"] or 0.0),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _store_thumbnails(
    conn: asyncpg.Connection, collection_id: int, photos: list[tuple[int, tuple[bytes | None, ...]]]
) -> None:
    """Writes the thumbnails of faces just copied in. COPY numbers a photo's faces in record order,
    so its faces by ascending id line up with its thumbnails."""
    wanted = {photo_id: thumbnails for photo_id, thumbnails in photos if any(thumbnails)}
    if not wanted:
        return
    rows = await conn.fetch(
        "SELECT photo_id, id FROM faces WHERE collection_id = $1 AND photo_id = ANY($2::bigint[]) "
        "ORDER BY photo_id, id",
        collection_id,
        list(wanted),
    )
    face_ids: dict[int, list[int]] = {}
    for row in rows:
        face_ids.setdefault(row["photo_id"], []).append(row["id"])
    records = [
        (collection_id, face_id, jpeg)
        for photo_id, thumbnails in wanted.items()
        for face_id, jpeg in zip(face_ids.get(photo_id, []), thumbnails, strict=False)
        if jpeg is not None
    ]
    if records:
        await conn.copy_records_to_table(
            "face_thumbnails", records=records, columns=("collection_id", "face_id", "jpeg")
        )


# Errors that mean "the database cannot be reached", not "the query is wrong".
_UNREACHABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now
)


# Every query that promises exact results runs with this plan setting in its own transaction: HNSW
# serves only plain index scans, so with those off no HNSW index can answer it (PostgreSQL 18 did
# pick a collection's or the templates' index for the "exact" SQL once one existed). B-tree indexes
# on collection_id still serve it through bitmap scans.
EXACT_PLAN: dict[str, str] = {"enable_indexscan": "off"}


def ann_plan(ef_search: int, iterative_scan: bool) -> dict[str, str]:
    """Plan settings of an approximate query: the HNSW index with an explicit candidate list.
    Custom plans let the planner see the collection id (so its partial index matches); the other
    access paths are disabled so small or freshly built indexes are not passed over."""
    plan = {
        "hnsw.ef_search": str(ef_search),
        "plan_cache_mode": "force_custom_plan",
        "enable_seqscan": "off",
        "enable_bitmapscan": "off",
        "enable_sort": "off",
    }
    if iterative_scan:
        # pgvector >= 0.8: keep scanning the graph until the filter lets `limit` rows through.
        plan["hnsw.iterative_scan"] = "strict_order"
    return plan


async def pin_plan(conn: asyncpg.Connection, plan: dict[str, str]) -> None:
    """Applies `plan` to the current transaction only (set_config(..., true) ends at COMMIT)."""
    names = list(plan)
    calls = ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(names)))
    args = [value for name in names for value in (name, plan[name])]
    await conn.execute(f"SELECT {calls}", *args)


async def fetch_pinned(pool: asyncpg.Pool, plan: dict[str, str], query: str, *args: object) -> list[asyncpg.Record]:
    """Runs `query` in a transaction of its own with `plan` pinned."""
    async with pool.acquire() as conn, conn.transaction():
        await pin_plan(conn, plan)
        return await conn.fetch(query, *args)


@contextmanager
def _database_call(operation: str) -> Iterator[None]:
    """Times one repository operation and turns an unreachable database into UNAVAILABLE (and a
    statement past its timeout into DEADLINE_EXCEEDED) instead of an internal error."""
    with timed_query(operation):
        try:
            yield
        except _UNREACHABLE as exc:
            raise Unavailable(f"the database is unavailable ({exc.__class__.__name__})") from exc
        except TimeoutError as exc:
            raise DeadlineExceeded("the database did not answer in time") from exc


class Repository:
    def __init__(self, database: Database) -> None:
        self._db = database
        self.pool = database.pool

    @property
    def pgvector(self) -> PgvectorVersion:
        return self._db.pgvector

    # --- collections -----------------------------------------------------------------------

    async def create_collection(self, tenant: str, name: str, display_name: str) -> Collection:
        with _database_call("create_collection"):
            try:
                row = await self.pool.fetchrow(
                    "INSERT INTO collections (tenant, name, display_name) VALUES ($1, $2, $3) RETURNING *",
                    tenant,
                    name,
                    display_name,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"collection {name!r} already exists") from None
        return _collection(row)

    async def get_collection(self, tenant: str, name: str, with_counts: bool = False) -> Collection:
        """The tenant's collection with its counters (`with_counts` is kept for callers: the
        counters come with the row); NOT_FOUND for a missing one or another tenant's."""
        with _database_call("get_collection"):
            row = await self.pool.fetchrow("SELECT * FROM collections WHERE tenant = $1 AND name = $2", tenant, name)
        if row is None:
            raise NotFound(f"collection {name!r} not found")
        return _collection(row)

    async def list_collections(self, tenant: str, after_name: str, limit: int) -> list[Collection]:
        with _database_call("list_collections"):
            rows = await self.pool.fetch(
                "SELECT * FROM collections WHERE tenant = $1 AND name > $2 ORDER BY name LIMIT $3",
                tenant,
                after_name,
                limit,
            )
        return [_collection(row) for row in rows]

    async def delete_collection(self, tenant: str, name: str) -> tuple[int, int, int]:
        """Deletes the collection and (by cascade) everything in it; returns (photos, faces, persons)."""
        with _database_call("delete_collection"):
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT * FROM collections WHERE tenant = $1 AND name = $2 FOR UPDATE", tenant, name
                    )
                    if row is None:
                        raise NotFound(f"collection {name!r} not found")
                    await conn.execute("DELETE FROM collections WHERE id = $1", row["id"])
                if row["hnsw_indexed"]:
                    # The partial index now covers no row; drop it so indexes don't pile up.
                    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {sql.hnsw_index_name(row['id'])}")
        return row["photo_count"], row["face_count"], row["person_count"]

    async def count_faces(self, collection_id: int) -> int:
        """Faces of the collection (photos' and templates'), from its counter."""
        with _database_call("count_faces"):
            return await self.pool.fetchval("SELECT face_count FROM collections WHERE id = $1", collection_id) or 0

    async def build_hnsw_index(self, collection_id: int, m: int, ef_construction: int) -> bool:
        """Builds the collection's partial HNSW index (without blocking writes), then flags the
        collection so searches use it. False when another replica is building it right now."""
        name = sql.hnsw_index_name(collection_id)
        with _database_call("build_hnsw_index"):
            async with self.pool.acquire() as conn:
                # One builder per collection across replicas; the lock goes with the session.
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", HNSW_BUILD_LOCK, collection_id):
                    return False
                try:
                    valid = await conn.fetchval(
                        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE c.relname = $1",
                        name,
                    )
                    if valid is False:
                        # An interrupted CONCURRENTLY build leaves an invalid index behind.
                        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", timeout=INDEX_BUILD_TIMEOUT_S)
                    ddl = sql.create_hnsw_index(collection_id, m, ef_construction)
                    await conn.execute(ddl, timeout=INDEX_BUILD_TIMEOUT_S)
                    # Fresh statistics, so the planner knows the collection is large and picks the index.
                    await conn.execute("ANALYZE faces", timeout=INDEX_BUILD_TIMEOUT_S)
                    flagged = await conn.execute(
                        "UPDATE collections SET hnsw_indexed = true WHERE id = $1", collection_id
                    )
                    if flagged == "UPDATE 0":
                        # Deleted during the build: its deleter saw no index to drop, and this one
                        # holds the deleted embeddings, so it goes now.
                        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", timeout=INDEX_BUILD_TIMEOUT_S)
                        return False
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1, $2)", HNSW_BUILD_LOCK, collection_id)
        return True

    async def drop_orphan_hnsw_indexes(self) -> list[str]:
        """Drops HNSW indexes whose collection is gone (a build killed mid-way, a drop that failed
        after its delete); a build still running elsewhere holds its lock and is left alone."""
        dropped: list[str] = []
        with _database_call("drop_orphan_hnsw_indexes"):
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    """
                    SELECT c.relname, substring(c.relname FROM '^faces_hnsw_([0-9]+)$')::bigint AS collection_id
                    FROM pg_index i
                    JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE i.indrelid = 'faces'::regclass AND c.relname ~ '^faces_hnsw_[0-9]+$'
                      AND NOT EXISTS (
                          SELECT 1 FROM collections WHERE id = substring(c.relname FROM '^faces_hnsw_([0-9]+)$')::bigint
                      )
                    """
                )
                for row in rows:
                    cid = row["collection_id"]
                    if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", HNSW_BUILD_LOCK, cid):
                        continue
                    try:
                        name = sql.hnsw_index_name(cid)
                        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", timeout=INDEX_BUILD_TIMEOUT_S)
                        dropped.append(name)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1, $2)", HNSW_BUILD_LOCK, cid)
        return dropped

    # --- photos --------------------------------------------------------------------------

    async def photo_hashes(self, collection_id: int, external_ids: Sequence[str]) -> dict[str, bytes]:
        """Content hashes of those of `external_ids` that are stored, in one query."""
        with _database_call("photo_hashes"):
            rows = await self.pool.fetch(
                "SELECT external_id, content_hash FROM photos "
                "WHERE collection_id = $1 AND external_id = ANY($2::text[])",
                collection_id,
                list(external_ids),
            )
        return {row["external_id"]: row["content_hash"] for row in rows}

    async def touch_photo(
        self, collection_id: int, external_id: str, metadata: JsonObject, taken_at: datetime | None
    ) -> bool:
        """Updates metadata and time of an unchanged photo; False when it is gone."""
        with _database_call("touch_photo"):
            status = await self.pool.execute(
                """
                UPDATE photos SET metadata = $3::jsonb, taken_at = COALESCE($4, taken_at), updated_at = now()
                WHERE collection_id = $1 AND external_id = $2
                """,
                collection_id,
                external_id,
                json.dumps(metadata),
                taken_at,
            )
        return status != "UPDATE 0"

    async def store_photos(self, collection_id: int, photos: Sequence[PhotoWrite]) -> dict[str, IndexOutcome]:
        """The bulk write path, in ONE transaction: upserts the photos, replaces the faces of new
        and changed ones (binary COPY), and only touches metadata of photos whose bytes did not
        change. Either every photo is stored or none is."""
        try:
            return await self._store_photos(collection_id, photos)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("the collection was deleted while indexing") from None

    async def _store_photos(self, collection_id: int, photos: Sequence[PhotoWrite]) -> dict[str, IndexOutcome]:
        latest = {photo.external_id: photo for photo in photos}  # the last of duplicates wins
        # Rows are locked in external id order, so two transactions over overlapping photos wait
        # for each other instead of deadlocking.
        latest = dict(sorted(latest.items()))
        outcomes: dict[str, IndexOutcome] = {}
        with _database_call("store_photos"):
            async with self.pool.acquire() as conn, conn.transaction():
                # Writers of the same external id take turns (a row lock cannot cover a row that
                # does not exist yet): the second of two concurrent streams sending identical
                # bytes then sees the first's row and answers UNCHANGED instead of rewriting it.
                await conn.execute(
                    """
                    SELECT pg_advisory_xact_lock(k) FROM (
                        SELECT DISTINCT hashtextextended($1::bigint::text || '/' || u, 0) AS k
                        FROM unnest($2::text[]) AS u ORDER BY k
                    ) AS keys
                    """,
                    collection_id,
                    list(latest),
                )
                rows = await conn.fetch(
                    """
                    SELECT p.external_id, p.content_hash, p.taken_at
                    FROM unnest($2::text[]) AS u(external_id)
                    JOIN photos p ON p.collection_id = $1 AND p.external_id = u.external_id
                    ORDER BY p.external_id
                    FOR UPDATE OF p
                    """,
                    collection_id,
                    list(latest),
                )
                existing = {row["external_id"]: row["content_hash"] for row in rows}
                # One rule for taken_time: sent, it is stored; left out, a stored photo keeps its
                # time (whether its bytes changed or not) and a new one gets now().
                stored_times = {row["external_id"]: row["taken_at"] for row in rows}
                unchanged = [p for p in latest.values() if existing.get(p.external_id) == p.content_hash]
                to_write = [p for p in latest.values() if existing.get(p.external_id) != p.content_hash]
                if unchanged:
                    await conn.execute(
                        """
                        UPDATE photos p SET metadata = u.metadata::jsonb,
                               taken_at = COALESCE(u.taken_at, p.taken_at), updated_at = now()
                        FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(external_id, metadata, taken_at)
                        WHERE p.collection_id = $1 AND p.external_id = u.external_id
                        """,
                        collection_id,
                        [p.external_id for p in unchanged],
                        [json.dumps(p.metadata) for p in unchanged],
                        [p.taken_at for p in unchanged],
                    )
                    outcomes.update(dict.fromkeys((p.external_id for p in unchanged), IndexOutcome.UNCHANGED))
                if not to_write:
                    return outcomes
                rows = await conn.fetch(
                    """
                    INSERT INTO photos (collection_id, external_id, content_hash, metadata, taken_at)
                    SELECT $1, u.external_id, u.content_hash, u.metadata::jsonb, COALESCE(u.taken_at, now())
                    FROM unnest($2::text[], $3::bytea[], $4::text[], $5::timestamptz[])
                         AS u(external_id, content_hash, metadata, taken_at)
                    ON CONFLICT (collection_id, external_id) DO UPDATE
                    SET content_hash = EXCLUDED.content_hash, metadata = EXCLUDED.metadata,
                        taken_at = EXCLUDED.taken_at, updated_at = now()
                    RETURNING id, external_id, (xmax = 0) AS inserted
                    """,
                    collection_id,
                    [p.external_id for p in to_write],
                    [p.content_hash for p in to_write],
                    [json.dumps(p.metadata) for p in to_write],
                    [p.taken_at or stored_times.get(p.external_id) for p in to_write],
                )
                ids = {row["external_id"]: row["id"] for row in rows}
                replaced = [row["id"] for row in rows if not row["inserted"]]
                if replaced:
                    await conn.execute(
                        "DELETE FROM faces WHERE collection_id = $1 AND photo_id = ANY($2::bigint[])",
                        collection_id,
                        replaced,
                    )
                records = [
                    _face_record(collection_id, ids[p.external_id], None, face) for p in to_write for face in p.faces
                ]
                if records:
                    await conn.copy_records_to_table("faces", records=records, columns=FACE_COLUMNS)
                await _store_thumbnails(conn, collection_id, [(ids[p.external_id], p.thumbnails) for p in to_write])
                for row in rows:
                    outcomes[row["external_id"]] = IndexOutcome.CREATED if row["inserted"] else IndexOutcome.UPDATED
        return outcomes

    async def delete_photo(self, collection_id: int, external_id: str) -> int:
        """Deletes a photo and (by cascade) its faces; returns the faces deleted."""
        with _database_call("delete_photo"):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    """
                    SELECT p.id, (SELECT count(*) FROM faces f WHERE f.collection_id = p.collection_id
                                  AND f.photo_id = p.id) AS faces
                    FROM photos p WHERE p.collection_id = $1 AND p.external_id = $2 FOR UPDATE
                    """,
                    collection_id,
                    external_id,
                )
                if row is None:
                    raise NotFound(f"photo {external_id!r} not found")
                await conn.execute("DELETE FROM photos WHERE collection_id = $1 AND id = $2", collection_id, row["id"])
        return row["faces"]

    async def face_thumbnails(self, collection_id: int, face_ids: list[int]) -> dict[int, bytes]:
        """Stored thumbnails of these faces, by face id (faces without one are left out)."""
        if not face_ids:
            return {}
        with _database_call("face_thumbnails"):
            rows = await self.pool.fetch(
                "SELECT face_id, jpeg FROM face_thumbnails WHERE collection_id = $1 AND face_id = ANY($2::bigint[])",
                collection_id,
                face_ids,
            )
        return {row["face_id"]: row["jpeg"] for row in rows}

    # --- search --------------------------------------------------------------------------

    async def search_exact(
        self,
        collection_id: int,
        vectors: list[np.ndarray],
        search_filter: SearchFilter,
        max_distance: float | None,
        cursor: sql.Cursor | None,
        limit: int,
    ) -> list[PhotoMatch]:
        query, args = sql.exact_search(collection_id, vectors, search_filter, max_distance, cursor, limit)
        with _database_call("search_exact"):
            rows = await fetch_pinned(self.pool, EXACT_PLAN, query, *args)
        return [
            PhotoMatch(
                photo_id=row["external_id"],
                face_id=row["face_id"],
                box=Box.from_list(row["box"]),
                similarity=1.0 - row["distance"],
                metadata=json.loads(row["metadata"]),
                taken_at=row["taken_at"],
                distance=row["distance"],
                photo_key=row["photo_key"],
            )
            for row in rows
        ]

    async def exact_candidates(
        self,
        collection_id: int,
        vectors: list[np.ndarray],
        search_filter: SearchFilter,
        max_distance: float | None,
        limit: int,
    ) -> list[asyncpg.Record]:
        """Nearest faces by an exact scan, ordered by distance (not grouped)."""
        query, args = sql.exact_candidates(collection_id, vectors, search_filter, max_distance, limit)
        with _database_call("search_exact_candidates"):
            return await fetch_pinned(self.pool, EXACT_PLAN, query, *args)

    async def filtered_photo_count(self, collection_id: int, search_filter: SearchFilter, bound: int) -> int:
        """Photos of the collection that pass the filter, counted up to `bound`."""
        query, args = sql.filtered_photo_count(collection_id, search_filter, bound)
        with _database_call("filtered_photo_count"):
            return await self.pool.fetchval(query, *args)

    async def ann_candidates(
        self,
        collection_id: int,
        vector: np.ndarray,
        search_filter: SearchFilter,
        limit: int,
        ef_search: int,
        iterative_scan: bool,
    ) -> list[asyncpg.Record]:
        """Nearest faces by the collection's HNSW index, ordered by distance (not grouped)."""
        query, args = sql.ann_candidates(collection_id, vector, search_filter, limit)
        with _database_call("search_ann"):
            return await fetch_pinned(self.pool, ann_plan(ef_search, iterative_scan), query, *args)

    async def load_descriptors(
        self, collection_id: int, templates: bool = False
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
        """The collection's `faces_version` and its photo faces (or, with `templates`, its persons'
        template faces) as of that version (one snapshot): (version, photo or person keys, face
        ids, float32 matrix), rows in (key, face id) order. None when the collection is gone.
        Vectors come as one bytea of pgvector's binary format (dim, unused, big-endian float32s per
        row), so a 100k-face matrix is one buffer, not 100k objects."""
        key = "person_id" if templates else "photo_id"
        with _database_call("load_descriptors"):
            async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                version = await conn.fetchval("SELECT faces_version FROM collections WHERE id = $1", collection_id)
                if version is None:
                    return None
                row = await conn.fetchrow(
                    f"""
                    SELECT coalesce(array_agg({key} ORDER BY {key}, id), '{{}}') AS keys,
                           coalesce(array_agg(id ORDER BY {key}, id), '{{}}') AS face_ids,
                           coalesce(string_agg(vector_send(embedding), ''::bytea ORDER BY {key}, id), '') AS vectors,
                           max(vector_dims(embedding)) AS dim
                    FROM faces WHERE collection_id = $1 AND {key} IS NOT NULL
                    """,
                    collection_id,
                )
        n = len(row["face_ids"])
        dim = row["dim"] or 0
        # Each row: a 4-byte header (uint16 dim, uint16 unused), i.e. one float32 slot, then the values.
        raw = np.frombuffer(row["vectors"], dtype=">f4").reshape(n, dim + 1) if n else np.zeros((0, 1), ">f4")
        matrix = np.ascontiguousarray(raw[:, 1:], dtype=np.float32)
        return (
            version,
            np.asarray(row["keys"], dtype=np.int64),
            np.asarray(row["face_ids"], dtype=np.int64),
            matrix,
        )

    async def face_details(self, collection_id: int, face_ids: list[int]) -> dict[int, asyncpg.Record]:
        """Box and photo of each face (by face id) for a page of results found in memory; faces
        deleted since are missing from the answer."""
        with _database_call("face_details"):
            rows = await self.pool.fetch(
                """
                SELECT f.id AS face_id, f.photo_id AS photo_key, f.box, ph.external_id, ph.metadata, ph.taken_at
                FROM faces f JOIN photos ph ON ph.collection_id = f.collection_id AND ph.id = f.photo_id
                WHERE f.collection_id = $1 AND f.id = ANY($2::bigint[])
                """,
                collection_id,
                face_ids,
            )
        return {row["face_id"]: row for row in rows}

    async def face_embedding(self, collection_id: int, face_id: int) -> np.ndarray:
        with _database_call("face_embedding"):
            value = await self.pool.fetchval(
                "SELECT embedding FROM faces WHERE collection_id = $1 AND id = $2", collection_id, face_id
            )
        if value is None:
            raise NotFound("face not found")  # the internal id is never shown
        return value.to_numpy()

    # --- persons -------------------------------------------------------------------------

    async def enroll_person(
        self,
        collection_id: int,
        external_id: str,
        metadata: JsonObject | None,
        face: DetectedFace | None,
    ) -> tuple[Person, bool, bool]:
        """Creates or updates a person; `face` becomes the template when it beats the current one.
        Returns (person, template_replaced, created)."""
        with _database_call("enroll_person"):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    """
                    INSERT INTO persons (collection_id, external_id, metadata)
                    VALUES ($1, $2, COALESCE($3::jsonb, '{}'::jsonb))
                    ON CONFLICT (collection_id, external_id) DO UPDATE
                    SET metadata = COALESCE($3::jsonb, persons.metadata)
                    RETURNING *, (xmax = 0) AS created
                    """,
                    collection_id,
                    external_id,
                    None if metadata is None else json.dumps(metadata),
                )
                created = row["created"]
                current = row["template_quality"]
                replaced = face is not None and (row["best_face_id"] is None or face.quality.score > current)
                if replaced:
                    assert face is not None
                    await conn.execute(
                        "DELETE FROM faces WHERE collection_id = $1 AND person_id = $2", collection_id, row["id"]
                    )
                    face_id = await conn.fetchval(
                        f"""
                        INSERT INTO faces ({", ".join(FACE_COLUMNS)})
                        VALUES ({", ".join(f"${i + 1}" for i in range(len(FACE_COLUMNS)))})
                        RETURNING id
                        """,
                        *_face_record(collection_id, None, row["id"], face),
                    )
                    row = await conn.fetchrow(
                        """
                        UPDATE persons SET best_face_id = $3, template_quality = $4, updated_at = now()
                        WHERE collection_id = $1 AND id = $2 RETURNING *
                        """,
                        collection_id,
                        row["id"],
                        face_id,
                        face.quality.score,
                    )
        return _person(row), replaced, created

    async def identify(
        self, collection_id: int, vector: np.ndarray, max_distance: float, limit: int
    ) -> list[PersonMatch]:
        with _database_call("identify"):
            rows = await fetch_pinned(
                self.pool,
                EXACT_PLAN,
                """
                SELECT p.*, f.embedding <=> $2 AS distance
                FROM faces f JOIN persons p ON p.collection_id = f.collection_id AND p.id = f.person_id
                WHERE f.collection_id = $1 AND f.person_id IS NOT NULL AND f.embedding <=> $2 <= $3
                ORDER BY f.embedding <=> $2, p.id
                LIMIT $4
                """,
                collection_id,
                vector,
                max_distance,
                limit,
            )
        return [PersonMatch(person=_person(row), similarity=1.0 - row["distance"]) for row in rows]

    async def persons_by_id(self, collection_id: int, person_ids: list[int]) -> dict[int, Person]:
        """Persons of a page of identify results found in memory; persons deleted since are missing."""
        with _database_call("persons_by_id"):
            rows = await self.pool.fetch(
                "SELECT * FROM persons WHERE collection_id = $1 AND id = ANY($2::bigint[])", collection_id, person_ids
            )
        return {row["id"]: _person(row) for row in rows}

    async def verify(self, collection_id: int, external_id: str, vector: np.ndarray) -> tuple[Person, float | None]:
        """The person and the query's similarity to their template (None without a template)."""
        with _database_call("verify"):
            row = await self.pool.fetchrow(
                """
                SELECT p.*, f.embedding <=> $3 AS distance
                FROM persons p LEFT JOIN faces f ON f.collection_id = p.collection_id AND f.id = p.best_face_id
                WHERE p.collection_id = $1 AND p.external_id = $2
                """,
                collection_id,
                external_id,
                vector,
            )
        if row is None:
            raise NotFound(f"person {external_id!r} not found")
        return _person(row), None if row["distance"] is None else 1.0 - row["distance"]

    async def delete_person(self, collection_id: int, external_id: str) -> int:
        """Deletes a person and (by cascade) their template; returns the faces deleted."""
        with _database_call("delete_person"):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    """
                    SELECT p.id, (SELECT count(*) FROM faces f WHERE f.collection_id = p.collection_id
                                  AND f.person_id = p.id) AS faces
                    FROM persons p WHERE p.collection_id = $1 AND p.external_id = $2 FOR UPDATE
                    """,
                    collection_id,
                    external_id,
                )
                if row is None:
                    raise NotFound(f"person {external_id!r} not found")
                await conn.execute("DELETE FROM persons WHERE collection_id = $1 AND id = $2", collection_id, row["id"])
        return row["faces"]
