"""Synthetic photos of the "faces" that the generated model pack (tests/model_pack.py) detects and embeds.

A face is a skin-coloured disc on a dark background with five dark marks (eyes, nose, mouth corners)
at fixed fractions of the radius; its identity is a seeded low-frequency colour pattern inside the
disc, so the same identity drawn anywhere, at any size or JPEG quality, embeds close to itself.
Images are BGR uint8 like cv2 and insightface use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from tests.model_pack import (
    ALIGNED_FACE_CENTRE,
    ALIGNED_FACE_RADIUS,
    LANDMARK_FRACTIONS,
    REC_POOL,
    REC_SIZE,
    SKIN_RED_HIGH,
    SKIN_RED_LOW,
    recogniser_window,
)

# Colours are RGB here and flipped to BGR when drawn. Every face pixel keeps red well above the
# detector's SKIN_RED_HIGH (the marks too: dark, but red), every background pixel below SKIN_RED_LOW.
SKIN_RGB = np.array([220.0, 170.0, 140.0])
PATTERN_RMS_RGB = np.array([15.0, 28.0, 28.0])
FACE_RED_MIN = SKIN_RED_HIGH + 20.0
MARK_RGB = np.array([165.0, 40.0, 35.0])
MARK_RADIUS_FRACTIONS = np.array([0.08, 0.08, 0.06, 0.05, 0.05])
BACKGROUND_RED_MAX = SKIN_RED_LOW - 10.0
# The detector measures each face in a window around it, so it needs background between faces: at least
# this many times the larger radius, edge to edge (closer faces may be missed, never merged into one).
MIN_GAP_RADII = 1.5
_PATTERN_ORDER = 5  # cosine basis cos(pi*k*(u+1)/2)*cos(pi*l*(v+1)/2), 0 <= k, l < 5, not both 0
SEPARATED_IDENTITIES = 64

assert MARK_RGB[0] >= FACE_RED_MIN


@dataclass(frozen=True)
class FaceSpec:
    """One drawn face: centre and radius in image pixels, identity = the pattern's seed."""

    cx: float
    cy: float
    radius: float
    identity: int = 0

    @property
    def box(self) -> np.ndarray:
        return expected_box(self.cx, self.cy, self.radius)

    @property
    def landmarks(self) -> np.ndarray:
        return expected_landmarks(self.cx, self.cy, self.radius)


def expected_landmarks(cx: float, cy: float, radius: float) -> np.ndarray:
    """[5, 2] float32 (x, y): left eye, right eye, nose, left and right mouth corner, where drawn."""
    return (np.array([cx, cy], np.float32) + radius * LANDMARK_FRACTIONS).astype(np.float32)


def expected_box(cx: float, cy: float, radius: float) -> np.ndarray:
    """[4] float32 x1, y1, x2, y2: the disc's bounding box (pixel centres at integer coordinates)."""
    return np.array([cx - radius, cy - radius, cx + radius, cy + radius], np.float32)


def _scaled(coefficients: np.ndarray) -> np.ndarray:
    """Scale [3, K*K] basis weights so each channel's pattern has its PATTERN_RMS_RGB over the disc."""
    v, u = np.mgrid[-1:1:64j, -1:1:64j]
    inside = u * u + v * v <= 1.0
    values = coefficients @ _basis(u[inside], v[inside])
    return coefficients * (PATTERN_RMS_RGB / np.sqrt((values**2).mean(axis=1)))[:, None]


@lru_cache(maxsize=1)
def _aligned_features() -> np.ndarray:
    """[C, F] how each basis function (per channel) shows in the generated recogniser's features for a
    face aligned to ArcFace's template (a linear map, ignoring clipping): lets identities be chosen far
    apart where it matters."""
    size, pool = REC_SIZE, REC_POOL
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    u, v = (xx - ALIGNED_FACE_CENTRE[0]) / ALIGNED_FACE_RADIUS, (yy - ALIGNED_FACE_CENTRE[1]) / ALIGNED_FACE_RADIUS
    norm = np.maximum(np.hypot(u, v), 1.0)
    window = recogniser_window().astype(np.float64)
    cells = size // pool
    pooled_window = window.reshape(cells, pool, cells, pool).mean(axis=(1, 3))
    basis = _basis(u / norm, v / norm).reshape(-1, cells, pool, cells, pool)
    pooled = (basis * window.reshape(1, cells, pool, cells, pool)).mean(axis=(2, 4))
    centred = pooled - pooled.sum(axis=(1, 2), keepdims=True) / pooled_window.sum() * pooled_window
    return centred.reshape(len(basis), -1)


