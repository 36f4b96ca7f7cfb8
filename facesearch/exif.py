"""The capture time of a photo from its EXIF data (DateTimeOriginal, with OffsetTimeOriginal when
the camera wrote one), for `taken_time` at indexing."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta, timezone

from PIL import ExifTags, Image, UnidentifiedImageError

log = logging.getLogger(__name__)

DATE_TIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011


def parse_offset(text: str) -> timezone | None:
    """ "+02:00" -> UTC+2; None when malformed."""
    text = text.strip()
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":":
        return None
    try:
        minutes = int(text[1:3]) * 60 + int(text[4:6])
    except ValueError:
        return None
    return timezone(timedelta(minutes=minutes if text[0] == "+" else -minutes))


def taken_time(data: bytes) -> datetime | None:
    """When the photo was taken, or None (no EXIF, no DateTimeOriginal, or a malformed one).
    Cameras record local time without a zone: without OffsetTimeOriginal it is read as UTC."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif().get_ifd(ExifTags.IFD.Exif)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    raw = exif.get(DATE_TIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        # "YYYY:MM:DD HH:MM:SS", sometimes NUL-padded.
        naive = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        log.debug("unreadable DateTimeOriginal %r", raw)
        return None
    offset = exif.get(OFFSET_TIME_ORIGINAL)
    zone = parse_offset(offset) if isinstance(offset, str) else None
    return naive.replace(tzinfo=zone or UTC)
