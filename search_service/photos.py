"""What is indexed, for the people managing it: list a collection's photos with their faces (paged,
newest first or by external id, filtered), get one, change its metadata or taken time, delete one
face, read a face's thumbnail. Pages stay under the response budget."""

from __future__ import annotations

import json
from dataclasses import replace

from facesearch.errors import InvalidArgument, NotFound
from search_service import paging, validation
from search_service.config import SearchSettings
from search_service.domain import Photo, PhotoListQuery, PhotoOrder, PhotoPage, PhotoUpdate
from search_service.management_repository import ManagementRepository
from search_service.paging import RESPONSE_BUDGET_BYTES
from search_service.public_ids import PublicIds
from search_service.repository import Repository
from search_service.search import check_filter

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Room a face or photo takes in a response besides its metadata and thumbnail.
FACE_OVERHEAD_BYTES = 96
PHOTO_OVERHEAD_BYTES = 128
PHOTO_FIELDS = frozenset({"metadata", "taken_time"})


class ResponseBudget:
    """Counts the bytes a response will carry, so a page stops before 4 MiB."""

    def __init__(self, limit: int = RESPONSE_BUDGET_BYTES) -> None:
        self.left = limit

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True

    def force(self, size: int) -> None:
        """Counts what must go out anyway (a page's first photo)."""
        self.left = max(0, self.left - size)


def fit_photo(photo: Photo, budget: ResponseBudget, first: bool) -> Photo | None:
    """The photo as it fits the budget: None when it does not (the first photo of a page always
    does), thumbnails left out (`has_thumbnail` still says they exist) once they no longer fit."""
    size = PHOTO_OVERHEAD_BYTES + len(photo.external_id) + len(json.dumps(photo.metadata))
    size += FACE_OVERHEAD_BYTES * len(photo.faces)
    if not budget.take(size):
        if not first:
            return None
        budget.force(size)
    faces = tuple(
        face if not face.thumbnail or budget.take(len(face.thumbnail)) else replace(face, thumbnail=b"")
        for face in photo.faces
    )
    return replace(photo, faces=faces)


class PhotoLibrary:
    def __init__(
        self,
        repository: Repository,
        management: ManagementRepository,
        settings: SearchSettings,
        ids: PublicIds | None = None,
    ) -> None:
        self._repo = repository
        self._management = management
        self._settings = settings
        # The server passes the database's shared key; a random one serves tests and tools.
        self._ids = ids or PublicIds.ephemeral()

    def _public(self, collection_id: int, photo: Photo) -> Photo:
        """The photo with the ids its faces show clients (search_service.public_ids)."""
        faces = tuple(replace(f, public_id=self._ids.face_id(collection_id, f.id)) for f in photo.faces)
        return replace(photo, faces=faces)

    def _face_id(self, collection_id: int, text: str) -> int:
        return self._ids.parse_face_id(collection_id, text)

    async def list(self, tenant: str, query: PhotoListQuery) -> PhotoPage:
        size = validation.top_k(query.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, what="page_size")
        check_filter(query.filter, self._settings.max_metadata_bytes)
        collection = await self._repo.get_collection(tenant, validation.collection_name(query.collection))
        bound_to = paging.bind(
            collection.id,
            query.order.value,
            query.filter.metadata,
            query.filter.start_time,
            query.filter.end_time,
            list(query.filter.photo_ids),
        )
        after = _position(query, bound_to, self._ids)
        rows = await self._management.list_photos(collection.id, query.order, query.filter, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        faces = await self._management.photo_faces(collection.id, [p.id for p in rows], query.include_thumbnails)
        budget = ResponseBudget()
        photos: list[Photo] = []
        for row in rows:
            fitted = fit_photo(replace(row, faces=tuple(faces.get(row.id, ()))), budget, first=not photos)
            if fitted is None:
                more = True
                break
            photos.append(self._public(collection.id, fitted))
        token = paging.encode(_cursor(photos[-1], query.order), bound_to, self._ids) if more else ""
        return PhotoPage(photos=photos, next_page_token=token)

    async def get(self, tenant: str, collection: str, external_id: str, include_thumbnails: bool) -> Photo:
        validation.external_id(external_id)
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        photo = await self._management.get_photo(found.id, external_id)
        faces = await self._management.photo_faces(found.id, [photo.id], include_thumbnails)
        fitted = fit_photo(replace(photo, faces=tuple(faces.get(photo.id, ()))), ResponseBudget(), first=True)
        assert fitted is not None
        return self._public(found.id, fitted)

    async def update(self, tenant: str, collection: str, external_id: str, update: PhotoUpdate) -> Photo:
        validation.external_id(external_id)
        unknown = sorted(update.fields - PHOTO_FIELDS)
        if unknown:
            raise InvalidArgument(f"update_mask names {', '.join(unknown)}; only metadata and taken_time can change")
        if not update.fields:
            raise InvalidArgument("nothing to update: set metadata or taken_time (or name them in update_mask)")
        metadata = None
        if "metadata" in update.fields:
            metadata = validation.metadata(update.metadata, self._settings.max_metadata_bytes)
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        await self._management.update_photo(
            found.id, external_id, metadata, "taken_time" in update.fields, update.taken_at
        )
        return await self.get(tenant, collection, external_id, include_thumbnails=False)

    async def delete_face(self, tenant: str, collection: str, face_id: str) -> tuple[str, int]:
        """Deletes one face of a photo with its embedding and thumbnail: (photo id, faces left)."""
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        try:
            return await self._management.delete_face(found.id, self._face_id(found.id, face_id))
        except NotFound:
            raise NotFound(f"face {face_id} not found") from None  # the public id, never the internal one

    async def thumbnail(self, tenant: str, collection: str, face_id: str) -> tuple[bytes, str]:
        """(JPEG, photo id) of a face's thumbnail; NOT_FOUND when the face has none."""
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        try:
            jpeg, photo_id = await self._management.face_thumbnail(found.id, self._face_id(found.id, face_id))
        except NotFound:
            raise NotFound(f"face {face_id} not found") from None  # the public id, never the internal one
        if jpeg is None:
            raise NotFound(
                f"face {face_id} has no thumbnail: it was indexed without one (IndexPhotosRequest.store_thumbnails, "
                "or the server's SEARCH_THUMBNAILS__ENABLED)"
            )
        return jpeg, photo_id


def _cursor(photo: Photo, order: PhotoOrder) -> dict:
    if order is PhotoOrder.NEWEST:
        return {"t": paging.microseconds(photo.taken_at), "i": photo.id}
    return {"e": photo.external_id}


def _position(query: PhotoListQuery, bound_to: str, ids: PublicIds) -> tuple | str | None:
    if not query.page_token:
        return None
    if query.order is PhotoOrder.EXTERNAL_ID:
        return paging.decode(query.page_token, bound_to, {"e": str}, ids)["e"]
    position = paging.decode(query.page_token, bound_to, {"t": int, "i": int}, ids)
    try:
        if not 0 <= position["i"] < 2**63:
            raise OverflowError
        return paging.from_microseconds(position["t"]), position["i"]
    except OverflowError:
        raise InvalidArgument("page_token is not a token this service issued") from None