_identity_lock = threading.Lock()  # photos may be drawn from several threads (load generators)
_identity_table: list[np.ndarray] = []  # scaled weights of identities 0.. chosen so far
_identity_features: list[np.ndarray] = []  # their unit feature vectors


def _pattern_coefficients(identity: int) -> np.ndarray:
    """[3, K*K] per-channel basis weights of an identity's pattern (never a constant term: everyone has
    the same mean colour).

    Identities below SEPARATED_IDENTITIES are drawn in order, each re-drawn until its aligned features
    have cosine < 0.3 with every earlier one's, so any two of them embed far apart; later identities are
    plain random draws (usually, not surely, far apart)."""
    if identity >= SEPARATED_IDENTITIES or identity < 0:
        return _draw(identity, 0)
    with _identity_lock:
        return _separated_identity(identity)


def _separated_identity(identity: int) -> np.ndarray:
    features = _aligned_features()
    while len(_identity_table) <= identity:
        current = len(_identity_table)
        for attempt in range(10_000):
            candidate = _draw(current, attempt)
            feature = np.concatenate([features.T @ channel for channel in candidate])
            feature /= np.linalg.norm(feature)
            if not _identity_features or max(f @ feature for f in _identity_features) < 0.3:
                break
        _identity_table.append(candidate)
        _identity_features.append(feature)
    return _identity_table[identity]


def _draw(identity: int, attempt: int) -> np.ndarray:
    coefficients = np.random.default_rng([0xFACE, identity % 2**63, attempt]).standard_normal(
        (3, _PATTERN_ORDER * _PATTERN_ORDER)
    )
    coefficients[:, 0] = 0.0
    return _scaled(coefficients)


