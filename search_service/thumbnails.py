"""Face thumbnails: small JPEG crops of a photo's stored faces, cut at indexing (when enabled) with
Pillow on a bounded thread pool, so the event loop never decodes an image."""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageOps

from search_service.config import ThumbnailSettings
from search_service.domain import Box

log = logging.getLogger(__name__)


def crop_box(box: Box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """The face box grown by `margin` of its larger side on each side, clipped to the image."""
    pad = margin * max(box.x2 - box.x1, box.y2 - box.y1)
    left = max(0, int(box.x1 - pad))
    top = max(0, int(box.y1 - pad))
    right = min(width, round(box.x2 + pad))
    bottom = min(height, round(box.y2 + pad))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def cut_thumbnails(image: bytes, boxes: list[Box], settings: ThumbnailSettings) -> list[bytes]:
    """One JPEG per box, at most `settings.size` pixels on its longest side. The photo is turned
    upright by its EXIF orientation first, as the embedder does, so the boxes line up."""
    with Image.open(io.BytesIO(image)) as opened:
        photo = ImageOps.exif_transpose(opened).convert("RGB")
    thumbnails = []
    for box in boxes:
        face = photo.crop(crop_box(box, photo.width, photo.height, settings.margin))
        face.thumbnail((settings.size, settings.size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        face.save(out, format="JPEG", quality=settings.jpeg_quality, optimize=True)
        thumbnails.append(out.getvalue())
    return thumbnails


class ThumbnailCutter:
    """Cuts thumbnails off the event loop; at most `settings.workers` photos at once."""

    def __init__(self, settings: ThumbnailSettings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="thumbnails")

    async def cut(self, image: bytes, boxes: list[Box]) -> tuple[bytes | None, ...]:
        """A thumbnail per box; Nones when the photo cannot be cut (the embedder read it, so the
        photo is stored anyway, just without thumbnails)."""
        if not boxes:
            return ()
        loop = asyncio.get_running_loop()
        try:
            return tuple(await loop.run_in_executor(self._executor, cut_thumbnails, image, boxes, self.settings))
        except Exception:
            log.warning("cutting face thumbnails failed; the photo is stored without them", exc_info=True)
            return (None,) * len(boxes)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
