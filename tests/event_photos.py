"""Event photos as cameras make them: 24 MP JPEGs (6000x4000) of a group, with fine background
texture so they compress like real photos (several MB), and faces sized as in group shots."""

from __future__ import annotations

import cv2
import numpy as np

from tests import faces

EVENT_SIZE = (6000, 4000)
# Face radii in full-size pixels: 210-440 px boxes, what a group of 5-10 people fills in 24 MP (and
# above the generated detector's smallest face once the photo is letterboxed to 640 px).
EVENT_RADII = (105.0, 220.0)


def event_photo(
    seed: int,
    faces_per_photo: int = 6,
    size: tuple[int, int] = EVENT_SIZE,
    radius_range: tuple[float, float] = EVENT_RADII,
    quality: int = 92,
    exif_orientation: int = 1,
) -> tuple[bytes, list[faces.FaceSpec]]:
    """JPEG bytes and the faces drawn (in stored pixel coordinates). `exif_orientation` != 1 adds
    an EXIF orientation tag, so the displayed image is the stored one rotated or flipped."""
    identities = [1000 + seed * faces_per_photo + i for i in range(faces_per_photo)]
    specs = faces.spaced_faces(identities, size, radius_range, seed=seed)
    image = faces.render(specs, size, seed)
    # Sensor-like grain on the background only (the generated detector wants faces' red high and
    # the background's low), so the file is as hard to decode as a camera's.
    rng = np.random.default_rng([0xE7E, seed])
    grain = rng.integers(-6, 7, image.shape, dtype=np.int16)
    background = image[..., 2] <= faces.BACKGROUND_RED_MAX
    noisy = np.clip(image.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    noisy[..., 2] = np.minimum(noisy[..., 2], int(faces.BACKGROUND_RED_MAX))
    image[background] = noisy[background]
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    encoded = data.tobytes()
    if exif_orientation != 1:
        encoded = with_exif_orientation(encoded, exif_orientation)
    return encoded, specs


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The same JPEG with an APP1 Exif segment holding only an orientation tag, after SOI."""
    tiff = (
        b"MM\x00\x2a\x00\x00\x00\x08"  # big-endian TIFF header, first IFD at 8
        + b"\x00\x01"  # one entry
        + b"\x01\x12\x00\x03\x00\x00\x00\x01"  # Orientation, SHORT, count 1
        + orientation.to_bytes(2, "big")
        + b"\x00\x00"
        + b"\x00\x00\x00\x00"  # no next IFD
    )
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]
