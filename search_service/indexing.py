"""Streaming indexing: each photo is checked, skipped when its bytes are already stored (content
hash), embedded by a call of its own (so one import spreads over every embedder pod), passed
through the quality gates and written whole. Photos that are ready together are written in one
transaction; results come back one per photo, in completion order."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from facesearch.errors import FaceSearchError, FailedPrecondition, detached, is_infrastructure_error
from search_service import validation
from search_service.config import SearchSettings
from search_service.domain import Collection, DetectedFace, IndexOutcome, IndexResult, PhotoInput, PhotoWrite
from search_service.embedder_client import EmbedderClient
from search_service.metrics import INDEX_WRITE_PHOTOS
from search_service.repository import Repository
from search_service.thumbnails import ThumbnailCutter

log = logging.getLogger(__name__)

# Embedded photos that may wait for the writer, per photo being embedded.
WRITE_QUEUE_FACTOR = 8


@dataclass(frozen=True)
class _Pending:
    photo: PhotoInput
    collection: Collection
    content_hash: bytes


@dataclass(frozen=True)
class _Embedded:
    """A photo whose faces are known and gated: ready to be written."""

    pending: _Pending
    kept: list[DetectedFace]
    rejected: list[DetectedFace]
    # JPEG thumbnails of `kept`, cut while the image was still at hand; empty when not wanted.
    thumbnails: tuple[bytes | None, ...] = ()

    @property
    def key(self) -> tuple[int, str]:
        return self.pending.collection.id, self.pending.photo.external_id

    def write(self) -> PhotoWrite:
        photo = self.pending.photo
        return PhotoWrite(
            photo.external_id, self.pending.content_hash, photo.metadata, photo.taken_at, self.kept, self.thumbnails
        )


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


async def _drain(queue: asyncio.Queue[_Pending | None]) -> tuple[list[_Pending], bool]:
    """Every item in `queue` now (waiting for one when it is empty), and whether its end (None)
    was reached."""
    first = await queue.get()
    if first is None:
        return [], True
    batch = [first]
    while not queue.empty():
        item = queue.get_nowait()
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def _stored(embedded: _Embedded, outcome: IndexOutcome) -> IndexResult:
    stored = 0 if outcome is IndexOutcome.UNCHANGED else len(embedded.kept)
    return IndexResult(
        embedded.pending.photo.external_id,
        outcome=outcome,
        faces_indexed=stored,
        rejected=tuple(embedded.rejected),
        no_face_reason=no_face_reason(embedded.kept, embedded.rejected),
    )


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
        """One IndexResult per photo of `photos`, as each is done. At most `max_in_flight` photos
        are being checked or embedded at once (and a bounded number of embedded ones, holding their
        faces but not their image, wait to be written): the stream reads no further until one is
        done. Stages: intake (validate) -> hash check (one query for the photos that arrived
        together) -> one embedder call per photo -> writer (one transaction for the photos ready
        together)."""
        slots = asyncio.Semaphore(self._settings.embedder.max_in_flight)
        # Embedded photos waiting to be written hold their faces, not their image: many more may
        # wait, so that the writer's groups grow with the database's latency.
        write_slots = asyncio.Semaphore(self._settings.embedder.max_in_flight * WRITE_QUEUE_FACTOR)
        # Every photo holds one of these from intake until its answer is sent: a client that does
        # not read its answers stops this stream reading its requests instead of growing memory.
        unanswered = asyncio.Semaphore(self._settings.embedder.max_in_flight * (WRITE_QUEUE_FACTOR + 2))
        results: asyncio.Queue[IndexResult | None] = asyncio.Queue()
        checking: asyncio.Queue[_Pending | None] = asyncio.Queue()
        ready: asyncio.Queue[_Embedded | None] = asyncio.Queue()
        embedding: set[asyncio.Task[None]] = set()
        collections: dict[str, Collection] = {}
        touched: set[int] = set()

        def finish(result: IndexResult) -> None:
            results.put_nowait(result)
            slots.release()

        def fail(photo: PhotoInput, exc: Exception, doing: str) -> None:
            # E.g. a bad field or the database unreachable: this photo fails, the stream goes on.
            finish(_failed(photo.external_id, exc, doing))

        async def embed(pending: _Pending) -> None:
            photo = pending.photo
            try:
                faces = await self._embedder.embed(photo.image, photo.options)
                kept, rejected = split_by_gates(faces, self.embedding_dim)
                thumbnails = await self._cut_thumbnails(photo, kept)
            except Exception as exc:
                fail(photo, exc, "embedding")
            else:
                await write_slots.acquire()
                slots.release()
                # The image is not needed any more: only its faces wait for the writer.
                light = _Pending(dataclasses.replace(photo, image=b""), pending.collection, pending.content_hash)
                ready.put_nowait(_Embedded(light, kept, rejected, thumbnails))

        async def intake() -> None:
            try:
                async for photo in photos:
                    await unanswered.acquire()
                    await slots.acquire()
                    try:
                        checking.put_nowait(await self._validate(tenant, photo, collections))
                    except Exception as exc:
                        fail(photo, exc, "preparing")
            finally:
                checking.put_nowait(None)

        async def check() -> None:
            try:
                done = False
                while not done:
                    batch, done = await _drain(checking)
                    for pending, unchanged in await self._check_hashes(batch):
                        if isinstance(unchanged, Exception):
                            fail(pending.photo, unchanged, "preparing")
                        elif unchanged:
                            finish(IndexResult(pending.photo.external_id, outcome=IndexOutcome.UNCHANGED))
                        else:
                            task = asyncio.create_task(embed(pending))
                            embedding.add(task)
                            task.add_done_callback(embedding.discard)
            finally:
                while embedding:
                    await asyncio.gather(*embedding, return_exceptions=True)
                ready.put_nowait(None)

        async def write() -> None:
            try:
                carried: list[_Embedded] = []
                done = False
                while not done or carried:
                    group, carried, done = await self._next_group(ready, carried, done)
                    for embedded, result in zip(group, await self._write_group(group), strict=True):
                        if result.error is None and not embedded.pending.collection.hnsw_indexed:
                            touched.add(embedded.pending.collection.id)
                        results.put_nowait(result)
                        write_slots.release()
            finally:
                results.put_nowait(None)

        tasks = [asyncio.create_task(stage()) for stage in (intake, check, write)]
        try:
            while (result := await results.get()) is not None:
                yield result
                unanswered.release()
            for task in tasks:
                await task  # surfaces an error of the request stream itself
        finally:
            for task in [*tasks, *embedding]:
                task.cancel()
            await asyncio.gather(*tasks, *embedding, return_exceptions=True)
        for collection_id in touched:
            try:
                await self._maybe_build_hnsw(collection_id)
            except Exception as exc:
                # Every photo is answered already: a database blip here must not fail the stream.
                log.warning("checking collection %d for an HNSW index failed: %s", collection_id, exc)

    async def _check_hashes(self, batch: list[_Pending]) -> list[tuple[_Pending, bool | Exception]]:
        """(photo, whether its bytes are stored already) for each photo of `batch`, one query per
        collection. An unchanged photo's metadata and time are updated, and it needs no embedder."""
        by_collection: dict[int, list[_Pending]] = {}
        for pending in batch:
            by_collection.setdefault(pending.collection.id, []).append(pending)
        checked: list[tuple[_Pending, bool | Exception]] = []
        for collection_id, members in by_collection.items():
            try:
                stored = await self._repo.photo_hashes(collection_id, [m.photo.external_id for m in members])
            except Exception as exc:
                checked.extend((m, exc) for m in members)
                continue
            for pending in members:
                photo = pending.photo
                if stored.get(photo.external_id) != pending.content_hash:
                    checked.append((pending, False))
                    continue
                try:
                    # False when the photo was deleted since: it is embedded and stored again.
                    still_there = await self._repo.touch_photo(
                        collection_id, photo.external_id, photo.metadata, photo.taken_at
                    )
                except Exception as exc:
                    checked.append((pending, exc))
                else:
                    checked.append((pending, still_there))
        return checked

    @staticmethod
    async def _next_group(
        ready: asyncio.Queue[_Embedded | None], carried: list[_Embedded], done: bool
    ) -> tuple[list[_Embedded], list[_Embedded], bool]:
        """Every photo ready now, as (group, carried to the next group, input finished). Waits for
        one when none is ready. A photo whose (collection, external id) is in the group already
        waits for the next one, so each photo's outcome is its own."""
        candidates = carried
        if not candidates and not done:
            item = await ready.get()
            if item is None:
                return [], [], True
            candidates = [item]
        while not done and not ready.empty():
            item = ready.get_nowait()
            if item is None:
                done = True
            else:
                candidates.append(item)
        group: list[_Embedded] = []
        later: list[_Embedded] = []
        keys: set[tuple[int, str]] = set()
        for embedded in candidates:
            (later if embedded.key in keys else group).append(embedded)
            keys.add(embedded.key)
        return group, later, done

    async def _write_group(self, group: list[_Embedded]) -> list[IndexResult]:
        """The results of writing `group`, in its order: one transaction per collection in it.
        When a group's transaction fails, its photos are written one by one, so one bad photo
        fails only itself."""
        by_collection: dict[int, list[int]] = {}
        for i, embedded in enumerate(group):
            by_collection.setdefault(embedded.pending.collection.id, []).append(i)
        results: list[IndexResult | None] = [None] * len(group)
        for collection_id, indexes in by_collection.items():
            members = [group[i] for i in indexes]
            try:
                outcomes = await self._repo.store_photos(collection_id, [m.write() for m in members])
            except Exception as exc:
                if len(members) == 1:
                    results[indexes[0]] = _failed(members[0].pending.photo.external_id, exc, "storing")
                    continue
                for i in indexes:
                    (results[i],) = await self._write_group([group[i]])
                continue
            INDEX_WRITE_PHOTOS.observe(len(members))
            for i, member in zip(indexes, members, strict=True):
                results[i] = _stored(member, outcomes[member.pending.photo.external_id])
        return [r for r in results if r is not None]

    async def _validate(self, tenant: str, photo: PhotoInput, collections: dict[str, Collection]) -> _Pending:
        """Checks a photo's fields and finds its collection (once per stream and name)."""
        if photo.error is not None:
            raise photo.error
        validation.external_id(photo.external_id)
        validation.metadata(photo.metadata, self._settings.max_metadata_bytes)
        validation.image_bytes(photo.image)
        collection = collections.get(photo.collection)
        if collection is None:
            collection = await self._repo.get_collection(tenant, validation.collection_name(photo.collection))
            collections[photo.collection] = collection
        return _Pending(photo, collection, hashlib.sha256(photo.image).digest())

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
        if await self._repo.count_faces(collection_id) <= thresholds.hnsw_min_faces:
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
