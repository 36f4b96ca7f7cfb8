"""SQL of the management calls, over the same asyncpg pool as the repository: list, get and update
photos with their faces, delete one face, read thumbnails, list, get and update persons. Every
query is scoped by collection id; every value is a parameter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from facesearch.errors import NotFound
from search_service import sql
from search_service.db import Database
from search_service.domain import (
    Box,
    FaceQuality,
    JsonObject,
    Person,
    Photo,
    PhotoOrder,
    SearchFilter,
    StoredFace,
    TemplateFace,
)
from search_service.repository import _database_call

# The quality columns of faces, as FaceQuality takes them. A stored face passed the gates (or
# they were off), so `passed` is true and no failure is recorded.
_QUALITY_COLUMNS = "f.blur_score, f.face_size, f.yaw, f.pitch, f.roll, f.quality_score"

_PERSON_SELECT = f"""
    SELECT p.*, f.box, f.det_score, {_QUALITY_COLUMNS}
    FROM persons p LEFT JOIN faces f ON f.collection_id = p.collection_id AND f.id = p.best_face_id
"""


def _quality(row: asyncpg.Record) -> FaceQuality:
    return FaceQuality(
        blur_score=row["blur_score"],
        face_size=row["face_size"],
        yaw=row["yaw"],
        pitch=row["pitch"],
        roll=row["roll"],
        score=row["quality_score"],
    )


def _photo(row: asyncpg.Record, faces: Sequence[StoredFace] = ()) -> Photo:
    return Photo(
        id=row["id"],
        external_id=row["external_id"],
        metadata=json.loads(row["metadata"]),
        taken_at=row["taken_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        faces=tuple(faces),
    )


def _stored_face(row: asyncpg.Record) -> StoredFace:
    return StoredFace(
        id=row["id"],
        box=Box.from_list(row["box"]),
        det_score=row["det_score"],
        quality=_quality(row),
        has_thumbnail=row["has_thumbnail"],
        thumbnail=row["thumbnail"] or b"",
    )


def _person(row: asyncpg.Record) -> Person:
    template = None
    if row["box"] is not None:
        template = TemplateFace(box=Box.from_list(row["box"]), det_score=row["det_score"], quality=_quality(row))
    return Person(
        id=row["id"],
        external_id=row["external_id"],
        metadata=json.loads(row["metadata"]),
        template_quality=float(row["template_quality"] or 0.0),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        template=template,
    )


class ManagementRepository:
    def __init__(self, database: Database) -> None:
        self.pool = database.pool

    # --- photos --------------------------------------------------------------------------

    async def list_photos(
        self,
        collection_id: int,
        order: PhotoOrder,
        search_filter: SearchFilter,
        after: tuple[datetime, int] | str | None,
        limit: int,
    ) -> list[Photo]:
        """A page of photos (without faces) after the keyset position `after`: (taken_at, id) when
        newest first, the external id when by external id."""
        params = sql.Params()
        clauses = [f"p.collection_id = {params.add(collection_id)}"]
        clauses += sql.photo_filter_clauses(params, search_filter)
        if order is PhotoOrder.NEWEST:
            if after is not None:
                taken_at, photo_id = after  # type: ignore[misc]
                clauses.append(f"(p.taken_at, p.id) < ({params.add(taken_at)}, {params.add(photo_id)})")
            order_by = "p.taken_at DESC, p.id DESC"
        else:
            if after is not None:
                clauses.append(f"p.external_id > {params.add(after)}")
            order_by = "p.external_id"
        query = f"SELECT p.* FROM photos p WHERE {' AND '.join(clauses)} ORDER BY {order_by} LIMIT {params.add(limit)}"
        with _database_call("list_photos"):
            rows = await self.pool.fetch(query, *params.values)
        return [_photo(row) for row in rows]

    async def photo_faces(
        self, collection_id: int, photo_ids: list[int], with_thumbnails: bool
    ) -> dict[int, list[StoredFace]]:
        """The stored faces of these photos (internal ids), in detection order."""
        if not photo_ids:
            return {}
        with _database_call("photo_faces"):
            rows = await self.pool.fetch(
                f"""
                SELECT f.photo_id, f.id, f.box, f.det_score, {_QUALITY_COLUMNS},
                       t.face_id IS NOT NULL AS has_thumbnail, CASE WHEN $3 THEN t.jpeg END AS thumbnail
                FROM faces f
                LEFT JOIN face_thumbnails t ON t.collection_id = f.collection_id AND t.face_id = f.id
                WHERE f.collection_id = $1 AND f.photo_id = ANY($2::bigint[])
                ORDER BY f.photo_id, f.id
                """,
                collection_id,
                photo_ids,
                with_thumbnails,
            )
        faces: dict[int, list[StoredFace]] = {}
        for row in rows:
            faces.setdefault(row["photo_id"], []).append(_stored_face(row))
        return faces

    async def get_photo(self, collection_id: int, external_id: str) -> Photo:
        """The photo (without faces); NOT_FOUND when absent."""
        with _database_call("get_photo"):
            row = await self.pool.fetchrow(
                "SELECT * FROM photos WHERE collection_id = $1 AND external_id = $2", collection_id, external_id
            )
        if row is None:
            raise NotFound(f"photo {external_id!r} not found")
        return _photo(row)

    async def update_photo(
        self,
        collection_id: int,
        external_id: str,
        metadata: JsonObject | None,
        set_taken_at: bool,
        taken_at: datetime | None,
    ) -> Photo:
        """Sets metadata (unless None) and, when `set_taken_at`, the taken time (None: back to the
        index time). Returns the photo without faces; NOT_FOUND when absent."""
        with _database_call("update_photo"):
            row = await self.pool.fetchrow(
                """
                UPDATE photos SET metadata = COALESCE($3::jsonb, metadata),
                       taken_at = CASE WHEN $4 THEN COALESCE($5, created_at) ELSE taken_at END,
                       updated_at = now()
                WHERE collection_id = $1 AND external_id = $2 RETURNING *
                """,
                collection_id,
                external_id,
                None if metadata is None else json.dumps(metadata),
                set_taken_at,
                taken_at,
            )
        if row is None:
            raise NotFound(f"photo {external_id!r} not found")
        return _photo(row)

    async def delete_face(self, collection_id: int, face_id: int) -> tuple[str, int]:
        """Deletes one face of a photo (and, by cascade, its thumbnail); returns the photo's external
        id and the faces it has left. NOT_FOUND for a missing face or a person's template."""
        with _database_call("delete_face"):
            async with self.pool.acquire() as conn, conn.transaction():
                photo_id = await conn.fetchval(
                    "DELETE FROM faces WHERE collection_id = $1 AND id = $2 AND photo_id IS NOT NULL "
                    "RETURNING photo_id",
                    collection_id,
                    face_id,
                )
                if photo_id is None:
                    raise NotFound(f"face {face_id} not found")
                row = await conn.fetchrow(
                    """
                    SELECT p.external_id, (SELECT count(*) FROM faces f WHERE f.collection_id = p.collection_id
                                           AND f.photo_id = p.id) AS remaining
                    FROM photos p WHERE p.collection_id = $1 AND p.id = $2
                    """,
                    collection_id,
                    photo_id,
                )
                await conn.execute(
                    "UPDATE photos SET updated_at = now() WHERE collection_id = $1 AND id = $2", collection_id, photo_id
                )
        return row["external_id"], row["remaining"]

    async def face_thumbnail(self, collection_id: int, face_id: int) -> tuple[bytes | None, str]:
        """(the face's thumbnail or None, its photo's external id); NOT_FOUND for a missing face."""
        with _database_call("face_thumbnail"):
            row = await self.pool.fetchrow(
                """
                SELECT t.jpeg, p.external_id
                FROM faces f
                JOIN photos p ON p.collection_id = f.collection_id AND p.id = f.photo_id
                LEFT JOIN face_thumbnails t ON t.collection_id = f.collection_id AND t.face_id = f.id
                WHERE f.collection_id = $1 AND f.id = $2
                """,
                collection_id,
                face_id,
            )
        if row is None:
            raise NotFound(f"face {face_id} not found")
        return row["jpeg"], row["external_id"]

    # --- persons -------------------------------------------------------------------------

    async def list_persons(self, collection_id: int, after_external_id: str, limit: int) -> list[Person]:
        with _database_call("list_persons"):
            rows = await self.pool.fetch(
                f"{_PERSON_SELECT} WHERE p.collection_id = $1 AND p.external_id > $2 ORDER BY p.external_id LIMIT $3",
                collection_id,
                after_external_id,
                limit,
            )
        return [_person(row) for row in rows]

    async def get_person(self, collection_id: int, external_id: str) -> Person:
        with _database_call("get_person"):
            row = await self.pool.fetchrow(
                f"{_PERSON_SELECT} WHERE p.collection_id = $1 AND p.external_id = $2", collection_id, external_id
            )
        if row is None:
            raise NotFound(f"person {external_id!r} not found")
        return _person(row)

    async def update_person_metadata(self, collection_id: int, external_id: str, metadata: JsonObject) -> Person:
        with _database_call("update_person"):
            found = await self.pool.fetchval(
                "UPDATE persons SET metadata = $3::jsonb WHERE collection_id = $1 AND external_id = $2 RETURNING id",
                collection_id,
                external_id,
                json.dumps(metadata),
            )
        if found is None:
            raise NotFound(f"person {external_id!r} not found")
        return await self.get_person(collection_id, external_id)
