import datetime

from facesearch.v1 import face_pb2 as _face_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_OUTCOME_UNSPECIFIED: _ClassVar[IndexOutcome]
    INDEX_OUTCOME_CREATED: _ClassVar[IndexOutcome]
    INDEX_OUTCOME_UPDATED: _ClassVar[IndexOutcome]
    INDEX_OUTCOME_UNCHANGED: _ClassVar[IndexOutcome]

class PhotoOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHOTO_ORDER_UNSPECIFIED: _ClassVar[PhotoOrder]
    PHOTO_ORDER_NEWEST: _ClassVar[PhotoOrder]
    PHOTO_ORDER_EXTERNAL_ID: _ClassVar[PhotoOrder]
INDEX_OUTCOME_UNSPECIFIED: IndexOutcome
INDEX_OUTCOME_CREATED: IndexOutcome
INDEX_OUTCOME_UPDATED: IndexOutcome
INDEX_OUTCOME_UNCHANGED: IndexOutcome
PHOTO_ORDER_UNSPECIFIED: PhotoOrder
PHOTO_ORDER_NEWEST: PhotoOrder
PHOTO_ORDER_EXTERNAL_ID: PhotoOrder

class Collection(_message.Message):
    __slots__ = ("name", "display_name", "create_time", "photo_count", "face_count", "person_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PHOTO_COUNT_FIELD_NUMBER: _ClassVar[int]
    FACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PERSON_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    create_time: _timestamp_pb2.Timestamp
    photo_count: int
    face_count: int
    person_count: int
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., photo_count: _Optional[int] = ..., face_count: _Optional[int] = ..., person_count: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "display_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("photos_deleted", "faces_deleted", "persons_deleted")
    PHOTOS_DELETED_FIELD_NUMBER: _ClassVar[int]
    FACES_DELETED_FIELD_NUMBER: _ClassVar[int]
    PERSONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    photos_deleted: int
    faces_deleted: int
    persons_deleted: int
    def __init__(self, photos_deleted: _Optional[int] = ..., faces_deleted: _Optional[int] = ..., persons_deleted: _Optional[int] = ...) -> None: ...

class IndexPhotosRequest(_message.Message):
    __slots__ = ("collection", "external_id", "image", "metadata", "taken_time", "options", "store_thumbnails")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAKEN_TIME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STORE_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    image: bytes
    metadata: _struct_pb2.Struct
    taken_time: _timestamp_pb2.Timestamp
    options: _face_pb2.EmbedOptions
    store_thumbnails: bool
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ..., image: _Optional[bytes] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., taken_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., options: _Optional[_Union[_face_pb2.EmbedOptions, _Mapping]] = ..., store_thumbnails: _Optional[bool] = ...) -> None: ...

class RejectedFace(_message.Message):
    __slots__ = ("box", "quality")
    BOX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    box: _face_pb2.BoundingBox
    quality: _face_pb2.Quality
    def __init__(self, box: _Optional[_Union[_face_pb2.BoundingBox, _Mapping]] = ..., quality: _Optional[_Union[_face_pb2.Quality, _Mapping]] = ...) -> None: ...

class IndexPhotosResponse(_message.Message):
    __slots__ = ("external_id", "status", "outcome", "faces_indexed", "rejected_faces", "no_face_reason")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FACES_INDEXED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FACES_FIELD_NUMBER: _ClassVar[int]
    NO_FACE_REASON_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    status: _status_pb2.Status
    outcome: IndexOutcome
    faces_indexed: int
    rejected_faces: _containers.RepeatedCompositeFieldContainer[RejectedFace]
    no_face_reason: str
    def __init__(self, external_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., outcome: _Optional[_Union[IndexOutcome, str]] = ..., faces_indexed: _Optional[int] = ..., rejected_faces: _Optional[_Iterable[_Union[RejectedFace, _Mapping]]] = ..., no_face_reason: _Optional[str] = ...) -> None: ...

