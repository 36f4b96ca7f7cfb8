"""Unit tests of the embedder's image steps: decoding (formats, EXIF, bad bytes, pixel bombs),
options, SCRFD decoding/NMS/ordering against insightface's own SCRFD, alignment and quality."""

from __future__ import annotations

import io
import math
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from insightface.model_zoo import model_zoo
from insightface.utils.face_align import arcface_dst, norm_crop
from PIL import Image

from embedder_service import pipeline
from embedder_service.config import EmbedderSettings
from embedder_service.domain import EmbedOptions, QualityFailure, RequestOptions
from embedder_service.models import Detector, provider_candidates
from facesearch.errors import InvalidArgument
from tests import faces

MAX_PIXELS = 40_000_000


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("jpeg", lambda im: _encode(im, "JPEG")),
        ("png", lambda im: _encode(im, "PNG")),
        ("grey png", lambda im: _encode(im.convert("L"), "PNG")),
        ("rgba png", lambda im: _encode(im.convert("RGBA"), "PNG")),
        ("palette png", lambda im: _encode(im.convert("P"), "PNG")),
        ("16-bit png", lambda im: _encode(Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257), "PNG")),
        ("webp", lambda im: _encode(im, "WEBP", lossless=True)),
        ("bmp", lambda im: _encode(im, "BMP")),
    ],
)
def test_decode_converts_every_supported_kind_to_bgr(name: str, make, rgb: Image.Image) -> None:
    image = pipeline.decode_image(make(rgb), MAX_PIXELS)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    if name in ("png", "webp", "bmp"):  # lossless: exact pixels, flipped to BGR
        np.testing.assert_array_equal(image[..., ::-1], np.asarray(rgb))
    if name == "grey png":
        np.testing.assert_array_equal(image[..., 0], np.asarray(rgb.convert("L")))
    if name == "16-bit png":  # 16-bit scaled down to 8 bits, not clipped
        np.testing.assert_allclose(image[..., 0], np.asarray(rgb.convert("L")), atol=1)


def test_decode_applies_exif_orientation(rgb: Image.Image) -> None:
    exif = rgb.getexif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    plain = pipeline.decode_image(_encode(rgb, "JPEG", quality=95), MAX_PIXELS)
    rotated = pipeline.decode_image(_encode(rgb, "JPEG", quality=95, exif=exif.tobytes()), MAX_PIXELS)
    assert rotated.shape == (64, 48, 3)
    expected = cv2.rotate(plain, cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(rotated.astype(int) - expected.astype(int)).mean() < 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is not an image at all" * 10, "not an image"),
        (b"GIF89a" + b"\x00" * 64, "not an image"),
    ],
)
def test_decode_refuses_non_images(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        pipeline.decode_image(data, MAX_PIXELS)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, -2])
def test_decode_refuses_truncated_jpeg(keep: float, rgb: Image.Image) -> None:
    data = _encode(rgb.resize((256, 192)), "JPEG", quality=90)
    cut = data[:keep] if isinstance(keep, int) else data[: int(len(data) * keep)]
    with pytest.raises(InvalidArgument, match=r"truncated|decoded"):
        pipeline.decode_image(cut, MAX_PIXELS)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.3, 0.7, 0.97])
def test_decode_refuses_truncated_jpeg_with_end_marker_appended(
    keep: float, progressive: bool, rgb: Image.Image
) -> None:
    """A cut file with an EOI stuck on its end decodes "fine" (grey-filled) unless checked."""
    data = _encode(rgb.resize((256, 192)), "JPEG", quality=90, progressive=progressive)
    forged = data[: int(len(data) * keep)] + b"\xff\xd9"
    with pytest.raises(InvalidArgument, match="truncated"):
        pipeline.decode_image(forged, MAX_PIXELS)


@pytest.mark.parametrize("progressive", [False, True])
def test_decode_keeps_whole_jpeg_with_mid_grey_corners(progressive: bool, rgb: Image.Image) -> None:
    """Mid-grey where a cut file would be grey-filled is not mistaken for a cut."""
    pixels = np.asarray(rgb.resize((256, 192))).copy()
    pixels[96:, :] = 128
    data = _encode(Image.fromarray(pixels), "JPEG", quality=90, progressive=progressive)
    image = pipeline.decode_image(data, MAX_PIXELS)
    assert (image[-2:, -2:] == 128).all()


