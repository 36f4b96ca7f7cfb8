"""FaceSearchService over gRPC: each handler converts its request to domain types
(search_service.conversions), acts for the tenant the auth interceptor verified
(search_service.auth), and leaves the work to the core layer. Errors are raised, and mapped to
status codes by the shared interceptor (in a stream: into that item's own status)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from facesearch.errors import Unavailable
from facesearch.streams import UntilDraining
from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.analysis import FaceAnalysis
from search_service.auth import current_principal
from search_service.catalog import Catalog
from search_service.conversions import (
    collection_proto,
    compare_response,
    detected_face_proto,
    embed_options,
    face_source,
    index_response,
    person_proto,
    person_update_fields,
    photo_input,
    photo_list_query,
    photo_match_proto,
    photo_proto,
    photo_update,
    query_face_proto,
    search_query,
    status_proto,
    struct_to_dict,
)
from search_service.domain import PhotoInput
from search_service.indexing import Indexer
from search_service.persons import PersonRegistry
from search_service.photos import PhotoLibrary
from search_service.search import SearchEngine

# Room left in a response for gRPC framing and trailers.
RESPONSE_MARGIN_BYTES = 1024


class FaceSearchServicer(search_pb2_grpc.FaceSearchServiceServicer):
    def __init__(
        self,
        catalog: Catalog,
        indexer: Indexer,
        engine: SearchEngine,
        persons: PersonRegistry,
        photos: PhotoLibrary,
        analysis: FaceAnalysis,
        draining: asyncio.Event | None = None,
        max_response_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._draining = draining or asyncio.Event()
        self._catalog = catalog
        self._indexer = indexer
        self._engine = engine
        self._persons = persons
        self._photos = photos
        self._analysis = analysis

    def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        """The verified caller's tenant; never read from metadata here (AuthInterceptor did)."""
        return current_principal().tenant

    async def CreateCollection(
        self, request: search_pb2.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.CreateCollectionResponse:
        collection = await self._catalog.create(self._tenant(context), request.name, request.display_name)
        return search_pb2.CreateCollectionResponse(collection=collection_proto(collection))

    async def GetCollection(
        self, request: search_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetCollectionResponse:
        collection = await self._catalog.get(self._tenant(context), request.name)
        return search_pb2.GetCollectionResponse(collection=collection_proto(collection))

    async def ListCollections(
        self, request: search_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListCollectionsResponse:
        collections, token = await self._catalog.list(self._tenant(context), request.page_size, request.page_token)
        return search_pb2.ListCollectionsResponse(
            collections=[collection_proto(c) for c in collections], next_page_token=token
        )

    async def DeleteCollection(
        self, request: search_pb2.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeleteCollectionResponse:
        photos, faces, persons = await self._catalog.delete(self._tenant(context), request.name)
        return search_pb2.DeleteCollectionResponse(photos_deleted=photos, faces_deleted=faces, persons_deleted=persons)

    async def IndexPhotos(
        self, request_iterator: AsyncIterator[search_pb2.IndexPhotosRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[search_pb2.IndexPhotosResponse]:
        tenant = self._tenant(context)
        requests = UntilDraining(request_iterator, self._draining)

        async def photos() -> AsyncIterator[PhotoInput]:
            async for request in requests:
                yield photo_input(request)

        async for result in self._indexer.index_photos(tenant, photos()):
            yield index_response(result)
        if requests.interrupted:
            raise Unavailable(
                "the server is shutting down: every photo it took is answered above; "
                "resend the photos without an answer (to another replica)"
            )

    async def DeletePhoto(
        self, request: search_pb2.DeletePhotoRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeletePhotoResponse:
        tenant = self._tenant(context)
        collection = await self._catalog.get(tenant, request.collection, with_counts=False)
        faces = await self._indexer.delete_photo(collection, request.external_id)
        return search_pb2.DeletePhotoResponse(faces_deleted=faces)

    async def Search(
        self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchResponse:
        result = await self._engine.search(self._tenant(context), search_query(request))
        response = search_pb2.SearchResponse(
            next_page_token=result.next_page_token,
            query_faces=[query_face_proto(f) for f in result.query_faces],
            no_face_reason=result.no_face_reason,
        )
        # Each match's encoded size (+ its field tag and length) counts against the budget; a
        # page that would not fit ends early and the next page starts after its last match.
        size = response.ByteSize() + RESPONSE_MARGIN_BYTES
        for index, match in enumerate(result.matches):
            message = photo_match_proto(match)
            size += message.ByteSize() + 8
            if size > self._max_response_bytes and index > 0:
                response.next_page_token = self._engine.page_token_after(result, result.matches[index - 1])
                break
            response.matches.append(message)
        return response

    async def EnrollPerson(
        self, request: search_pb2.EnrollPersonRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.EnrollPersonResponse:
        result = await self._persons.enroll(
            self._tenant(context),
            request.collection,
            request.external_id,
            list(request.images),
            struct_to_dict(request.metadata) if request.HasField("metadata") else None,
        )
        return search_pb2.EnrollPersonResponse(
            person=person_proto(result.person),
            template_replaced=result.template_replaced,
            created=result.created,
            images=[
                search_pb2.EnrollImageResult(status=status_proto(r.error), face=query_face_proto(r.face))
                for r in result.images
            ],
        )

    async def IdentifyPerson(
        self, request: search_pb2.IdentifyPersonRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.IdentifyPersonResponse:
        result = await self._persons.identify(
            self._tenant(context),
            request.collection,
            face_source(request.face),
            request.top_k,
            request.threshold if request.HasField("threshold") else None,
        )
        response = search_pb2.IdentifyPersonResponse(
            threshold=result.threshold,
            query_face=query_face_proto(result.query_face),
            no_face_reason=result.no_face_reason,
        )
        # No paging here: candidates (best first) that would push the response past the limit
        # are left out, so standard clients can still read it.
        size = response.ByteSize() + RESPONSE_MARGIN_BYTES
        for index, candidate in enumerate(result.candidates):
            message = search_pb2.PersonMatch(person=person_proto(candidate.person), similarity=candidate.similarity)
            size += message.ByteSize() + 8
            if size > self._max_response_bytes and index > 0:
                break
            response.candidates.append(message)
        return response

    async def VerifyPerson(
        self, request: search_pb2.VerifyPersonRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.VerifyPersonResponse:
        result = await self._persons.verify(
            self._tenant(context),
            request.collection,
            request.person_id,
            face_source(request.face),
            request.threshold if request.HasField("threshold") else None,
        )
        return search_pb2.VerifyPersonResponse(
            match=result.match,
            similarity=result.similarity,
            threshold=result.threshold,
            query_face=query_face_proto(result.query_face),
            no_face_reason=result.no_face_reason,
        )

    async def DeletePerson(
        self, request: search_pb2.DeletePersonRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeletePersonResponse:
        faces = await self._persons.delete(self._tenant(context), request.collection, request.external_id)
        return search_pb2.DeletePersonResponse(faces_deleted=faces)

    async def ListPhotos(
        self, request: search_pb2.ListPhotosRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListPhotosResponse:
        page = await self._photos.list(self._tenant(context), photo_list_query(request))
        return search_pb2.ListPhotosResponse(
            photos=[photo_proto(p) for p in page.photos], next_page_token=page.next_page_token
        )

    async def GetPhoto(
        self, request: search_pb2.GetPhotoRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetPhotoResponse:
        photo = await self._photos.get(
            self._tenant(context), request.collection, request.external_id, request.include_thumbnails
        )
        return search_pb2.GetPhotoResponse(photo=photo_proto(photo))

    async def UpdatePhoto(
        self, request: search_pb2.UpdatePhotoRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.UpdatePhotoResponse:
        photo = await self._photos.update(
            self._tenant(context), request.collection, request.external_id, photo_update(request)
        )
        return search_pb2.UpdatePhotoResponse(photo=photo_proto(photo))

    async def DeleteFace(
        self, request: search_pb2.DeleteFaceRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeleteFaceResponse:
        photo_id, remaining = await self._photos.delete_face(self._tenant(context), request.collection, request.face_id)
        return search_pb2.DeleteFaceResponse(photo_id=photo_id, faces_remaining=remaining)

    async def GetFaceThumbnail(
        self, request: search_pb2.GetFaceThumbnailRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetFaceThumbnailResponse:
        jpeg, photo_id = await self._photos.thumbnail(self._tenant(context), request.collection, request.face_id)
        return search_pb2.GetFaceThumbnailResponse(thumbnail=jpeg, photo_id=photo_id)

    async def ListPersons(
        self, request: search_pb2.ListPersonsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListPersonsResponse:
        page = await self._persons.list(
            self._tenant(context), request.collection, request.page_size, request.page_token
        )
        return search_pb2.ListPersonsResponse(
            persons=[person_proto(p) for p in page.persons], next_page_token=page.next_page_token
        )

    async def GetPerson(
        self, request: search_pb2.GetPersonRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetPersonResponse:
        person = await self._persons.get(self._tenant(context), request.collection, request.external_id)
        return search_pb2.GetPersonResponse(person=person_proto(person))

    async def UpdatePerson(
        self, request: search_pb2.UpdatePersonRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.UpdatePersonResponse:
        person = await self._persons.update(
            self._tenant(context),
            request.collection,
            request.external_id,
            person_update_fields(request),
            struct_to_dict(request.metadata),
        )
        return search_pb2.UpdatePersonResponse(person=person_proto(person))

    async def CompareFaces(
        self, request: search_pb2.CompareFacesRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.CompareFacesResponse:
        self._tenant(context)  # no tenant data is read, but the call is still a tenant's
        result = await self._analysis.compare(
            face_source(request.first),
            face_source(request.second),
            request.threshold if request.HasField("threshold") else None,
        )
        return compare_response(result)

    async def DetectFaces(
        self, request: search_pb2.DetectFacesRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DetectFacesResponse:
        self._tenant(context)  # no tenant data is read, but the call is still a tenant's
        faces = await self._analysis.detect(request.image, embed_options(request.options))
        return search_pb2.DetectFacesResponse(faces=[detected_face_proto(f) for f in faces])
