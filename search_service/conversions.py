"""Conversions between the FaceSearchService protos and the search service's domain types, both
ways; no logic beyond the shape of the data. A field that cannot be converted is InvalidArgument."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from google.rpc import status_pb2

from facesearch import wire
from facesearch.errors import InvalidArgument, status_of
from facesearch.v1 import face_pb2, search_pb2
from search_service.domain import (
    Box,
    Collection,
    CompareResult,
    DetectedFace,
    EmbedOptions,
    FaceQuality,
    FaceSource,
    IndexOutcome,
    IndexResult,
    JsonObject,
    Person,
    Photo,
    PhotoInput,
    PhotoListQuery,
    PhotoMatch,
    PhotoOrder,
    PhotoUpdate,
    QueryFace,
    QueryKind,
    SearchFilter,
    SearchQuery,
    StoredFace,
)

_OUTCOMES = {
    IndexOutcome.CREATED: search_pb2.INDEX_OUTCOME_CREATED,
    IndexOutcome.UPDATED: search_pb2.INDEX_OUTCOME_UPDATED,
    IndexOutcome.UNCHANGED: search_pb2.INDEX_OUTCOME_UNCHANGED,
}


# --- proto -> domain ---------------------------------------------------------------------------


def struct_to_dict(message: struct_pb2.Struct, what: str = "metadata") -> JsonObject:
    return wire.struct_to_dict(message, what)


def timestamp_to_datetime(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def embed_options(message: face_pb2.EmbedOptions) -> EmbedOptions:
    optional = {
        name: getattr(message, name) if message.HasField(name) else None
        for name in ("detection_threshold", "min_det_score", "min_face_size", "min_blur_score", "max_pose_angle")
    }
    return EmbedOptions(max_faces=message.max_faces, disable_quality_gates=message.disable_quality_gates, **optional)


def photo_input(request: search_pb2.IndexPhotosRequest | wire.Malformed) -> PhotoInput:
    """The domain photo; a request that does not parse or a field that cannot be converted becomes
    the photo's own error, so the stream goes on."""
    if isinstance(request, wire.Malformed):
        return PhotoInput("", "", b"", error=request.error)
    try:
        wire.check_request(request)
        metadata = struct_to_dict(request.metadata)
        try:
            taken_at = timestamp_to_datetime(request.taken_time) if request.HasField("taken_time") else None
        except (ValueError, OverflowError):
            raise InvalidArgument("taken_time is out of range") from None
    except InvalidArgument as exc:
        return PhotoInput(request.collection, request.external_id, b"", error=exc)
    return PhotoInput(
        collection=request.collection,
        external_id=request.external_id,
        image=request.image,
        metadata=metadata,
        taken_at=taken_at,
        options=embed_options(request.options),
        store_thumbnails=request.store_thumbnails if request.HasField("store_thumbnails") else None,
    )


