"""Search: turns a query (selfie, several selfies, embedding, indexed face) into vectors, searches
one collection (from this replica's descriptor cache when it holds the collection's current
version; otherwise exact below the HNSW threshold, the collection's HNSW index above it, never
fewer than top_k photos when that many match) and pages with an opaque cursor bound to its query."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from facesearch.errors import InvalidArgument
from search_service import validation
from search_service.config import SearchSettings
from search_service.descriptor_cache import DescriptorCache
from search_service.domain import (
    Box,
    Collection,
    EmbedOptions,
    PhotoMatch,
    QueryFace,
    QueryKind,
    SearchFilter,
    SearchQuery,
    SearchResult,
)
from search_service.embedder_client import EmbedderClient
from search_service.faces import best_face
from search_service.public_ids import PublicIds
from search_service.repository import Repository
from search_service.sql import Cursor

DEFAULT_TOP_K = 10
# Faces of one selfie searched with when `all_faces` is set.
MAX_QUERY_FACES = 10
# Tokens this service issues are ~140 characters; anything much longer is forged.
MAX_PAGE_TOKEN_CHARS = 512
# pgvector caps hnsw.ef_search at 1000.
MAX_EF_SEARCH = 1000


@dataclass(frozen=True)
class PageToken:
    cursor: Cursor
    query_hash: str
    # Whether the page came from the descriptor cache. Its float32 BLAS distances and pgvector's
    # differ in the last bits, so a query's later pages stay on the path of its first page (a cached
    # query goes to PostgreSQL only when the collection changed in between).
    cached: bool = False

    def encode(self, ids: PublicIds) -> str:
        """Sealed (encrypted and authenticated): the cursor holds an internal photo key."""
        payload = {"d": self.cursor.distance, "k": self.cursor.photo_key, "q": self.query_hash}
        if self.cached:
            payload["c"] = 1
        return ids.seal(json.dumps(payload, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, token: str, query_hash: str, ids: PublicIds) -> PageToken:
        """The token's cursor; INVALID_ARGUMENT for anything this service did not issue. The seal
        stops forgery; length is checked first (no work on huge input), then types and ranges."""
        not_ours = InvalidArgument("page_token is not a token this service issued")
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise not_ours
        try:
            payload = json.loads(ids.open(token))
            distance, key, bound_to = payload["d"], payload["k"], payload["q"]
            cached = payload.get("c", 0)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise not_ours from None
        if not (
            isinstance(distance, int | float)
            and isinstance(key, int)
            and isinstance(bound_to, str)
            and cached in (0, 1)
            and math.isfinite(distance)
            and 0 <= key < 2**63
        ):
            raise not_ours
        parsed = cls(Cursor(float(distance), key), bound_to, bool(cached))
        if parsed.query_hash != query_hash:
            raise InvalidArgument("page_token belongs to another query; send it with the query that returned it")
        return parsed


def query_hash(
    collection_id: int, vectors: list[np.ndarray], search_filter: SearchFilter, min_similarity: float | None
) -> str:
    """What a page token is bound to: the same collection, vectors, filter and threshold."""
    digest = hashlib.sha256()
    digest.update(str(collection_id).encode())
    for vector in vectors:
        digest.update(np.asarray(vector, dtype=np.float32).tobytes())
    digest.update(
        json.dumps(
            [
                search_filter.metadata,
                search_filter.start_time.isoformat() if search_filter.start_time else None,
                search_filter.end_time.isoformat() if search_filter.end_time else None,
                list(search_filter.photo_ids),
                min_similarity,
            ],
            sort_keys=True,
        ).encode()
    )
    return digest.hexdigest()[:32]


def group_by_photo(rows: list[Mapping[str, Any]], cursor: Cursor | None, max_distance: float | None) -> list[Any]:
    """Distance-ordered face rows (photo_key, face_id, distance, ...) -> each photo once at its
    best face, in (distance, photo_key) order, after the cursor and within max_distance."""
    seen: set[int] = set()
    grouped = []
    for row in rows:
        photo_key, distance = row["photo_key"], row["distance"]
        if photo_key in seen:
            continue
        seen.add(photo_key)
        if max_distance is not None and distance > max_distance:
            continue
        if cursor is not None and (distance, photo_key) <= (cursor.distance, cursor.photo_key):
            continue
        grouped.append(row)
    grouped.sort(key=lambda r: (r["distance"], r["photo_key"]))
    return grouped


def _match(row: Mapping[str, Any]) -> PhotoMatch:
    """A PhotoMatch from a candidate row joined with its photo."""
    return PhotoMatch(
        photo_id=row["external_id"],
        face_id=row["face_id"],
        box=Box.from_list(row["box"]),
        similarity=1.0 - row["distance"],
        metadata=json.loads(row["metadata"]),
        taken_at=row["taken_at"],
        distance=row["distance"],
        photo_key=row["photo_key"],
    )


class SearchEngine:
    def __init__(
        self,
        repository: Repository,
        embedder: EmbedderClient,
        settings: SearchSettings,
        embedding_dim: int,
        cache: DescriptorCache | None = None,
        ids: PublicIds | None = None,
    ) -> None:
        self._repo = repository
        self._embedder = embedder
        self._settings = settings
        self.embedding_dim = embedding_dim
        self._cache = cache
        # The server passes the database's shared key; a random one serves tests and tools.
        self._ids = ids or PublicIds.ephemeral()

    async def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        top_k = validation.top_k(query.top_k, DEFAULT_TOP_K, self._settings.max_top_k)
        min_similarity = validation.similarity(query.min_similarity, "min_similarity")
        check_filter(query.filter, self._settings.max_metadata_bytes)
        collection = await self._repo.get_collection(tenant, validation.collection_name(query.collection))
        vectors, query_faces, reason = await self._vectors(collection, query)
        if not vectors:
            return SearchResult(matches=[], query_faces=query_faces, no_face_reason=reason)
        bound_to = query_hash(collection.id, vectors, query.filter, min_similarity)
        previous = PageToken.decode(query.page_token, bound_to, self._ids) if query.page_token else None
        cursor = previous.cursor if previous else None
        max_distance = None if min_similarity is None else 1.0 - min_similarity
        matches = None
        if previous is None or previous.cached:
            matches = await self._search_cached(collection, vectors, query.filter, max_distance, cursor, top_k + 1)
        cached = matches is not None
        if matches is None and collection.hnsw_indexed and len(vectors) == 1:
            matches = await self._search_ann(collection, vectors[0], query.filter, max_distance, cursor, top_k + 1)
        elif matches is None:
            matches = await self._search_exact(collection, vectors, query.filter, max_distance, cursor, top_k + 1)
        token = ""
        if len(matches) > top_k:
            last = matches[top_k - 1]
            token = PageToken(Cursor(last.distance, last.photo_key), bound_to, cached).encode(self._ids)
        matches = [replace(m, public_face_id=self._ids.face_id(collection.id, m.face_id)) for m in matches[:top_k]]
        if query.include_thumbnails:
            matches = await self._with_thumbnails(collection, matches)
        # The servicer may end the page earlier to keep the response under the size limit; it
        # makes that page's token from `query_hash` and `cached` (page_token_after).
        return SearchResult(
            matches=matches, next_page_token=token, query_faces=query_faces, query_hash=bound_to, cached=cached
        )

    def page_token_after(self, result: SearchResult, match: PhotoMatch) -> str:
        """A sealed token for the page that follows `match` of `result` (for a page ended early)."""
        return PageToken(Cursor(match.distance, match.photo_key), result.query_hash, result.cached).encode(self._ids)

    async def _with_thumbnails(self, collection: Collection, matches: list[PhotoMatch]) -> list[PhotoMatch]:
        thumbnails = await self._repo.face_thumbnails(collection.id, [m.face_id for m in matches])
        return [replace(m, thumbnail=thumbnails[m.face_id]) if m.face_id in thumbnails else m for m in matches]

    async def _vectors(
        self, collection: Collection, query: SearchQuery
    ) -> tuple[list[np.ndarray], list[QueryFace], str]:
        """The query's vectors (unit length), the query faces used, and why none when empty."""
        if query.kind is QueryKind.EMBEDDING:
            return [validation.embedding(list(query.embedding), self.embedding_dim)], [], ""
        if query.kind is QueryKind.FACE_ID:
            face_id = self._ids.parse_face_id(collection.id, query.face_id)
            return [await self._repo.face_embedding(collection.id, face_id)], [], ""
        if query.kind is QueryKind.IMAGE:
            validation.image_bytes(query.image)
            options = EmbedOptions(max_faces=MAX_QUERY_FACES if query.all_faces else 0)
            faces = await self._embedder.embed(query.image, options)
            if query.all_faces:
                usable = [f for f in faces if f.quality.passed]
                if not usable:
                    return [], [], best_face(faces)[1] + " in image 0"
                return [f.embedding for f in usable], [QueryFace(f, 0) for f in usable], ""
            face, reason = best_face(faces)
            if face is None:
                return [], [], f"{reason} in image 0"
            return [face.embedding], [QueryFace(face, 0)], ""
        if query.kind is QueryKind.IMAGES:
            validation.image_count(len(query.images))
            for index, image in enumerate(query.images):
                validation.image_bytes(image, index)
            results = await asyncio.gather(*(self._embedder.embed(image, EmbedOptions()) for image in query.images))
            chosen: list[QueryFace] = []
            for index, faces in enumerate(results):
                face, reason = best_face(faces)
                if face is None:
                    return [], chosen, f"{reason} in image {index}"
                chosen.append(QueryFace(face, index))
            mean = np.mean([q.face.embedding for q in chosen], axis=0)
            return [validation.embedding(mean, self.embedding_dim)], chosen, ""
        raise InvalidArgument("a search needs a query: image, images, embedding or face_id")

    async def _search_cached(
        self,
        collection: Collection,
        vectors: list[np.ndarray],
        search_filter: SearchFilter,
        max_distance: float | None,
        cursor: Cursor | None,
        want: int,
    ) -> list[PhotoMatch] | None:
        """Exact search in this replica's memory, or None (go to PostgreSQL) when the cache does
        not hold the collection at the version this call read, or when filters apply (they are
        on photo rows the cache does not hold). Only the page's boxes and photos are then read."""
        if self._cache is None or _filtered(search_filter):
            return None
        entry = self._cache.get(collection, self.embedding_dim)
        if entry is None:
            return None
        hits = await asyncio.to_thread(entry.search, vectors, max_distance, cursor, want)
        details = await self._repo.face_details(collection.id, [hit.face_id for hit in hits])
        if len(details) < len(hits):
            return None  # a face was deleted since this call read the version: answer from PostgreSQL
        return [_match({**details[hit.face_id], "distance": hit.distance, "photo_key": hit.photo_key}) for hit in hits]

    async def _search_exact(
        self,
        collection: Collection,
        vectors: list[np.ndarray],
        search_filter: SearchFilter,
        max_distance: float | None,
        cursor: Cursor | None,
        want: int,
    ) -> list[PhotoMatch]:
        """Exact search. A first page usually comes from the nearest faces (top-N, no grouping
        of the whole collection): exact as soon as they hold `want` photos, or are all there is.
        Later pages, and first pages whose best faces crowd into few photos, group in SQL."""
        if cursor is None:
            limit = max(4 * want, 64)
            rows = await self._repo.exact_candidates(collection.id, vectors, search_filter, max_distance, limit)
            grouped = group_by_photo(rows, None, max_distance)
            if len(grouped) >= want or len(rows) < limit:
                return [_match(row) for row in grouped[:want]]
        return await self._repo.search_exact(collection.id, vectors, search_filter, max_distance, cursor, want)

    async def _search_ann(
        self,
        collection: Collection,
        vector: np.ndarray,
        search_filter: SearchFilter,
        max_distance: float | None,
        cursor: Cursor | None,
        want: int,
    ) -> list[PhotoMatch]:
        """HNSW search over-fetching faces (several per photo, filters applied after the index),
        falling back to the exact scan whenever the candidates cannot prove they hold `want`
        photos: pgvector < 0.8 has no iterative scan and would silently return fewer. A filter
        that lets few photos through goes to the exact scan of those photos straight away."""
        thresholds = self._settings.thresholds
        if _filtered(search_filter):
            bound = thresholds.filtered_exact_max_photos
            if await self._repo.filtered_photo_count(collection.id, search_filter, bound + 1) <= bound:
                return await self._search_exact(collection, [vector], search_filter, max_distance, cursor, want)
        limit = min(max(4 * want, 40), MAX_EF_SEARCH)
        ef_search = min(max(thresholds.hnsw_ef_search, limit), MAX_EF_SEARCH)
        rows = await self._repo.ann_candidates(
            collection.id,
            vector,
            search_filter,
            limit,
            ef_search,
            iterative_scan=self._repo.pgvector.has_iterative_scan,
        )
        grouped = group_by_photo(rows, cursor, max_distance)
        beyond_threshold = max_distance is not None and bool(rows) and rows[-1]["distance"] > max_distance
        if len(grouped) < want and not beyond_threshold:
            return await self._repo.search_exact(collection.id, [vector], search_filter, max_distance, cursor, want)
        return [_match(row) for row in grouped[:want]]


def _filtered(search_filter: SearchFilter) -> bool:
    return bool(search_filter.metadata or search_filter.start_time or search_filter.end_time or search_filter.photo_ids)


def check_filter(search_filter: SearchFilter, max_metadata_bytes: int) -> None:
    if search_filter.metadata:
        validation.metadata(search_filter.metadata, max_metadata_bytes)
    if len(search_filter.photo_ids) > validation.MAX_PHOTO_IDS:
        raise InvalidArgument(f"filter.photo_ids has {len(search_filter.photo_ids)} ids; at most 10000 allowed")
    if search_filter.start_time and search_filter.end_time and search_filter.start_time >= search_filter.end_time:
        raise InvalidArgument("filter.start_time must be before filter.end_time")
