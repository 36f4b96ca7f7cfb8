"""The person registry: enrol with one or more photos keeping the best-quality face as the template,
identify a face among a collection's persons (1:N), verify it against one person (1:1), list, get,
update metadata, delete."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from facesearch.errors import FaceSearchError, InvalidArgument
from search_service import paging, validation
from search_service.config import SearchSettings
from search_service.descriptor_cache import DescriptorCache
from search_service.domain import (
    Collection,
    DetectedFace,
    EnrollImageResult,
    EnrollResult,
    FaceSource,
    IdentifyResult,
    JsonObject,
    Person,
    PersonMatch,
    PersonPage,
    QueryFace,
    VerifyResult,
)
from search_service.embedder_client import EmbedderClient
from search_service.faces import image_face, source_vector
from search_service.management_repository import ManagementRepository
from search_service.paging import RESPONSE_BUDGET_BYTES
from search_service.public_ids import PublicIds
from search_service.repository import Repository

MAX_IDENTIFY_TOP_K = 100
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PERSON_OVERHEAD_BYTES = 160


class PersonRegistry:
    def __init__(
        self,
        repository: Repository,
        embedder: EmbedderClient,
        settings: SearchSettings,
        embedding_dim: int,
        management: ManagementRepository,
        cache: DescriptorCache | None = None,
        ids: PublicIds | None = None,
    ) -> None:
        self._repo = repository
        self._management = management
        # Seals page tokens; the server passes the database's shared key.
        self._ids = ids or PublicIds.ephemeral()
        self._embedder = embedder
        self._settings = settings
        self.embedding_dim = embedding_dim
        self._cache = cache

    async def _image_face(self, image: bytes, index: int) -> tuple[DetectedFace | None, str]:
        return await image_face(self._embedder, image, index)

    async def enroll(
        self, tenant: str, collection: str, external_id: str, images: list[bytes], metadata: JsonObject | None
    ) -> EnrollResult:
        validation.external_id(external_id)
        validation.image_count(len(images))
        if metadata is not None:
            validation.metadata(metadata, self._settings.max_metadata_bytes)
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        outcomes = await asyncio.gather(
            *(self._image_face(image, i) for i, image in enumerate(images)), return_exceptions=True
        )
        results: list[EnrollImageResult] = []
        best: DetectedFace | None = None
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidArgument):
                results.append(EnrollImageResult(error=outcome, face=None))
                continue
            if isinstance(outcome, BaseException):
                raise outcome  # embedder down or overloaded: the whole call fails, nothing is written
            face, reason = outcome
            if face is None:
                results.append(EnrollImageResult(error=InvalidArgument(f"image {index}: {reason}"), face=None))
                continue
            results.append(EnrollImageResult(error=None, face=QueryFace(face, index)))
            if best is None or face.quality.score > best.quality.score:
                best = face
        if best is None:
            reasons = "; ".join(r.error.message for r in results if isinstance(r.error, FaceSearchError))
            raise InvalidArgument(f"no usable face in any enrolment image: {reasons}")
        person, replaced, created = await self._repo.enroll_person(found.id, external_id, metadata, best)
        return EnrollResult(person=person, template_replaced=replaced, created=created, images=results)

    async def _query_vector(self, source: FaceSource) -> tuple[np.ndarray | None, QueryFace | None, str]:
        return await source_vector(self._embedder, source, 0, self.embedding_dim)

    async def identify(
        self, tenant: str, collection: str, source: FaceSource, top_k: int, threshold: float | None
    ) -> IdentifyResult:
        limit = validation.top_k(top_k, default=1, maximum=MAX_IDENTIFY_TOP_K)
        threshold_value = validation.similarity(threshold, "threshold")
        applied = self._settings.thresholds.identify if threshold_value is None else threshold_value
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        vector, query_face, reason = await self._query_vector(source)
        if vector is None:
            return IdentifyResult(candidates=[], threshold=applied, query_face=None, no_face_reason=reason)
        candidates = await self._identify_cached(found, vector, 1.0 - applied, limit)
        if candidates is None:
            candidates = await self._repo.identify(found.id, vector, 1.0 - applied, limit)
        return IdentifyResult(candidates=candidates, threshold=applied, query_face=query_face)

    async def _identify_cached(
        self, collection: Collection, vector: np.ndarray, max_distance: float, limit: int
    ) -> list[PersonMatch] | None:
        """Exact 1:N over the templates in this replica's memory; None (ask PostgreSQL) when the
        cache does not hold them at the version this call read."""
        if self._cache is None:
            return None
        entry = self._cache.get(collection, self.embedding_dim, templates=True)
        if entry is None:
            return None
        hits = await asyncio.to_thread(entry.search, [vector], max_distance, None, limit)
        persons = await self._repo.persons_by_id(collection.id, [hit.photo_key for hit in hits])
        if len(persons) < len(hits):
            return None  # a person was deleted since this call read the version
        # Ties in similarity go to the lower person id, as the SQL's ORDER BY does.
        return [PersonMatch(person=persons[hit.photo_key], similarity=1.0 - hit.distance) for hit in hits]

    async def verify(
        self, tenant: str, collection: str, person_id: str, source: FaceSource, threshold: float | None
    ) -> VerifyResult:
        validation.external_id(person_id, "person_id")
        threshold_value = validation.similarity(threshold, "threshold")
        applied = self._settings.thresholds.verify if threshold_value is None else threshold_value
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        vector, query_face, reason = await self._query_vector(source)
        if vector is None:
            await self._repo.verify(found.id, person_id, np.ones(self.embedding_dim, dtype=np.float32))  # NOT_FOUND
            return VerifyResult(match=False, similarity=0.0, threshold=applied, query_face=None, no_face_reason=reason)
        _, similarity = await self._repo.verify(found.id, person_id, vector)
        if similarity is None:
            return VerifyResult(
                match=False, similarity=0.0, threshold=applied, query_face=query_face, no_face_reason="no template"
            )
        return VerifyResult(
            match=similarity >= applied, similarity=similarity, threshold=applied, query_face=query_face
        )

    async def delete(self, tenant: str, collection: str, external_id: str) -> int:
        validation.external_id(external_id)
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        return await self._repo.delete_person(found.id, external_id)

    async def list(self, tenant: str, collection: str, page_size: int, page_token: str) -> PersonPage:
        size = validation.top_k(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, what="page_size")
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        bound_to = paging.bind(found.id, "persons")
        after = paging.decode(page_token, bound_to, {"e": str}, self._ids)["e"] if page_token else ""
        rows = await self._management.list_persons(found.id, after, size + 1)
        persons = rows[:size]
        # Persons' metadata is at most 16 KiB each: 1000 of them could pass 4 MiB.
        left, fitted = RESPONSE_BUDGET_BYTES, []
        for person in persons:
            left -= PERSON_OVERHEAD_BYTES + len(person.external_id) + len(json.dumps(person.metadata))
            if left < 0 and fitted:
                break
            fitted.append(person)
        more = len(rows) > size or len(fitted) < len(persons)
        token = paging.encode({"e": fitted[-1].external_id}, bound_to, self._ids) if more else ""
        return PersonPage(persons=fitted, next_page_token=token)

    async def get(self, tenant: str, collection: str, external_id: str) -> Person:
        validation.external_id(external_id)
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        return await self._management.get_person(found.id, external_id)

    async def update(
        self, tenant: str, collection: str, external_id: str, fields: frozenset[str], metadata: JsonObject
    ) -> Person:
        validation.external_id(external_id)
        unknown = sorted(fields - {"metadata"})
        if unknown:
            raise InvalidArgument(f"update_mask names {', '.join(unknown)}; only metadata can change")
        validation.metadata(metadata, self._settings.max_metadata_bytes)
        found = await self._repo.get_collection(tenant, validation.collection_name(collection))
        return await self._management.update_person_metadata(found.id, external_id, metadata)
