"""Unit tests of decoding for the job: which DCT scale a JPEG is decoded at, EXIF orientation and
bad input at reduced scales, where each face is aligned from, and the decoded-pixel budget."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from embedder_service import decoding, pipeline
from embedder_service.admission import PixelBudget
from embedder_service.config import EmbedderSettings
from facesearch.errors import InvalidArgument
from tests import faces
from tests.event_photos import with_exif_orientation

MAX_PIXELS = 40_000_000
DETECTOR = (640, 640)


def _jpeg(width: int, height: int, seed: int = 0) -> bytes:
    return faces.make_photo(
        [faces.FaceSpec(width * 0.4, height * 0.5, min(width, height) * 0.2, 1)], (width, height), seed=seed
    )


@pytest.mark.parametrize(
    ("size", "fmt", "cap", "expected"),
    [
        ((6000, 4000), "jpg", 8, 8),  # 750x500 still covers the 640x426 letterbox
        ((6000, 4000), "jpg", 2, 2),
        ((6000, 4000), "jpg", 1, 1),
        ((1280, 960), "jpg", 8, 2),  # 640x480 is exactly the letterbox
        ((1000, 750), "jpg", 8, 1),  # 500 px would be upscaled to 640
        ((6001, 4000), "jpg", 8, 1),  # no scale divides both sides: full size, exact coordinates
        ((2000, 1500), "png", 8, 1),  # only JPEG has DCT scaling
    ],
)
def test_detection_reduction_is_the_coarsest_that_covers_the_detector_input(size, fmt, cap, expected) -> None:  # type: ignore[no-untyped-def]
    data = faces.encode(np.zeros((size[1], size[0], 3), np.uint8), fmt)
    header = decoding.read_header(data, MAX_PIXELS)
    assert decoding.detection_reduction(header, DETECTOR, cap) == expected


def test_reduced_decode_applies_exif_orientation_and_maps_to_full_size_pixels() -> None:
    stored = _jpeg(1600, 1200)
    rotated = with_exif_orientation(stored, 6)  # displayed rotated 90 degrees clockwise
    header = decoding.read_header(rotated, MAX_PIXELS)
    assert (header.width, header.height) == (1200, 1600)
    full = decoding.decode(rotated, header, 1, MAX_PIXELS)
    half = decoding.decode(rotated, header, 2, MAX_PIXELS)
    assert full.shape == (1600, 1200, 3) and half.shape == (800, 600, 3)
    np.testing.assert_array_equal(full, cv2.rotate(faces.decode(stored), cv2.ROTATE_90_CLOCKWISE))
    # Reduced pixel (x, y) sits at full-size ((x + 0.5) * 2 - 0.5, ...): compare with a 2x2 box filter.
    box = cv2.resize(full, (600, 800), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(half.astype(np.float32) - box).mean() < 2.0


def test_reduced_decode_keeps_the_bad_input_rules() -> None:
    data = _jpeg(1280, 960)
    with pytest.raises(InvalidArgument, match="truncated"):
        decoding.read_header(data[: len(data) // 2], MAX_PIXELS)
    with pytest.raises(InvalidArgument, match="over the limit"):
        decoding.read_header(data, 1280 * 960 - 1)
    with pytest.raises(InvalidArgument, match="not an image"):
        decoding.read_header(b"\xff\xd8\xff\xe0 not really a jpeg", MAX_PIXELS)
    # Every header rule passes but the quantisation tables are gone: the decoder fails at 1/2 scale too.
    header = decoding.read_header(data, MAX_PIXELS)
    with pytest.raises(InvalidArgument, match="could not be decoded"):
        decoding.decode(_without_quantisation_tables(data), header, 2, MAX_PIXELS)


@pytest.mark.parametrize("reduction", [2, 4])
@pytest.mark.parametrize("keep", [0.3, 0.7, 0.97])
def test_reduced_decode_refuses_truncated_jpeg_with_end_marker_appended(keep: float, reduction: int) -> None:
    """The cut-and-padded JPEG of issue 8 passes every header rule; the reduced decode refuses it
    as the full-size one does."""
    data = _jpeg(1280, 960)
    forged = data[: int(len(data) * keep)] + b"\xff\xd9"
    header = decoding.read_header(forged, MAX_PIXELS)
    with pytest.raises(InvalidArgument, match="truncated"):
        decoding.decode(forged, header, reduction, MAX_PIXELS)
    assert decoding.decode(data, decoding.read_header(data, MAX_PIXELS), reduction, MAX_PIXELS).shape[:2] == (
        960 // reduction,
        1280 // reduction,
    )


def _without_quantisation_tables(jpeg: bytes) -> bytes:
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos : pos + 2] != b"\xff\xda":  # copy the header segments up to the first scan
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != 0xDB:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


def test_letterbox_from_a_reduced_image_has_full_size_geometry() -> None:
    data = _jpeg(1280, 960)
    header = decoding.read_header(data, MAX_PIXELS)
    full = pipeline.letterbox(decoding.decode(data, header, 1, MAX_PIXELS), DETECTOR)
    scaled = decoding.ScaledImage(decoding.decode(data, header, 2, MAX_PIXELS), 2)
    reduced = decoding.letterbox(scaled, (header.width, header.height), DETECTOR)
    assert reduced.scale == full.scale and reduced.image.shape == full.image.shape
    assert np.abs(reduced.image.astype(np.int16) - full.image.astype(np.int16)).mean() < 3.0


def test_each_face_is_aligned_from_pixels_fine_enough_for_its_crop() -> None:
    big = faces.expected_landmarks(3000, 2000, 400)  # ~800 px face: crop samples every ~4 px
    small = faces.expected_landmarks(3000, 2000, 60)  # ~120 px face: about one crop pixel per pixel
    big_scale, small_scale = decoding.crop_scale(big, 112), decoding.crop_scale(small, 112)
    assert big_scale < 0.25 < 0.5 < small_scale
    assert decoding.alignment_reduction(big_scale, 8, 1.0) == 4
    assert decoding.alignment_reduction(big_scale, 2, 1.0) == 2
    assert decoding.alignment_reduction(small_scale, 8, 1.0) == 1
    assert decoding.alignment_reduction(small_scale, 8, 8.0) == 8


def test_settings_accept_only_dct_scales() -> None:
    assert EmbedderSettings(jpeg_max_reduction=4).jpeg_max_reduction == 4
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        EmbedderSettings(jpeg_max_reduction=3)


def test_pixel_budget_admits_what_fits_and_one_oversized_image_alone() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(60) and budget.try_acquire(40)
    assert not budget.try_acquire(1)
    budget.release(60)
    assert not budget.try_acquire(61) and budget.try_acquire(60)
    budget.release(60)
    budget.release(40)
    assert budget.try_acquire(500)  # bigger than the budget, but nothing else is in flight
    assert not budget.try_acquire(1)
    budget.release(500)
    assert budget.in_use == 0
