"""Per-replica descriptor cache: each hot collection's photo faces (for Search) or person templates
(for Identify) held as one contiguous float32 matrix and searched exactly with BLAS, bounded in
bytes (LRU). An entry answers only a call that read the same `faces_version` of its collection, so
a replica never answers from stale data."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from search_service.domain import Collection
from search_service.metrics import CACHE_BYTES, CACHE_COLLECTIONS, CACHE_LOOKUPS
from search_service.repository import Repository
from search_service.sql import Cursor

log = logging.getLogger(__name__)

# (collection id, templates): a collection's photo faces and its persons' templates are two entries.
CacheKey = tuple[int, bool]


@dataclass(frozen=True)
class FaceHit:
    """A photo's (or person's) best face for a query: its key, the face's id, the cosine distance."""

    photo_key: int
    face_id: int
    distance: float


class CollectionMatrix:
    """One collection's photo faces (or templates) at one `faces_version`, rows sorted by (photo or
    person, face id) and L2-normalised, so a matrix-vector product gives every cosine similarity."""

    def __init__(self, version: int, photo_keys: np.ndarray, face_ids: np.ndarray, matrix: np.ndarray) -> None:
        self.version = version
        self.face_ids = face_ids
        self.matrix = matrix
        n = len(photo_keys)
        # Start row of each photo's run of faces, and that photo's key.
        self.starts = np.flatnonzero(np.r_[True, photo_keys[1:] != photo_keys[:-1]]) if n else np.zeros(0, np.int64)
        self.photos = photo_keys[self.starts] if n else np.zeros(0, np.int64)
        self.ends = np.r_[self.starts[1:], n].astype(np.int64)

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + self.face_ids.nbytes + self.starts.nbytes + self.photos.nbytes + self.ends.nbytes

    def search(
        self, vectors: list[np.ndarray], max_distance: float | None, cursor: Cursor | None, want: int
    ) -> list[FaceHit]:
        """Exact: the `want` photos nearest to any of `vectors` (each at its best face), in
        (distance, photo key) order, strictly after `cursor` and within `max_distance`: the same
        answer as the SQL exact search."""
        if not len(self.photos):
            return []
        queries = np.asarray(np.stack(vectors), dtype=np.float32)
        sims = self.matrix @ queries[0] if len(queries) == 1 else (self.matrix @ queries.T).max(axis=1)
        distance = 1.0 - np.maximum.reduceat(sims, self.starts).astype(np.float64)
        keep = np.ones(len(distance), dtype=bool)
        if max_distance is not None:
            keep &= distance <= max_distance
        if cursor is not None:
            keep &= (distance > cursor.distance) | ((distance == cursor.distance) & (self.photos > cursor.photo_key))
        chosen = np.flatnonzero(keep)
        if len(chosen) > want:
            # Every photo tied with the want-th distance stays in; the sort below settles ties by key.
            kth = np.partition(distance[chosen], want - 1)[want - 1]
            chosen = chosen[distance[chosen] <= kth]
        chosen = chosen[np.lexsort((self.photos[chosen], distance[chosen]))][:want]
        hits = []
        for photo in chosen:
            start, end = self.starts[photo], self.ends[photo]
            # argmax takes the first of equals: the lowest face id, as the SQL's ORDER BY does.
            face = self.face_ids[start + int(np.argmax(sims[start:end]))]
            hits.append(FaceHit(int(self.photos[photo]), int(face), float(distance[photo])))
        return hits


class DescriptorCache:
    """Hot collections' matrices, at most `max_bytes` in all (least recently used go first). A miss
    or a stale entry answers nothing (the caller goes to PostgreSQL) and starts one background load
    of the collection, which reads its version and faces in one snapshot."""

    def __init__(self, repository: Repository, max_bytes: int) -> None:
        self._repo = repository
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, CollectionMatrix] = OrderedDict()
        self._loads: dict[CacheKey, asyncio.Task[None]] = {}
        self._bytes = 0
        CACHE_BYTES.set_function(lambda: self._bytes)
        CACHE_COLLECTIONS.set_function(lambda: len(self._entries))

    def get(self, collection: Collection, embedding_dim: int, templates: bool = False) -> CollectionMatrix | None:
        """The collection's photo faces (or `templates`) at exactly `collection.faces_version`, or None."""
        key = (collection.id, templates)
        entry = self._entries.get(key)
        if entry is not None and entry.version == collection.faces_version:
            self._entries.move_to_end(key)
            CACHE_LOOKUPS.labels("hit").inc()
            return entry
        CACHE_LOOKUPS.labels("miss" if entry is None else "stale").inc()
        if entry is not None and entry.version < collection.faces_version:
            self._drop(key)
        # The counter counts photo faces and templates together: an over-estimate, fine for a bound.
        if collection.face_count * embedding_dim * 4 <= self.max_bytes:
            self._start_load(key)
        return None

    def _start_load(self, key: CacheKey) -> None:
        if key in self._loads:
            return  # one load per entry at a time; a later miss starts the next
        task = asyncio.create_task(self._load(key))
        self._loads[key] = task
        task.add_done_callback(lambda t: self._load_done(key, t))

    def _load_done(self, key: CacheKey, task: asyncio.Task[None]) -> None:
        self._loads.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("loading %s into the descriptor cache failed: %r", key, task.exception())

    async def _load(self, key: CacheKey) -> None:
        collection_id, templates = key
        loaded = await self._repo.load_descriptors(collection_id, templates)
        if loaded is None:
            return  # the collection is gone
        version, photo_keys, face_ids, matrix = loaded
        entry = await asyncio.to_thread(_build_entry, version, photo_keys, face_ids, matrix)
        if entry.nbytes > self.max_bytes:
            return
        current = self._entries.get(key)
        if current is not None and current.version >= entry.version:
            return  # a newer (or the same) snapshot got here first
        self._drop(key)
        self._entries[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    async def close(self) -> None:
        for task in list(self._loads.values()):
            task.cancel()
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
        self._entries.clear()
        self._bytes = 0


def limit_blas_threads(threads: int) -> None:
    """Process-wide BLAS thread count for the matrix products (0: leave it as it is)."""
    if threads:
        threadpool_limits(limits=threads, user_api="blas")


def _build_entry(version: int, photo_keys: np.ndarray, face_ids: np.ndarray, matrix: np.ndarray) -> CollectionMatrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.maximum(norms, np.float32(1e-12))
    return CollectionMatrix(version, photo_keys, face_ids, matrix)