def test_decode_refuses_truncated_png(rgb: Image.Image) -> None:
    data = _encode(rgb, "PNG")
    with pytest.raises(InvalidArgument):
        pipeline.decode_image(data[: len(data) // 2], MAX_PIXELS)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height zero pixels, compressed row by row (~1000:1)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_decode_refuses_pixel_bomb_from_header_without_allocating() -> None:
    bomb = _png_bomb(8000, 8000)  # 64 Mpx, ~64 kB on the wire
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument, match="over the limit"):
            pipeline.decode_image(bomb, 10_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"refusing the bomb allocated {peak} bytes"


def test_decode_refuses_header_claiming_absurd_size() -> None:
    header_only = _png_bomb(1, 1).replace(struct.pack(">II", 1, 1), struct.pack(">II", 100_000, 100_000), 1)
    with pytest.raises(InvalidArgument):
        pipeline.decode_image(header_only, MAX_PIXELS)


def test_options_resolve_defaults_and_caps() -> None:
    settings = EmbedderSettings(max_faces_per_image=10)
    options = EmbedOptions.resolve(RequestOptions(), settings)
    assert options.max_faces == 10
    assert options.detection_threshold == settings.detection_threshold
    assert options.min_face_size == settings.quality.min_face_size
    assert options.quality_gates
    assert EmbedOptions.resolve(RequestOptions(max_faces=500), settings).max_faces == 10
    assert EmbedOptions.resolve(RequestOptions(max_faces=3, min_blur_score=5.0), settings).min_blur_score == 5.0


@pytest.mark.parametrize(
    "requested",
    [
        RequestOptions(detection_threshold=1.5),
        RequestOptions(detection_threshold=-0.1),
        RequestOptions(min_det_score=2.0),
        RequestOptions(min_face_size=-1.0),
        RequestOptions(min_blur_score=float("nan")),
        RequestOptions(max_pose_angle=181.0),
        RequestOptions(max_faces=-1),
    ],
)
def test_options_out_of_range_are_invalid(requested: RequestOptions) -> None:
    with pytest.raises(InvalidArgument, match="option"):
        EmbedOptions.resolve(requested, EmbedderSettings())


# --- SCRFD decoding, NMS and ordering against insightface's SCRFD on the generated pack -----------


@pytest.fixture(scope="module")
def reference_scrfd(model_pack):  # type: ignore[no-untyped-def]
    model = model_zoo.get_model(str(model_pack.detector_path), providers=["CPUExecutionProvider"])
    model.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    return model


@pytest.fixture(scope="module")
def our_detector(model_pack) -> Detector:  # type: ignore[no-untyped-def]
    settings = EmbedderSettings(models_dir=model_pack.models_dir)
    return Detector(model_pack.detector_path, settings, provider_candidates(settings))


PHOTOS = [
    ([faces.FaceSpec(200, 180, 60, 1), faces.FaceSpec(470, 300, 35, 2), faces.FaceSpec(90, 400, 20, 3)], (640, 480)),
    ([faces.FaceSpec(300, 500, 150, 4)], (600, 900)),
    ([faces.FaceSpec(40, 40, 30, 5), faces.FaceSpec(1180, 650, 45, 6)], (1280, 720)),
    ([], (320, 240)),
]


def test_batched_detection_matches_insightface_scrfd(reference_scrfd, our_detector: Detector) -> None:  # type: ignore[no-untyped-def]
    images = [faces.render(specs, size, seed=i) for i, (specs, size) in enumerate(PHOTOS)]
    boxes = [pipeline.letterbox(image, our_detector.input_size) for image in images]
    outputs = our_detector.run([b.image for b in boxes])  # one batch of all four
    assert our_detector.max_batch > 1, "the test pack's detector must batch after the rewrite"
    found = 0
    for image, letterboxed, out, (specs, _) in zip(images, boxes, outputs, PHOTOS, strict=True):
        ref_dets, ref_kps = reference_scrfd.detect(image, max_num=0)
        dets, kps = pipeline.decode_detections(
            out, our_detector.layout, our_detector.input_size, letterboxed.scale, 0.5, 0.4
        )
        assert dets.shape == ref_dets.shape
        np.testing.assert_allclose(dets[:, :4], ref_dets[:, :4], atol=0.05)
        np.testing.assert_allclose(dets[:, 4], ref_dets[:, 4], atol=1e-4)
        np.testing.assert_allclose(kps, ref_kps, atol=0.05)
        assert len(dets) == len(specs)
        found += len(dets)
    assert found == 6


def test_order_faces_matches_insightface_max_num(reference_scrfd, our_detector: Detector) -> None:  # type: ignore[no-untyped-def]
    specs, size = PHOTOS[0]
    image = faces.render(specs, size)
    letterboxed = pipeline.letterbox(image, our_detector.input_size)
    (out,) = our_detector.run([letterboxed.image])
    dets, _ = pipeline.decode_detections(out, our_detector.layout, our_detector.input_size, letterboxed.scale, 0.5, 0.4)
    for max_num in (1, 2):
        ref_dets, _ = reference_scrfd.detect(image, max_num=max_num)
        ours = dets[pipeline.order_faces(dets, image.shape, max_num)]
        np.testing.assert_allclose(ours, ref_dets, atol=1e-3)


def test_nms_matches_insightface(reference_scrfd) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    for threshold in (0.3, 0.4, 0.6):
        xy = rng.uniform(0, 200, (300, 2))
        wh = rng.uniform(5, 60, (300, 2))
        dets = np.hstack([xy, xy + wh, rng.random((300, 1))]).astype(np.float32)
        reference_scrfd.nms_thresh = threshold
        assert pipeline.nms(dets, threshold) == [int(i) for i in reference_scrfd.nms(dets)]
    reference_scrfd.nms_thresh = 0.4


def test_align_is_insightface_norm_crop() -> None:
    image = faces.render([faces.FaceSpec(160, 120, 50, 1)], (320, 240))
    landmarks = faces.expected_landmarks(160, 120, 50)
    np.testing.assert_array_equal(pipeline.align(image, landmarks, 112), norm_crop(image, landmarks, 112))


# --- pose and quality ---------------------------------------------------------------------------


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    centre = points.mean(axis=0)
    return ((points - centre) @ r.T + centre).astype(np.float32)


def test_pose_of_template_is_level_and_frontal() -> None:
    yaw, pitch, roll = pipeline.pose(arcface_dst.copy())
    assert abs(yaw) < 2 and abs(pitch) < 2 and abs(roll) < 1


def test_pose_reads_roll_yaw_and_pitch() -> None:
    _, _, roll = pipeline.pose(_rotate(arcface_dst, 30))
    assert roll == pytest.approx(30, abs=0.5)
    yaw, pitch, _ = pipeline.pose(_rotate(arcface_dst, 30))
    assert abs(yaw) < 2 and abs(pitch) < 2  # roll alone is not yaw or pitch
    turned = arcface_dst.copy()
    turned[2, 0] += 12  # nose towards the image's right
    assert pipeline.pose(turned)[0] > 30
    down = arcface_dst.copy()
    down[2, 1] += 10  # nose towards the mouth: looking down
    assert pipeline.pose(down)[1] > 20


def test_quality_gates_report_each_failure_and_can_be_disabled() -> None:
    crop = np.full((112, 112, 3), 128, np.uint8)  # flat: blur score 0
    turned = arcface_dst.copy()
    turned[2, 0] += 15
    box = np.array([0, 0, 20, 20], np.float32)
    strict = EmbedOptions.resolve(RequestOptions(), EmbedderSettings())
    quality = pipeline.assess(0.3, box, turned, crop, strict)
    assert not quality.passed
    assert set(quality.failures) == {
        QualityFailure.LOW_DETECTION_SCORE,
        QualityFailure.FACE_TOO_SMALL,
        QualityFailure.BLURRY,
        QualityFailure.EXTREME_POSE,
    }
    assert quality.face_size == 20 and quality.blur_score == 0
    off = EmbedOptions.resolve(RequestOptions(disable_quality_gates=True), EmbedderSettings())
    relaxed = pipeline.assess(0.3, box, turned, crop, off)
    assert relaxed.passed and relaxed.failures == () and relaxed.face_size == 20
    lenient = EmbedOptions.resolve(
        RequestOptions(min_det_score=0.2, min_face_size=10, min_blur_score=0, max_pose_angle=90), EmbedderSettings()
    )
    assert pipeline.assess(0.3, box, turned, crop, lenient).passed


def test_blur_score_ranks_sharp_above_blurred() -> None:
    image = faces.render([faces.FaceSpec(160, 120, 80, 2)], (320, 240))
    crop = pipeline.align(image, faces.expected_landmarks(160, 120, 80), 112)
    blurred = cv2.GaussianBlur(crop, (0, 0), 3)
    assert pipeline.blur_score(crop) > 3 * pipeline.blur_score(blurred)
