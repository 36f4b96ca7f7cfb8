from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QualityFailure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_FAILURE_UNSPECIFIED: _ClassVar[QualityFailure]
    QUALITY_FAILURE_LOW_DETECTION_SCORE: _ClassVar[QualityFailure]
    QUALITY_FAILURE_FACE_TOO_SMALL: _ClassVar[QualityFailure]
    QUALITY_FAILURE_BLURRY: _ClassVar[QualityFailure]
    QUALITY_FAILURE_EXTREME_POSE: _ClassVar[QualityFailure]
QUALITY_FAILURE_UNSPECIFIED: QualityFailure
QUALITY_FAILURE_LOW_DETECTION_SCORE: QualityFailure
QUALITY_FAILURE_FACE_TOO_SMALL: QualityFailure
QUALITY_FAILURE_BLURRY: QualityFailure
QUALITY_FAILURE_EXTREME_POSE: QualityFailure

class BoundingBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Quality(_message.Message):
    __slots__ = ("blur_score", "face_size", "yaw", "pitch", "roll", "score", "passed", "failures")
    BLUR_SCORE_FIELD_NUMBER: _ClassVar[int]
    FACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    blur_score: float
    face_size: float
    yaw: float
    pitch: float
    roll: float
    score: float
    passed: bool
    failures: _containers.RepeatedScalarFieldContainer[QualityFailure]
    def __init__(self, blur_score: _Optional[float] = ..., face_size: _Optional[float] = ..., yaw: _Optional[float] = ..., pitch: _Optional[float] = ..., roll: _Optional[float] = ..., score: _Optional[float] = ..., passed: _Optional[bool] = ..., failures: _Optional[_Iterable[_Union[QualityFailure, str]]] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "landmarks", "det_score", "quality", "embedding", "aligned_crop")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_CROP_FIELD_NUMBER: _ClassVar[int]
    box: BoundingBox
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    det_score: float
    quality: Quality
    embedding: _containers.RepeatedScalarFieldContainer[float]
    aligned_crop: bytes
    def __init__(self, box: _Optional[_Union[BoundingBox, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., det_score: _Optional[float] = ..., quality: _Optional[_Union[Quality, _Mapping]] = ..., embedding: _Optional[_Iterable[float]] = ..., aligned_crop: _Optional[bytes] = ...) -> None: ...

class EmbedOptions(_message.Message):
    __slots__ = ("max_faces", "detection_threshold", "min_det_score", "min_face_size", "min_blur_score", "max_pose_angle", "disable_quality_gates", "return_aligned_crops", "return_landmarks")
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    DETECTION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    MIN_FACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_BLUR_SCORE_FIELD_NUMBER: _ClassVar[int]
    MAX_POSE_ANGLE_FIELD_NUMBER: _ClassVar[int]
    DISABLE_QUALITY_GATES_FIELD_NUMBER: _ClassVar[int]
    RETURN_ALIGNED_CROPS_FIELD_NUMBER: _ClassVar[int]
    RETURN_LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    max_faces: int
    detection_threshold: float
    min_det_score: float
    min_face_size: float
    min_blur_score: float
    max_pose_angle: float
    disable_quality_gates: bool
    return_aligned_crops: bool
    return_landmarks: bool
    def __init__(self, max_faces: _Optional[int] = ..., detection_threshold: _Optional[float] = ..., min_det_score: _Optional[float] = ..., min_face_size: _Optional[float] = ..., min_blur_score: _Optional[float] = ..., max_pose_angle: _Optional[float] = ..., disable_quality_gates: _Optional[bool] = ..., return_aligned_crops: _Optional[bool] = ..., return_landmarks: _Optional[bool] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...
