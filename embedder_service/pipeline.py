"""The pure image steps around the models: decode (header pixel check before any decoding),
letterbox, SCRFD decoding + NMS, face ordering, ArcFace alignment and the quality measures.
Everything here is synchronous numpy/OpenCV and runs on worker threads."""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from insightface.model_zoo.scrfd import distance2bbox, distance2kps
from insightface.utils import face_align
from PIL import Image

from embedder_service.domain import EmbedOptions, Quality, QualityFailure
from embedder_service.models import DetectorLayout
from facesearch.errors import InvalidArgument

# insightface's norm_crop calls skimage's deprecated SimilarityTransform.estimate on every face;
# the warning says nothing about our input and would flood the logs.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.utils\.face_align")

# Formats the API promises (embedder.proto ImageInput); PIL names them from the header.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "MPO"})


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """BGR uint8 (H, W, 3) as displayed (EXIF orientation applied; grey, alpha, 16-bit and palette
    images converted). The size is read from the header first, so a decompression bomb is refused
    before anything large is allocated."""
    if not data:
        raise InvalidArgument("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))  # reads the header only
            width, height = header.size
            fmt = header.format
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"image is larger than the pixel limit of {max_pixels}: {exc}") from exc
    except Exception as exc:  # PIL raises UnidentifiedImageError, SyntaxError, struct.error...
        raise InvalidArgument("bytes are not an image in a supported format (JPEG, PNG, WebP, BMP)") from exc
    if fmt not in ALLOWED_FORMATS:
        raise InvalidArgument(f"image format {fmt} is not supported (JPEG, PNG, WebP, BMP)")
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidArgument(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if fmt in ("JPEG", "MPO") and not _jpeg_complete(data):
        raise InvalidArgument("JPEG is truncated (no end-of-image marker after its last scan)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise InvalidArgument(f"{fmt} image could not be decoded (corrupt or truncated)")
    if fmt in ("JPEG", "MPO") and jpeg_data_ends_early(data, image, _imdecode_color):
        raise InvalidArgument("JPEG is truncated (its image data ends before its last block)")
    return image


def _imdecode_color(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


# Bytes that decode as entropy-coded data (no 0xFF, so no marker), fixed so results repeat.
_JPEG_FILLER = np.random.default_rng(0x4A504547).integers(0, 0xFF, 1024, dtype=np.uint8).tobytes()
_PROGRESSIVE_SOF = re.compile(rb"\xff[\xc2\xc6\xca\xce]")


def jpeg_data_ends_early(data: bytes, image: np.ndarray, decode: Callable[[bytes], np.ndarray | None]) -> bool:
    """True when a JPEG's image data stops before its last block, even with an end-of-image marker
    appended (which `_jpeg_complete` cannot tell from a whole file): the decoder then fills the
    rest with mid-grey. `image` is `data` as `decode` returned it.

    A decoder that ran out of data takes bytes put in front of the EOI as more image data, so the
    result changes; a complete file's decoder has every block and skips them. That second decode
    runs only when it can matter: for baseline files, when a corner (wherever EXIF rotation put
    the last block) is exactly the decoder's mid-grey fill; for progressive files, always (a cut
    progressive file misses refinements, not blocks)."""
    first_scan = data.find(b"\xff\xda")
    progressive = bool(_PROGRESSIVE_SOF.search(data, 0, first_scan if first_scan >= 0 else len(data)))
    if not progressive:
        corners = (image[:2, :2], image[:2, -2:], image[-2:, :2], image[-2:, -2:])
        if not any(bool((corner == 128).all()) for corner in corners):
            return False
    eoi = data.rfind(b"\xff\xd9")
    if eoi < 0:
        return False
    padded = decode(data[:eoi] + _JPEG_FILLER + data[eoi:])
    return padded is None or padded.shape != image.shape or not np.array_equal(padded, image)


def _jpeg_complete(data: bytes) -> bool:
    # Entropy-coded data never holds 0xFFD9 (0xFF is byte-stuffed), so a file cut inside or after
    # its last scan has no EOI after the last SOS. OpenCV would otherwise return grey-filled pixels.
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan) >= 0


@dataclass(frozen=True)
class Letterboxed:
    """The detector input: the image scaled to fit, pasted top-left on black (insightface's way)."""

    image: np.ndarray  # (H, W, 3) uint8, the detector's input size
    scale: float  # detector pixels per image pixel


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> Letterboxed:
    """Same arithmetic as insightface's SCRFD._detect_candidates, so boxes match to the pixel."""
    width, height = input_size
    im_ratio = float(image.shape[0]) / image.shape[1]
    model_ratio = float(height) / width
    if im_ratio > model_ratio:
        new_height = height
        new_width = int(new_height / im_ratio)
    else:
        new_width = width
        new_height = int(new_width * im_ratio)
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    scale = float(new_height) / image.shape[0]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_height, :new_width, :] = cv2.resize(image, (new_width, new_height))
    return Letterboxed(canvas, scale)


_anchor_cache: dict[tuple[int, int, int, int], np.ndarray] = {}


def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    key = (height, width, stride, num_anchors)
    centers = _anchor_cache.get(key)
    if centers is None:
        centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
        centers = (centers * stride).reshape((-1, 2))
        if num_anchors > 1:
            centers = np.stack([centers] * num_anchors, axis=1).reshape((-1, 2))
        _anchor_cache[key] = centers
    return centers


def decode_detections(
    outputs: list[np.ndarray],
    layout: DetectorLayout,
    input_size: tuple[int, int],
    scale: float,
    threshold: float,
    nms_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(dets (K, 5) = x1, y1, x2, y2, score in image pixels; kps (K, 5, 2)) after NMS, by score.
    Mirrors SCRFD.forward + _detect_candidates + detect for one image of a batch."""
    width, height = input_size
    scores_list, boxes_list, kps_list = [], [], []
    for idx, stride in enumerate(layout.strides):
        scores = outputs[idx]
        pos = np.where(scores >= threshold)[0]
        if pos.size == 0:
            continue
        centers = anchor_centers(height // stride, width // stride, stride, layout.num_anchors)[pos]
        scores_list.append(scores[pos])
        boxes_list.append(distance2bbox(centers, outputs[idx + layout.fmc][pos] * stride))
        if layout.use_kps:
            kps = distance2kps(centers, outputs[idx + 2 * layout.fmc][pos] * stride)
            kps_list.append(kps.reshape((kps.shape[0], -1, 2)))
    if not scores_list:
        return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
    scores = np.vstack(scores_list)
    order = np.argsort(-scores.ravel(), kind="stable")
    boxes = np.vstack(boxes_list) / scale
    dets = np.hstack((boxes, scores)).astype(np.float32, copy=False)[order]
    kps = (np.vstack(kps_list) / scale)[order] if layout.use_kps else np.zeros((len(dets), 5, 2), np.float32)
    keep = nms(dets, nms_threshold)
    return dets[keep], kps[keep].astype(np.float32, copy=False)


def nms(dets: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS with insightface's +1 pixel area convention (SCRFD.nms)."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[np.where(overlap <= threshold)[0]]
    return keep


def order_faces(dets: np.ndarray, image_shape: tuple[int, ...], max_faces: int) -> np.ndarray:
    """Indices of the faces to return, largest and most central first (insightface's 'default'
    max_num metric: area minus twice the squared offset from the image centre)."""
    if len(dets) == 0:
        return np.empty(0, np.int64)
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    cy, cx = image_shape[0] // 2, image_shape[1] // 2
    offsets = np.vstack([(dets[:, 0] + dets[:, 2]) / 2 - cx, (dets[:, 1] + dets[:, 3]) / 2 - cy])
    values = area - np.sum(np.power(offsets, 2.0), 0) * 2.0
    return np.argsort(values, kind="stable")[::-1][:max_faces]


def align(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The 112x112 ArcFace crop (insightface's norm_crop: similarity transform to its template)."""
    return face_align.norm_crop(image, landmark=landmarks, image_size=size)


def blur_score(crop_bgr: np.ndarray) -> float:
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


# Where the nose tip sits between the eye line and the mouth line on a level face, from
# insightface's ArcFace template (eyes y~51.6, nose 71.7, mouth 92.3).
_NOSE_LEVEL = (71.7366 - 51.5989) / (92.2848 - 51.5989)


def pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, a geometric estimate from the 5 landmarks: roll from the eye
    line; yaw from the nose's sideways offset from the eyes' midpoint relative to half the eye
    distance; pitch from the nose's height between the eye and mouth lines relative to a level face."""
    left_eye, right_eye, nose, mouth_l, mouth_r = (landmarks[i].astype(np.float64) for i in range(5))
    dx, dy = right_eye - left_eye
    roll = math.degrees(math.atan2(dy, dx))
    eye_distance = math.hypot(dx, dy)
    if eye_distance < 1e-6:
        return 90.0, 90.0, roll
    cos_r, sin_r = dx / eye_distance, dy / eye_distance
    eyes_mid = (left_eye + right_eye) / 2
    mouth_mid = (mouth_l + mouth_r) / 2

    def level(p: np.ndarray) -> tuple[float, float]:  # rotate by -roll about the eyes' midpoint
        q = p - eyes_mid
        return q[0] * cos_r + q[1] * sin_r, -q[0] * sin_r + q[1] * cos_r

    nose_x, nose_y = level(nose)
    _, mouth_y = level(mouth_mid)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, nose_x / (eye_distance / 2)))))
    if mouth_y <= 1e-6:
        pitch = 90.0
    else:
        pitch = math.degrees(math.asin(max(-1.0, min(1.0, 2.0 * (nose_y / mouth_y - _NOSE_LEVEL)))))
    return yaw, pitch, roll