def _basis(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = np.arange(_PATTERN_ORDER)
    cu = np.cos(np.pi * k[:, None] * (u.ravel()[None] + 1.0) / 2.0)
    cv = np.cos(np.pi * k[:, None] * (v.ravel()[None] + 1.0) / 2.0)
    return (cu[:, None, :] * cv[None, :, :]).reshape(_PATTERN_ORDER * _PATTERN_ORDER, -1)


def _coverage(distance: np.ndarray, radius: float) -> np.ndarray:
    """Approximate fraction of each pixel inside a circle (anti-aliased edge one pixel wide)."""
    return np.clip(radius - distance + 0.5, 0.0, 1.0)


def draw_face(img: np.ndarray, cx: float, cy: float, radius: float, identity: int = 0) -> np.ndarray:
    """Draw one face into a BGR uint8 image in place (sub-pixel centre and radius) and return it."""
    height, width = img.shape[:2]
    x0, x1 = max(int(np.floor(cx - radius - 2)), 0), min(int(np.ceil(cx + radius + 2)) + 1, width)
    y0, y1 = max(int(np.floor(cy - radius - 2)), 0), min(int(np.ceil(cy + radius + 2)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return img
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, v = (xx - cx) / radius, (yy - cy) / radius
    norm = np.maximum(np.hypot(u, v), 1.0)  # the edge's anti-aliased pixels reuse the rim's colour
    pattern = _pattern_coefficients(identity) @ _basis(u / norm, v / norm)
    rgb = SKIN_RGB[:, None] + pattern
    rgb[0] = np.maximum(rgb[0], FACE_RED_MIN)
    rgb = np.clip(rgb, 0.0, 255.0).T.reshape(y1 - y0, x1 - x0, 3)
    for (lx, ly), fraction in zip(expected_landmarks(cx, cy, radius), MARK_RADIUS_FRACTIONS, strict=True):
        mark = _coverage(np.hypot(xx - lx, yy - ly), fraction * radius)[..., None]
        rgb = rgb * (1.0 - mark) + MARK_RGB * mark
    face = _coverage(np.hypot(xx - cx, yy - cy), radius)[..., None]
    region = img[y0:y1, x0:x1].astype(np.float64)
    img[y0:y1, x0:x1] = np.clip(np.rint(region * (1.0 - face) + rgb[..., ::-1] * face), 0, 255).astype(np.uint8)
    return img


def background(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A dark, smoothly mottled BGR background of size (width, height) that holds no face."""
    width, height = size
    rng = np.random.default_rng([0xBAC, seed])
    coarse = rng.uniform(10.0, BACKGROUND_RED_MAX - 15.0, (height // 24 + 2, width // 24 + 2, 3))
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    img += rng.normal(0.0, 3.0, img.shape)
    return np.clip(img, 0.0, BACKGROUND_RED_MAX).astype(np.uint8)


def render(
    faces: Iterable[FaceSpec | tuple[float, float, float, int]], size: tuple[int, int] = (640, 480), seed: int = 0
) -> np.ndarray:
    """A BGR uint8 image of size (width, height) with the faces drawn on background(size, seed)."""
    img = background(size, seed)
    for face in faces:
        spec = face if isinstance(face, FaceSpec) else FaceSpec(*face)
        draw_face(img, spec.cx, spec.cy, spec.radius, spec.identity)
    return img


def encode(img: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode a BGR image as jpg/jpeg/png/webp/bmp/tiff bytes (quality applies to jpg and webp)."""
    fmt = fmt.lower().lstrip(".")
    params: list[int] = []
    if fmt in ("jpg", "jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, data = cv2.imencode(f".{fmt}", img, params)
    if not ok:
        raise ValueError(f"cannot encode as {fmt}")
    return data.tobytes()


def make_photo(
    faces: Sequence[FaceSpec | tuple[float, float, float, int]],
    size: tuple[int, int] = (640, 480),
    fmt: str = "jpg",
    seed: int = 0,
    quality: int = 90,
) -> bytes:
    """Encoded photo bytes of size (width, height) holding the given faces; seed picks the background."""
    return encode(render(faces, size, seed), fmt, quality)


def spaced_faces(
    identities: Sequence[int],
    size: tuple[int, int] = (1024, 768),
    radius_range: tuple[float, float] = (24.0, 80.0),
    seed: int = 0,
) -> list[FaceSpec]:
    """Faces of the given identities at seeded random places and radii, wholly inside the image and
    at least MIN_GAP_RADII x the larger radius apart (edge to edge), which the detector needs."""
    width, height = size
    rng = np.random.default_rng([0x6A9, seed])
    placed: list[FaceSpec] = []
    for identity in identities:
        for _ in range(1000):
            radius = float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
            if 2 * radius + 4 > min(width, height):
                continue
            cx, cy = rng.uniform(radius + 2, width - radius - 2), rng.uniform(radius + 2, height - radius - 2)
            if all(
                np.hypot(cx - o.cx, cy - o.cy) >= radius + o.radius + MIN_GAP_RADII * max(radius, o.radius)
                for o in placed
            ):
                placed.append(FaceSpec(cx, cy, radius, identity))
                break
        else:
            raise ValueError(f"no room for {len(identities)} faces of radius {radius_range} in {size}")
    return placed


def group_photo(
    identities: Sequence[int],
    size: tuple[int, int] = (1024, 768),
    radius_range: tuple[float, float] = (24.0, 80.0),
    seed: int = 0,
    fmt: str = "jpg",
    quality: int = 90,
) -> tuple[bytes, list[FaceSpec]]:
    """An encoded photo of spaced_faces(...) and the faces in it."""
    specs = spaced_faces(identities, size, radius_range, seed)
    return make_photo(specs, size, fmt, seed=seed, quality=quality), specs


def selfie_face(identity: int = 0, size: tuple[int, int] = (480, 640)) -> FaceSpec:
    """The one big, centred face of a portrait selfie (radius 35% of the shorter side)."""
    width, height = size
    return FaceSpec(width / 2.0, height / 2.0, 0.35 * min(width, height), identity)


def selfie(identity: int = 0, size: tuple[int, int] = (480, 640), fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encoded selfie: one big face of the identity, centred (see selfie_face for where it is)."""
    return make_photo([selfie_face(identity, size)], size, fmt, seed=identity, quality=quality)


def noise_photo(size: tuple[int, int] = (640, 480), seed: int = 0, fmt: str = "png") -> bytes:
    """Uniform random noise in every channel: no face in it."""
    width, height = size
    rng = np.random.default_rng([0x701, seed])
    return encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), fmt)


def blank_photo(
    size: tuple[int, int] = (640, 480), bgr: tuple[int, int, int] = (40, 40, 40), fmt: str = "png"
) -> bytes:
    """One flat colour: no face in it."""
    width, height = size
    return encode(np.full((height, width, 3), bgr, np.uint8), fmt)


def decode(data: bytes) -> np.ndarray:
    """Encoded bytes -> BGR uint8 image (as insightface would get it from cv2.imdecode)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("cannot decode image")
    return img