class DeletePhotoRequest(_message.Message):
    __slots__ = ("collection", "external_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class DeletePhotoResponse(_message.Message):
    __slots__ = ("faces_deleted",)
    FACES_DELETED_FIELD_NUMBER: _ClassVar[int]
    faces_deleted: int
    def __init__(self, faces_deleted: _Optional[int] = ...) -> None: ...

class ImageQuery(_message.Message):
    __slots__ = ("image", "all_faces")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ALL_FACES_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    all_faces: bool
    def __init__(self, image: _Optional[bytes] = ..., all_faces: _Optional[bool] = ...) -> None: ...

class MultiImageQuery(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EmbeddingQuery(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchFilter(_message.Message):
    __slots__ = ("metadata", "start_time", "end_time", "photo_ids")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PHOTO_IDS_FIELD_NUMBER: _ClassVar[int]
    metadata: _struct_pb2.Struct
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    photo_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., photo_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "image", "images", "embedding", "face_id", "top_k", "min_similarity", "filter", "page_token", "include_thumbnails")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: ImageQuery
    images: MultiImageQuery
    embedding: EmbeddingQuery
    face_id: str
    top_k: int
    min_similarity: float
    filter: SearchFilter
    page_token: str
    include_thumbnails: bool
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[ImageQuery, _Mapping]] = ..., images: _Optional[_Union[MultiImageQuery, _Mapping]] = ..., embedding: _Optional[_Union[EmbeddingQuery, _Mapping]] = ..., face_id: _Optional[str] = ..., top_k: _Optional[int] = ..., min_similarity: _Optional[float] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., page_token: _Optional[str] = ..., include_thumbnails: _Optional[bool] = ...) -> None: ...

