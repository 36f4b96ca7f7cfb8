"""Streaming indexing: each photo is checked, skipped when its bytes are already stored (content
hash), embedded through one EmbedStream per call, passed through the quality gates and written
whole in one transaction. Results come back per photo, in completion order."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from facesearch.errors import FaceSearchError, FailedPrecondition, detached, is_infrastructure_error
from search_service import validation
from search_service.config import SearchSettings
from search_service.domain import Collection, DetectedFace, IndexOutcome, IndexResult, PhotoInput, PhotoWrite
from search_service.embedder_client import EmbedderClient, EmbedItem, EmbedOutcome
from search_service.repository import Repository
from search_service.thumbnails import ThumbnailCutter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    photo: PhotoInput
    collection: Collection
    content_hash: bytes


def split_by_gates(faces: list[DetectedFace], embedding_dim: int) -> tuple[list[DetectedFace], list[DetectedFace]]:
    """(faces to store, faces rejected by the quality gates). A face whose embedding is not the
    schema's width is refused outright: storing it would fail the whole photo later."""
    kept, rejected = [], []
    for face in faces:
        if face.embedding.shape != (embedding_dim,):
            size = face.embedding.shape[0]
            raise FailedPrecondition(f"the embedder returned a {size}-d embedding; the schema stores {embedding_dim}")
        (kept if face.quality.passed else rejected).append(face)
    return kept, rejected


def no_face_reason(kept: list[DetectedFace], rejected: list[DetectedFace]) -> str:
    if kept:
        return ""
    if not rejected:
        return "no face detected"
    return f"every detected face ({len(rejected)}) failed the quality gates"


def _failed(external_id: str, exc: BaseException, step: str) -> IndexResult:
    """A photo's error result. Expected failures (bad input, a dependency down) are the caller's
    answer, not ours to shout about; only unexpected ones are logged with their traceback. The
    error is detached from its traceback, which would keep the photo's bytes alive while the
    result waits to be sent."""
    if not isinstance(exc, FaceSearchError):
        if is_infrastructure_error(exc):
            log.warning("%s photo %.100r: %s: %s", step, external_id, exc.__class__.__name__, exc)
        else:
            log.error("%s photo %.100r failed", step, external_id, exc_info=exc)
    return IndexResult(external_id, error=detached(exc))


def _log_build_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("building an HNSW index failed", exc_info=task.exception())


def _log_sweep_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("dropping the HNSW indexes of deleted collections failed", exc_info=task.exception())


