"""FaceSearchService over gRPC: converts protos to domain types and back, acts for the tenant the
auth interceptor verified (search_service.auth), and leaves the work to the core layer. Errors are raised, and mapped to
status codes by the shared interceptor (in a stream: into that item's own status)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.rpc import status_pb2

from facesearch.errors import InvalidArgument, status_of
from facesearch.v1 import face_pb2, search_pb2, search_pb2_grpc
from search_service.auth import current_principal
from search_service.catalog import Catalog
from search_service.domain import (
    Box,
    Collection,
    DetectedFace,
    EmbedOptions,
    FaceSource,
    IndexOutcome,
    IndexResult,
    JsonObject,
    Person,
    PhotoInput,
    QueryFace,
    QueryKind,
    SearchFilter,
    SearchQuery,
)
from search_service.indexing import Indexer
from search_service.persons import PersonRegistry
from search_service.search import SearchEngine

_OUTCOMES = {
    IndexOutcome.CREATED: search_pb2.INDEX_OUTCOME_CREATED,
    IndexOutcome.UPDATED: search_pb2.INDEX_OUTCOME_UPDATED,
    IndexOutcome.UNCHANGED: search_pb2.INDEX_OUTCOME_UNCHANGED,
}


# --- proto -> domain ---------------------------------------------------------------------------


def struct_to_dict(message: struct_pb2.Struct) -> JsonObject:
    return json_format.MessageToDict(message)


def timestamp_to_datetime(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def embed_options(message: face_pb2.EmbedOptions) -> EmbedOptions:
    optional = {
        name: getattr(message, name) if message.HasField(name) else None
        for name in ("detection_threshold", "min_det_score", "min_face_size", "min_blur_score", "max_pose_angle")
    }
    return EmbedOptions(max_faces=message.max_faces, disable_quality_gates=message.disable_quality_gates, **optional)


def photo_input(request: search_pb2.IndexPhotosRequest) -> PhotoInput:
    """The domain photo; a field that cannot be converted becomes the photo's own error, so the
    stream goes on."""
    try:
        taken_at = timestamp_to_datetime(request.taken_time) if request.HasField("taken_time") else None
    except (ValueError, OverflowError):
        return PhotoInput(
            request.collection, request.external_id, b"", error=InvalidArgument("taken_time is out of range")
        )
    return PhotoInput(
        collection=request.collection,
        external_id=request.external_id,
        image=request.image,
        metadata=struct_to_dict(request.metadata),
        taken_at=taken_at,
        options=embed_options(request.options),
    )


def search_filter(message: search_pb2.SearchFilter) -> SearchFilter:
    try:
        start = timestamp_to_datetime(message.start_time) if message.HasField("start_time") else None
        end = timestamp_to_datetime(message.end_time) if message.HasField("end_time") else None
    except (ValueError, OverflowError):
        raise InvalidArgument("filter time is out of range") from None
    return SearchFilter(
        metadata=struct_to_dict(message.metadata) if message.HasField("metadata") else None,
        start_time=start,
        end_time=end,
        photo_ids=tuple(message.photo_ids),
    )


def search_query(request: search_pb2.SearchRequest) -> SearchQuery:
    kind = request.WhichOneof("query")
    if kind is None:
        raise InvalidArgument("a search needs a query: image, images, embedding or face_id")
    return SearchQuery(
        collection=request.collection,
        kind=QueryKind(kind),
        image=request.image.image,
        all_faces=request.image.all_faces,
        images=tuple(request.images.images),
        embedding=tuple(request.embedding.values),
        face_id=request.face_id,
        top_k=request.top_k,
        min_similarity=request.min_similarity if request.HasField("min_similarity") else None,
        filter=search_filter(request.filter),
        page_token=request.page_token,
    )


def face_source(message: search_pb2.FaceQuery) -> FaceSource:
    kind = message.WhichOneof("source")
    if kind == "image":
        return FaceSource(image=message.image)
    if kind == "embedding":
        return FaceSource(embedding=tuple(message.embedding.values))
    raise InvalidArgument("face must be given as an image or an embedding")


# --- domain -> proto ---------------------------------------------------------------------------


def dict_to_struct(value: JsonObject) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def datetime_to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def box_proto(box: Box) -> face_pb2.BoundingBox:
    return face_pb2.BoundingBox(x1=box.x1, y1=box.y1, x2=box.x2, y2=box.y2)


def quality_proto(face: DetectedFace) -> face_pb2.Quality:
    q = face.quality
    return face_pb2.Quality(
        blur_score=q.blur_score,
        face_size=q.face_size,
        yaw=q.yaw,
        pitch=q.pitch,
        roll=q.roll,
        score=q.score,
        passed=q.passed,
        failures=[face_pb2.QualityFailure.Value(name) for name in q.failures],
    )


def query_face_proto(face: QueryFace | None) -> search_pb2.QueryFace | None:
    if face is None:
        return None
    return search_pb2.QueryFace(
        box=box_proto(face.face.box), quality=quality_proto(face.face), image_index=face.image_index
    )


def collection_proto(collection: Collection) -> search_pb2.Collection:
    return search_pb2.Collection(
        name=collection.name,
        display_name=collection.display_name,
        create_time=datetime_to_timestamp(collection.created_at),
        photo_count=collection.photo_count,
        face_count=collection.face_count,
        person_count=collection.person_count,
    )


def person_proto(person: Person) -> search_pb2.Person:
    return search_pb2.Person(
        external_id=person.external_id,
        metadata=dict_to_struct(person.metadata),
        template_quality=person.template_quality,
        create_time=datetime_to_timestamp(person.created_at),
        update_time=datetime_to_timestamp(person.updated_at),
    )


def status_proto(error: BaseException | None) -> status_pb2.Status:
    if error is None:
        return status_pb2.Status(code=grpc.StatusCode.OK.value[0])
    code, message = status_of(error)
    return status_pb2.Status(code=code.value[0], message=message)


def index_response(result: IndexResult) -> search_pb2.IndexPhotosResponse:
    if result.error is not None:
        return search_pb2.IndexPhotosResponse(external_id=result.external_id, status=status_proto(result.error))
    return search_pb2.IndexPhotosResponse(
        external_id=result.external_id,
        status=status_proto(None),
        outcome=_OUTCOMES[result.outcome] if result.outcome else search_pb2.INDEX_OUTCOME_UNSPECIFIED,
        faces_indexed=result.faces_indexed,
        rejected_faces=[
            search_pb2.RejectedFace(box=box_proto(face.box), quality=quality_proto(face)) for face in result.rejected
        ],
        no_face_reason=result.no_face_reason,
    )


class FaceSearchServicer(search_pb2_grpc.FaceSearchServiceServicer):
    def __init__(
        self,
        catalog: Catalog,
        indexer: Indexer,
        engine: SearchEngine,
        persons: PersonRegistry,
    ) -> None:
        self._catalog = catalog
        self._indexer = indexer
        self._engine = engine
        self._persons = persons

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

        async def photos() -> AsyncIterator[PhotoInput]:
            async for request in request_iterator:
                yield photo_input(request)

        async for result in self._indexer.index_photos(tenant, photos()):
            yield index_response(result)

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
        return search_pb2.SearchResponse(
            matches=[
                search_pb2.PhotoMatch(
                    photo_id=m.photo_id,
                    face_id=m.public_face_id,
                    box=box_proto(m.box),
                    similarity=m.similarity,
                    metadata=dict_to_struct(m.metadata),
                    taken_time=datetime_to_timestamp(m.taken_at),
                )
                for m in result.matches
            ],
            next_page_token=result.next_page_token,
            query_faces=[query_face_proto(f) for f in result.query_faces],
            no_face_reason=result.no_face_reason,
        )

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
        return search_pb2.IdentifyPersonResponse(
            candidates=[
                search_pb2.PersonMatch(person=person_proto(c.person), similarity=c.similarity)
                for c in result.candidates
            ],
            threshold=result.threshold,
            query_face=query_face_proto(result.query_face),
            no_face_reason=result.no_face_reason,
        )

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