class PhotoMatch(_message.Message):
    __slots__ = ("photo_id", "face_id", "box", "similarity", "metadata", "taken_time", "thumbnail")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAKEN_TIME_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    face_id: str
    box: _face_pb2.BoundingBox
    similarity: float
    metadata: _struct_pb2.Struct
    taken_time: _timestamp_pb2.Timestamp
    thumbnail: bytes
    def __init__(self, photo_id: _Optional[str] = ..., face_id: _Optional[str] = ..., box: _Optional[_Union[_face_pb2.BoundingBox, _Mapping]] = ..., similarity: _Optional[float] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., taken_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class QueryFace(_message.Message):
    __slots__ = ("box", "quality", "image_index")
    BOX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    box: _face_pb2.BoundingBox
    quality: _face_pb2.Quality
    image_index: int
    def __init__(self, box: _Optional[_Union[_face_pb2.BoundingBox, _Mapping]] = ..., quality: _Optional[_Union[_face_pb2.Quality, _Mapping]] = ..., image_index: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("matches", "next_page_token", "query_faces", "no_face_reason")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACES_FIELD_NUMBER: _ClassVar[int]
    NO_FACE_REASON_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[PhotoMatch]
    next_page_token: str
    query_faces: _containers.RepeatedCompositeFieldContainer[QueryFace]
    no_face_reason: str
    def __init__(self, matches: _Optional[_Iterable[_Union[PhotoMatch, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., query_faces: _Optional[_Iterable[_Union[QueryFace, _Mapping]]] = ..., no_face_reason: _Optional[str] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("external_id", "metadata", "template_quality", "create_time", "update_time", "template_face")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FACE_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    metadata: _struct_pb2.Struct
    template_quality: float
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    template_face: TemplateFace
    def __init__(self, external_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., template_quality: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., template_face: _Optional[_Union[TemplateFace, _Mapping]] = ...) -> None: ...

class TemplateFace(_message.Message):
    __slots__ = ("box", "quality", "det_score", "enroll_time")
    BOX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    ENROLL_TIME_FIELD_NUMBER: _ClassVar[int]
    box: _face_pb2.BoundingBox
    quality: _face_pb2.Quality
    det_score: float
    enroll_time: _timestamp_pb2.Timestamp
    def __init__(self, box: _Optional[_Union[_face_pb2.BoundingBox, _Mapping]] = ..., quality: _Optional[_Union[_face_pb2.Quality, _Mapping]] = ..., det_score: _Optional[float] = ..., enroll_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnrollPersonRequest(_message.Message):
    __slots__ = ("collection", "external_id", "images", "metadata")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    metadata: _struct_pb2.Struct
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EnrollImageResult(_message.Message):
    __slots__ = ("status", "face")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    face: QueryFace
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., face: _Optional[_Union[QueryFace, _Mapping]] = ...) -> None: ...

class EnrollPersonResponse(_message.Message):
    __slots__ = ("person", "template_replaced", "created", "images")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_REPLACED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    person: Person
    template_replaced: bool
    created: bool
    images: _containers.RepeatedCompositeFieldContainer[EnrollImageResult]
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ..., template_replaced: _Optional[bool] = ..., created: _Optional[bool] = ..., images: _Optional[_Iterable[_Union[EnrollImageResult, _Mapping]]] = ...) -> None: ...

class FaceQuery(_message.Message):
    __slots__ = ("image", "embedding")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    embedding: EmbeddingQuery
    def __init__(self, image: _Optional[bytes] = ..., embedding: _Optional[_Union[EmbeddingQuery, _Mapping]] = ...) -> None: ...

class PersonMatch(_message.Message):
    __slots__ = ("person", "similarity")
    PERSON_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    person: Person
    similarity: float
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ..., similarity: _Optional[float] = ...) -> None: ...

class IdentifyPersonRequest(_message.Message):
    __slots__ = ("collection", "face", "top_k", "threshold")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    collection: str
    face: FaceQuery
    top_k: int
    threshold: float
    def __init__(self, collection: _Optional[str] = ..., face: _Optional[_Union[FaceQuery, _Mapping]] = ..., top_k: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class IdentifyPersonResponse(_message.Message):
    __slots__ = ("candidates", "threshold", "query_face", "no_face_reason")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACE_FIELD_NUMBER: _ClassVar[int]
    NO_FACE_REASON_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[PersonMatch]
    threshold: float
    query_face: QueryFace
    no_face_reason: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[PersonMatch, _Mapping]]] = ..., threshold: _Optional[float] = ..., query_face: _Optional[_Union[QueryFace, _Mapping]] = ..., no_face_reason: _Optional[str] = ...) -> None: ...

class VerifyPersonRequest(_message.Message):
    __slots__ = ("collection", "person_id", "face", "threshold")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    collection: str
    person_id: str
    face: FaceQuery
    threshold: float
    def __init__(self, collection: _Optional[str] = ..., person_id: _Optional[str] = ..., face: _Optional[_Union[FaceQuery, _Mapping]] = ..., threshold: _Optional[float] = ...) -> None: ...

class VerifyPersonResponse(_message.Message):
    __slots__ = ("match", "similarity", "threshold", "query_face", "no_face_reason")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    QUERY_FACE_FIELD_NUMBER: _ClassVar[int]
    NO_FACE_REASON_FIELD_NUMBER: _ClassVar[int]
    match: bool
    similarity: float
    threshold: float
    query_face: QueryFace
    no_face_reason: str
    def __init__(self, match: _Optional[bool] = ..., similarity: _Optional[float] = ..., threshold: _Optional[float] = ..., query_face: _Optional[_Union[QueryFace, _Mapping]] = ..., no_face_reason: _Optional[str] = ...) -> None: ...

class DeletePersonRequest(_message.Message):
    __slots__ = ("collection", "external_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class DeletePersonResponse(_message.Message):
    __slots__ = ("faces_deleted",)
    FACES_DELETED_FIELD_NUMBER: _ClassVar[int]
    faces_deleted: int
    def __init__(self, faces_deleted: _Optional[int] = ...) -> None: ...

class PhotoFace(_message.Message):
    __slots__ = ("face_id", "box", "quality", "det_score", "thumbnail", "has_thumbnail")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    HAS_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    face_id: str
    box: _face_pb2.BoundingBox
    quality: _face_pb2.Quality
    det_score: float
    thumbnail: bytes
    has_thumbnail: bool
    def __init__(self, face_id: _Optional[str] = ..., box: _Optional[_Union[_face_pb2.BoundingBox, _Mapping]] = ..., quality: _Optional[_Union[_face_pb2.Quality, _Mapping]] = ..., det_score: _Optional[float] = ..., thumbnail: _Optional[bytes] = ..., has_thumbnail: _Optional[bool] = ...) -> None: ...

class Photo(_message.Message):
    __slots__ = ("external_id", "metadata", "taken_time", "create_time", "update_time", "faces")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAKEN_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    metadata: _struct_pb2.Struct
    taken_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    faces: _containers.RepeatedCompositeFieldContainer[PhotoFace]
    def __init__(self, external_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., taken_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[PhotoFace, _Mapping]]] = ...) -> None: ...

class ListPhotosRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token", "order", "filter", "include_thumbnails")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    order: PhotoOrder
    filter: SearchFilter
    include_thumbnails: bool
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order: _Optional[_Union[PhotoOrder, str]] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., include_thumbnails: _Optional[bool] = ...) -> None: ...