def assess(
    det_score: float, box: np.ndarray, landmarks: np.ndarray, crop_bgr: np.ndarray, options: EmbedOptions
) -> Quality:
    """Measures one face and applies the gates of `options`."""
    face_size = float(min(box[2] - box[0], box[3] - box[1]))
    blur = blur_score(crop_bgr)
    yaw, pitch, roll = pose(landmarks)
    failures: list[QualityFailure] = []
    if options.quality_gates:
        if det_score < options.min_det_score:
            failures.append(QualityFailure.LOW_DETECTION_SCORE)
        if face_size < options.min_face_size:
            failures.append(QualityFailure.FACE_TOO_SMALL)
        if blur < options.min_blur_score:
            failures.append(QualityFailure.BLURRY)
        if max(abs(yaw), abs(pitch)) > options.max_pose_angle:
            failures.append(QualityFailure.EXTREME_POSE)
    # One rank for "best photo of this person": each factor is in [0, 1] and saturates where more
    # stops helping (a 112 px face already fills the recogniser's input).
    score = (
        max(0.0, min(1.0, det_score))
        * min(1.0, max(face_size, 0.0) / 112.0)
        * (blur / (blur + 100.0))
        * max(0.0, math.cos(math.radians(min(abs(yaw), 90.0))))
        * max(0.0, math.cos(math.radians(min(abs(pitch), 90.0))))
    )
    return Quality(
        blur_score=blur,
        face_size=face_size,
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        score=float(score),
        passed=not failures,
        failures=tuple(failures),
    )


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
