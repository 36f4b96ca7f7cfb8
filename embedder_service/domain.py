"""Domain types of the embedder: what the core takes (options, inputs) and returns (faces), free of
protobuf so the core never sees the wire and the servicer only converts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from embedder_service.config import EmbedderSettings
from facesearch.errors import InvalidArgument


class InputKind(StrEnum):
    """What the bytes of an image input are."""

    PHOTO = "photo"
    ALIGNED_FACE = "aligned_face"


class QualityFailure(StrEnum):
    """Why a face failed the quality gates (mirrors facesearch.v1.QualityFailure)."""

    LOW_DETECTION_SCORE = "low_detection_score"
    FACE_TOO_SMALL = "face_too_small"
    BLURRY = "blurry"
    EXTREME_POSE = "extreme_pose"


@dataclass(frozen=True)
class ImageInput:
    kind: InputKind
    data: bytes


@dataclass(frozen=True)
class RequestOptions:
    """Options of one image as the client sent them; None = use the server's default."""

    max_faces: int = 0
    detection_threshold: float | None = None
    min_det_score: float | None = None
    min_face_size: float | None = None
    min_blur_score: float | None = None
    max_pose_angle: float | None = None
    disable_quality_gates: bool = False
    return_aligned_crops: bool = False
    return_landmarks: bool = False


@dataclass(frozen=True)
class EmbedOptions:
    """Options of one image with every default filled in and every value checked."""

    max_faces: int
    detection_threshold: float
    min_det_score: float
    min_face_size: float
    min_blur_score: float
    max_pose_angle: float
    quality_gates: bool
    return_aligned_crops: bool
    return_landmarks: bool

    @classmethod
    def resolve(cls, requested: RequestOptions, settings: EmbedderSettings) -> EmbedOptions:
        """Fills defaults from `settings` and refuses values out of range with InvalidArgument."""
        quality = settings.quality

        def pick(name: str, value: float | None, default: float, low: float, high: float) -> float:
            chosen = default if value is None else float(value)
            if not math.isfinite(chosen) or not low <= chosen <= high:
                raise InvalidArgument(f"option {name}={value} is out of range [{low}, {high}]")
            return chosen

        if requested.max_faces < 0:
            raise InvalidArgument(f"option max_faces={requested.max_faces} must not be negative")
        cap = settings.max_faces_per_image
        max_faces = cap if requested.max_faces == 0 else min(requested.max_faces, cap)
        return cls(
            max_faces=max_faces,
            detection_threshold=pick(
                "detection_threshold", requested.detection_threshold, settings.detection_threshold, 0.0, 1.0
            ),
            min_det_score=pick("min_det_score", requested.min_det_score, quality.min_det_score, 0.0, 1.0),
            min_face_size=pick("min_face_size", requested.min_face_size, quality.min_face_size, 0.0, 1e5),
            min_blur_score=pick("min_blur_score", requested.min_blur_score, quality.min_blur_score, 0.0, 1e9),
            max_pose_angle=pick("max_pose_angle", requested.max_pose_angle, quality.max_pose_angle, 0.0, 180.0),
            quality_gates=not requested.disable_quality_gates,
            return_aligned_crops=requested.return_aligned_crops,
            return_landmarks=requested.return_landmarks,
        )


@dataclass(frozen=True)
class Quality:
    blur_score: float
    face_size: float
    yaw: float
    pitch: float
    roll: float
    score: float
    passed: bool
    failures: tuple[QualityFailure, ...] = ()


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2) and 5 landmarks in pixels of the displayed image."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (5, 2) float32
    det_score: float
    quality: Quality
    embedding: np.ndarray  # (embedding_size,) float32, unit length
    aligned_crop_png: bytes = b""


@dataclass(frozen=True)
class ImageResult:
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)


@dataclass(frozen=True)
class ModelInfo:
    pack_name: str
    embedding_size: int
    detector_input_size: tuple[int, int]  # (width, height)
    execution_provider: str
    detector_file: str
    recognizer_file: str
    library_versions: dict[str, str]
    max_batch_size: int


@dataclass(frozen=True)
class StreamRequest:
    """One item of a stream; `error` is set when the request itself could not be read."""

    request_id: str
    input: ImageInput | None
    options: RequestOptions
    error: InvalidArgument | None = None