class ListPhotosResponse(_message.Message):
    __slots__ = ("photos", "next_page_token")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[Photo]
    next_page_token: str
    def __init__(self, photos: _Optional[_Iterable[_Union[Photo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPhotoRequest(_message.Message):
    __slots__ = ("collection", "external_id", "include_thumbnails")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    include_thumbnails: bool
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ..., include_thumbnails: _Optional[bool] = ...) -> None: ...

class GetPhotoResponse(_message.Message):
    __slots__ = ("photo",)
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    photo: Photo
    def __init__(self, photo: _Optional[_Union[Photo, _Mapping]] = ...) -> None: ...

class UpdatePhotoRequest(_message.Message):
    __slots__ = ("collection", "external_id", "metadata", "taken_time", "update_mask")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAKEN_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    metadata: _struct_pb2.Struct
    taken_time: _timestamp_pb2.Timestamp
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., taken_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePhotoResponse(_message.Message):
    __slots__ = ("photo",)
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    photo: Photo
    def __init__(self, photo: _Optional[_Union[Photo, _Mapping]] = ...) -> None: ...

class DeleteFaceRequest(_message.Message):
    __slots__ = ("collection", "face_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    face_id: str
    def __init__(self, collection: _Optional[str] = ..., face_id: _Optional[str] = ...) -> None: ...

class DeleteFaceResponse(_message.Message):
    __slots__ = ("photo_id", "faces_remaining")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_REMAINING_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    faces_remaining: int
    def __init__(self, photo_id: _Optional[str] = ..., faces_remaining: _Optional[int] = ...) -> None: ...

class GetFaceThumbnailRequest(_message.Message):
    __slots__ = ("collection", "face_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    face_id: str
    def __init__(self, collection: _Optional[str] = ..., face_id: _Optional[str] = ...) -> None: ...

class GetFaceThumbnailResponse(_message.Message):
    __slots__ = ("thumbnail", "photo_id")
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    thumbnail: bytes
    photo_id: str
    def __init__(self, thumbnail: _Optional[bytes] = ..., photo_id: _Optional[str] = ...) -> None: ...

class ListPersonsRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPersonsResponse(_message.Message):
    __slots__ = ("persons", "next_page_token")
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    persons: _containers.RepeatedCompositeFieldContainer[Person]
    next_page_token: str
    def __init__(self, persons: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPersonRequest(_message.Message):
    __slots__ = ("collection", "external_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class GetPersonResponse(_message.Message):
    __slots__ = ("person",)
    PERSON_FIELD_NUMBER: _ClassVar[int]
    person: Person
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ...) -> None: ...

class UpdatePersonRequest(_message.Message):
    __slots__ = ("collection", "external_id", "metadata", "update_mask")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    metadata: _struct_pb2.Struct
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePersonResponse(_message.Message):
    __slots__ = ("person",)
    PERSON_FIELD_NUMBER: _ClassVar[int]
    person: Person
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ...) -> None: ...

class CompareFacesRequest(_message.Message):
    __slots__ = ("first", "second", "threshold")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    first: FaceQuery
    second: FaceQuery
    threshold: float
    def __init__(self, first: _Optional[_Union[FaceQuery, _Mapping]] = ..., second: _Optional[_Union[FaceQuery, _Mapping]] = ..., threshold: _Optional[float] = ...) -> None: ...

class CompareFacesResponse(_message.Message):
    __slots__ = ("match", "similarity", "threshold", "first_face", "second_face", "no_face_reason")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FIRST_FACE_FIELD_NUMBER: _ClassVar[int]
    SECOND_FACE_FIELD_NUMBER: _ClassVar[int]
    NO_FACE_REASON_FIELD_NUMBER: _ClassVar[int]
    match: bool
    similarity: float
    threshold: float
    first_face: QueryFace
    second_face: QueryFace
    no_face_reason: str
    def __init__(self, match: _Optional[bool] = ..., similarity: _Optional[float] = ..., threshold: _Optional[float] = ..., first_face: _Optional[_Union[QueryFace, _Mapping]] = ..., second_face: _Optional[_Union[QueryFace, _Mapping]] = ..., no_face_reason: _Optional[str] = ...) -> None: ...

class DetectFacesRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    options: _face_pb2.EmbedOptions
    def __init__(self, image: _Optional[bytes] = ..., options: _Optional[_Union[_face_pb2.EmbedOptions, _Mapping]] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("box", "landmarks", "det_score", "quality")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    box: _face_pb2.BoundingBox
    landmarks: _containers.RepeatedCompositeFieldContainer[_face_pb2.Point]
    det_score: float
    quality: _face_pb2.Quality
    def __init__(self, box: _Optional[_Union[_face_pb2.BoundingBox, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[_face_pb2.Point, _Mapping]]] = ..., det_score: _Optional[float] = ..., quality: _Optional[_Union[_face_pb2.Quality, _Mapping]] = ...) -> None: ...

class DetectFacesResponse(_message.Message):
    __slots__ = ("faces",)
    FACES_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[DetectedFace]
    def __init__(self, faces: _Optional[_Iterable[_Union[DetectedFace, _Mapping]]] = ...) -> None: ...
