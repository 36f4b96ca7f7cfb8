"""Domain types of the search service, free of protobuf and SQL: what the servicer converts
requests into and what the core layer and repository pass around."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    @classmethod
    def from_list(cls, values: list[float]) -> Box:
        return cls(*(float(v) for v in values))


@dataclass(frozen=True)
class FaceQuality:
    blur_score: float = 0.0
    face_size: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    score: float = 0.0
    passed: bool = True
    # Names of the proto QualityFailure values that failed, e.g. "QUALITY_FAILURE_BLURRY".
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectedFace:
    """A face as the embedder returned it; `embedding` is float32, unit length."""

    box: Box
    det_score: float
    quality: FaceQuality
    embedding: np.ndarray
    landmarks: tuple[float, ...] = ()


@dataclass(frozen=True)
class EmbedOptions:
    """Options passed through to the embedder; None = the embedder's default."""

    max_faces: int = 0
    detection_threshold: float | None = None
    min_det_score: float | None = None
    min_face_size: float | None = None
    min_blur_score: float | None = None
    max_pose_angle: float | None = None
    disable_quality_gates: bool = False


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    display_name: str
    created_at: datetime
    hnsw_indexed: bool = False
    photo_count: int = 0
    face_count: int = 0
    person_count: int = 0
    # Changes (same transaction) with every change of the collection's faces; see descriptor_cache.
    faces_version: int = 0


@dataclass(frozen=True)
class PhotoInput:
    """One photo of an IndexPhotos stream."""

    collection: str
    external_id: str
    image: bytes
    metadata: JsonObject = field(default_factory=dict)
    taken_at: datetime | None = None
    options: EmbedOptions = EmbedOptions()
    # Store face thumbnails; None = the server's setting.
    store_thumbnails: bool | None = None
    # Set when the request could not even be converted (e.g. a timestamp out of range): the photo
    # gets this error as its result and the stream goes on.
    error: Exception | None = None


@dataclass(frozen=True)
class PhotoWrite:
    """A photo with the faces to store for it, as the repository's bulk path takes it."""

    external_id: str
    content_hash: bytes
    metadata: JsonObject
    taken_at: datetime | None
    faces: list[DetectedFace]
    # JPEG thumbnails, one per face (None where cutting one failed); empty when not stored.
    thumbnails: tuple[bytes | None, ...] = ()


class IndexOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class IndexResult:
    external_id: str
    # None when stored; otherwise the error (the photo was not stored).
    error: Exception | None = None
    outcome: IndexOutcome | None = None
    faces_indexed: int = 0
    rejected: tuple[DetectedFace, ...] = ()
    no_face_reason: str = ""


@dataclass(frozen=True)
class SearchFilter:
    metadata: JsonObject | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    photo_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PhotoMatch:
    photo_id: str
    face_id: int
    box: Box
    similarity: float
    metadata: JsonObject
    taken_at: datetime
    # Internal keys of the keyset cursor.
    distance: float = 0.0
    photo_key: int = 0
    thumbnail: bytes = b""
    # The opaque id clients see for `face_id` (search_service.public_ids).
    public_face_id: str = ""


@dataclass(frozen=True)
class QueryFace:
    face: DetectedFace
    image_index: int


@dataclass(frozen=True)
class SearchResult:
    matches: list[PhotoMatch]
    next_page_token: str = ""
    query_faces: list[QueryFace] = field(default_factory=list)
    no_face_reason: str = ""
    # What this result's page tokens are bound to, and whether it came from the descriptor cache
    # (see search.PageToken).
    query_hash: str = ""
    cached: bool = False


@dataclass(frozen=True)
class TemplateFace:
    """The face a person's template came from."""

    box: Box
    det_score: float
    quality: FaceQuality


@dataclass(frozen=True)
class Person:
    external_id: str
    metadata: JsonObject
    template_quality: float
    created_at: datetime
    updated_at: datetime
    id: int = 0
    # Filled where the caller asked for it (GetPerson, ListPersons).
    template: TemplateFace | None = None


@dataclass(frozen=True)
class EnrollImageResult:
    error: Exception | None
    face: QueryFace | None


@dataclass(frozen=True)
class EnrollResult:
    person: Person
    template_replaced: bool
    created: bool
    images: list[EnrollImageResult]


@dataclass(frozen=True)
class PersonMatch:
    person: Person
    similarity: float


@dataclass(frozen=True)
class IdentifyResult:
    candidates: list[PersonMatch]
    threshold: float
    query_face: QueryFace | None
    no_face_reason: str = ""


@dataclass(frozen=True)
class VerifyResult:
    match: bool
    similarity: float
    threshold: float
    query_face: QueryFace | None
    no_face_reason: str = ""


class QueryKind(StrEnum):
    IMAGE = "image"
    IMAGES = "images"
    EMBEDDING = "embedding"
    FACE_ID = "face_id"


@dataclass(frozen=True)
class SearchQuery:
    collection: str
    kind: QueryKind
    image: bytes = b""
    all_faces: bool = False
    images: tuple[bytes, ...] = ()
    embedding: tuple[float, ...] = ()
    face_id: str = ""
    top_k: int = 0
    min_similarity: float | None = None
    filter: SearchFilter = SearchFilter()
    page_token: str = ""
    include_thumbnails: bool = False


@dataclass(frozen=True)
class FaceSource:
    """A face to identify or verify: an image (its best face) or an embedding."""

    image: bytes | None = None
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class StoredFace:
    """A face stored for a photo."""

    id: int
    box: Box
    det_score: float
    quality: FaceQuality
    has_thumbnail: bool = False
    thumbnail: bytes = b""
    # The opaque id clients see (search_service.public_ids); `id` never leaves the service.
    public_id: str = ""


@dataclass(frozen=True)
class Photo:
    """An indexed photo with its stored faces."""

    external_id: str
    metadata: JsonObject
    taken_at: datetime
    created_at: datetime
    updated_at: datetime
    faces: tuple[StoredFace, ...] = ()
    id: int = 0


class PhotoOrder(StrEnum):
    NEWEST = "newest"
    EXTERNAL_ID = "external_id"


@dataclass(frozen=True)
class PhotoListQuery:
    collection: str
    page_size: int = 0
    page_token: str = ""
    order: PhotoOrder = PhotoOrder.NEWEST
    filter: SearchFilter = SearchFilter()
    include_thumbnails: bool = False


@dataclass(frozen=True)
class PhotoPage:
    photos: list[Photo]
    next_page_token: str = ""


@dataclass(frozen=True)
class PhotoUpdate:
    """Which fields of a photo to change ("metadata", "taken_time") and their new values; an unset
    taken time goes back to the index time."""

    fields: frozenset[str]
    metadata: JsonObject = field(default_factory=dict)
    taken_at: datetime | None = None


@dataclass(frozen=True)
class PersonPage:
    persons: list[Person]
    next_page_token: str = ""


@dataclass(frozen=True)
class CompareResult:
    match: bool
    similarity: float
    threshold: float
    first_face: QueryFace | None
    second_face: QueryFace | None
    no_face_reason: str = ""