class Indexer:
    def __init__(
        self,
        repository: Repository,
        embedder: EmbedderClient,
        settings: SearchSettings,
        embedding_dim: int,
        thumbnails: ThumbnailCutter | None = None,
    ) -> None:
        self._repo = repository
        self._embedder = embedder
        self._settings = settings
        self.embedding_dim = embedding_dim
        self._thumbnails = thumbnails
        self._index_builds: dict[int, asyncio.Task[bool]] = {}
        self._sweep_task: asyncio.Task[bool] | None = None

    async def index_photos(self, tenant: str, photos: AsyncIterator[PhotoInput]) -> AsyncIterator[IndexResult]:
        """One IndexResult per photo of `photos`, as each is done."""
        # Bounded: a client that does not read its answers stops this stream reading its requests
        # (and so its photos) instead of growing memory.
        results: asyncio.Queue[IndexResult | None] = asyncio.Queue(maxsize=self._settings.embedder.max_in_flight)
        to_embed: asyncio.Queue[EmbedItem | None] = asyncio.Queue(maxsize=self._settings.embedder.max_in_flight)
        pending: dict[str, _Pending] = {}
        collections: dict[str, Collection] = {}
        ids = itertools.count()
        touched: set[int] = set()

        async def intake() -> None:
            try:
                async for photo in photos:
                    try:
                        prepared = await self._prepare(tenant, photo, collections)
                    except Exception as exc:
                        # E.g. a bad field or the database unreachable: this photo fails, the stream goes on.
                        await results.put(_failed(photo.external_id, exc, "preparing"))
                        continue
                    if prepared is None:
                        await results.put(IndexResult(photo.external_id, outcome=IndexOutcome.UNCHANGED))
                        continue
                    request_id = str(next(ids))
                    pending[request_id] = prepared
                    await to_embed.put(EmbedItem(request_id, photo.image, photo.options))
            finally:
                await to_embed.put(None)

        async def queued() -> AsyncIterator[EmbedItem]:
            while (item := await to_embed.get()) is not None:
                yield item

        async def embed_and_store() -> None:
            try:
                async for outcome in self._embedder.embed_stream(queued()):
                    prepared = pending.pop(outcome.request_id)
                    result = await self._store(prepared, outcome)
                    if result.error is None and not prepared.collection.hnsw_indexed:
                        touched.add(prepared.collection.id)
                    await results.put(result)
            finally:
                await results.put(None)

        tasks = [asyncio.create_task(intake()), asyncio.create_task(embed_and_store())]
        try:
            while (result := await results.get()) is not None:
                yield result
            for task in tasks:
                await task  # surfaces an error of the request stream itself
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for collection_id in touched:
            try:
                await self._maybe_build_hnsw(collection_id)
            except Exception as exc:
                # Every photo is answered already: a database blip here must not fail the stream.
                log.warning("checking collection %d for an HNSW index failed: %s", collection_id, exc)

    async def _prepare(self, tenant: str, photo: PhotoInput, collections: dict[str, Collection]) -> _Pending | None:
        """Validates a photo; None when its bytes are stored already (its metadata and time are
        updated then, and the embedder is not called)."""
        if photo.error is not None:
            raise photo.error
        validation.external_id(photo.external_id)
        validation.metadata(photo.metadata, self._settings.max_metadata_bytes)
        validation.image_bytes(photo.image)
        collection = collections.get(photo.collection)
        if collection is None:
            collection = await self._repo.get_collection(tenant, validation.collection_name(photo.collection))
            collections[photo.collection] = collection
        content_hash = hashlib.sha256(photo.image).digest()
        if await self._repo.photo_hash(collection.id, photo.external_id) == content_hash:
            if await self._repo.touch_photo(collection.id, photo.external_id, photo.metadata, photo.taken_at):
                return None
        return _Pending(photo, collection, content_hash)

    async def _store(self, prepared: _Pending, outcome: EmbedOutcome) -> IndexResult:
        photo = prepared.photo
        if outcome.error is not None:
            return _failed(photo.external_id, outcome.error, "embedding")
        try:
            kept, rejected = split_by_gates(outcome.faces, self.embedding_dim)
            thumbnails = await self._cut_thumbnails(photo, kept)
            write = PhotoWrite(
                photo.external_id, prepared.content_hash, photo.metadata, photo.taken_at, kept, thumbnails
            )
            outcomes = await self._repo.store_photos(prepared.collection.id, [write])
        except Exception as exc:
            return _failed(photo.external_id, exc, "storing")
        result_outcome = outcomes[photo.external_id]
        stored = 0 if result_outcome is IndexOutcome.UNCHANGED else len(kept)
        return IndexResult(
            photo.external_id,
            outcome=result_outcome,
            faces_indexed=stored,
            rejected=tuple(rejected),
            no_face_reason=no_face_reason(kept, rejected),
        )

    async def _cut_thumbnails(self, photo: PhotoInput, faces: list[DetectedFace]) -> tuple[bytes | None, ...]:
        wanted = self._settings.thumbnails.enabled if photo.store_thumbnails is None else photo.store_thumbnails
        if not wanted or self._thumbnails is None:
            return ()
        return await self._thumbnails.cut(photo.image, [face.box for face in faces])

    async def delete_photo(self, collection: Collection, external_id: str) -> int:
        """Deletes a photo with every face embedding derived from it; returns the faces deleted."""
        return await self._repo.delete_photo(collection.id, validation.external_id(external_id))

    async def _maybe_build_hnsw(self, collection_id: int) -> None:
        """Large collections get their partial HNSW index, built in the background."""
        thresholds = self._settings.thresholds
        if collection_id in self._index_builds:
            return
        if await self._repo.count_photo_faces(collection_id) <= thresholds.hnsw_min_faces:
            return
        log.info("collection %d passed %d faces: building its HNSW index", collection_id, thresholds.hnsw_min_faces)
        task = asyncio.create_task(
            self._repo.build_hnsw_index(collection_id, thresholds.hnsw_m, thresholds.hnsw_ef_construction)
        )
        task.add_done_callback(_log_build_failure)
        self._index_builds[collection_id] = task

    def start_orphan_sweep(self) -> None:
        """In the background: drop the HNSW indexes of deleted collections left by an earlier run."""
        self._sweep_task = asyncio.create_task(self._sweep())
        self._sweep_task.add_done_callback(_log_sweep_failure)

    async def _sweep(self) -> bool:
        dropped = await self._repo.drop_orphan_hnsw_indexes()
        if dropped:
            log.info("dropped HNSW indexes of deleted collections: %s", ", ".join(dropped))
        return True

    async def close(self) -> None:
        tasks = [*self._index_builds.values(), *([self._sweep_task] if self._sweep_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