def search_filter(message: search_pb2.SearchFilter) -> SearchFilter:
    try:
        start = timestamp_to_datetime(message.start_time) if message.HasField("start_time") else None
        end = timestamp_to_datetime(message.end_time) if message.HasField("end_time") else None
    except (ValueError, OverflowError):
        raise InvalidArgument("filter time is out of range") from None
    return SearchFilter(
        metadata=struct_to_dict(message.metadata, "filter.metadata") if message.HasField("metadata") else None,
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
        include_thumbnails=request.include_thumbnails,
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


def quality_proto(face: DetectedFace | StoredFace) -> face_pb2.Quality:
    return face_quality_proto(face.quality)


def face_quality_proto(q: FaceQuality) -> face_pb2.Quality:
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
    template = person.template
    return search_pb2.Person(
        external_id=person.external_id,
        metadata=dict_to_struct(person.metadata),
        template_quality=person.template_quality,
        create_time=datetime_to_timestamp(person.created_at),
        update_time=datetime_to_timestamp(person.updated_at),
        template_face=None
        if template is None
        else search_pb2.TemplateFace(
            box=box_proto(template.box),
            quality=face_quality_proto(template.quality),
            det_score=template.det_score,
            enroll_time=datetime_to_timestamp(person.updated_at),
        ),
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


# --- the management and analysis calls ---------------------------------------------------------

_PHOTO_ORDERS = {
    search_pb2.PHOTO_ORDER_UNSPECIFIED: PhotoOrder.NEWEST,
    search_pb2.PHOTO_ORDER_NEWEST: PhotoOrder.NEWEST,
    search_pb2.PHOTO_ORDER_EXTERNAL_ID: PhotoOrder.EXTERNAL_ID,
}


def photo_list_query(request: search_pb2.ListPhotosRequest) -> PhotoListQuery:
    order = _PHOTO_ORDERS.get(request.order)
    if order is None:
        raise InvalidArgument(f"order {request.order} is not a PhotoOrder")
    return PhotoListQuery(
        collection=request.collection,
        page_size=request.page_size,
        page_token=request.page_token,
        order=order,
        filter=search_filter(request.filter),
        include_thumbnails=request.include_thumbnails,
    )


def mask_fields(mask: field_mask_pb2.FieldMask, present: dict[str, bool]) -> frozenset[str]:
    """The fields an update changes: the mask's paths, or (empty mask) the fields that are set."""
    if mask.paths:
        return frozenset(mask.paths)
    return frozenset(name for name, is_set in present.items() if is_set)


def photo_update(request: search_pb2.UpdatePhotoRequest) -> PhotoUpdate:
    try:
        taken_at = timestamp_to_datetime(request.taken_time) if request.HasField("taken_time") else None
    except (ValueError, OverflowError):
        raise InvalidArgument("taken_time is out of range") from None
    fields = mask_fields(
        request.update_mask, {"metadata": request.HasField("metadata"), "taken_time": request.HasField("taken_time")}
    )
    return PhotoUpdate(fields=fields, metadata=struct_to_dict(request.metadata), taken_at=taken_at)


def person_update_fields(request: search_pb2.UpdatePersonRequest) -> frozenset[str]:
    return frozenset(request.update_mask.paths) or frozenset({"metadata"})


def stored_face_proto(face: StoredFace) -> search_pb2.PhotoFace:
    return search_pb2.PhotoFace(
        face_id=face.public_id,
        box=box_proto(face.box),
        quality=quality_proto(face),
        det_score=face.det_score,
        thumbnail=face.thumbnail,
        has_thumbnail=face.has_thumbnail,
    )


def photo_proto(photo: Photo) -> search_pb2.Photo:
    return search_pb2.Photo(
        external_id=photo.external_id,
        metadata=dict_to_struct(photo.metadata),
        taken_time=datetime_to_timestamp(photo.taken_at),
        create_time=datetime_to_timestamp(photo.created_at),
        update_time=datetime_to_timestamp(photo.updated_at),
        faces=[stored_face_proto(face) for face in photo.faces],
    )


def photo_match_proto(match: PhotoMatch) -> search_pb2.PhotoMatch:
    return search_pb2.PhotoMatch(
        photo_id=match.photo_id,
        face_id=match.public_face_id,
        box=box_proto(match.box),
        similarity=match.similarity,
        metadata=dict_to_struct(match.metadata),
        taken_time=datetime_to_timestamp(match.taken_at),
        thumbnail=match.thumbnail,
    )


def compare_response(result: CompareResult) -> search_pb2.CompareFacesResponse:
    return search_pb2.CompareFacesResponse(
        match=result.match,
        similarity=result.similarity,
        threshold=result.threshold,
        first_face=query_face_proto(result.first_face),
        second_face=query_face_proto(result.second_face),
        no_face_reason=result.no_face_reason,
    )


def detected_face_proto(face: DetectedFace) -> search_pb2.DetectedFace:
    points = face.landmarks
    return search_pb2.DetectedFace(
        box=box_proto(face.box),
        landmarks=[face_pb2.Point(x=points[i], y=points[i + 1]) for i in range(0, len(points) - 1, 2)],
        det_score=face.det_score,
        quality=quality_proto(face),
    )
