"""Where the gateway keeps the photos it shows: the search service stores embeddings, never pixels,
so each photo indexed through the page is kept here (original, thumbnail, size) for its grid.

Layout: DATA_DIR/<caller>/<collection>/<sha256(external id)>.{img,thumb.jpg,json}, where <caller> is
a digest of the credential the page called with (API key, else tenant, else "default"): photos are
shown only to callers with the same credential, as the search service shows collections per tenant.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# The search service's own rule for collection names; anything else never reaches the disk.
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Magic numbers of the formats the search service accepts, for the Content-Type served back.
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"BM", "image/bmp"))


def content_type(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), "application/octet-stream")


@dataclass
class PhotoInfo:
    """What the page needs to draw boxes on a photo: boxes are in pixels of the image as displayed
    (EXIF orientation applied), so the size is that of the displayed image too."""

    external_id: str
    width: int
    height: int
    content_type: str
    has_thumbnail: bool


def make_thumbnail(data: bytes, size: int) -> tuple[int, int, bytes | None]:
    """(width, height) of the image as displayed and a JPEG thumbnail (None when Pillow cannot
    decode what the search service could: the original is shown instead)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)
            width, height = image.size
            image = image.convert("RGB")
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.save(out, "JPEG", quality=82)
            return width, height, out.getvalue()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return 0, 0, None


class PhotoStore:
    """Photo bytes on local disk (a PersistentVolume in Kubernetes). Blocking: call it from a thread."""

    def __init__(self, root: Path, thumbnail_size: int) -> None:
        self.root = root
        self.thumbnail_size = thumbnail_size

    def _collection_dir(self, caller: str, collection: str) -> Path:
        if not COLLECTION_NAME.fullmatch(collection) or collection in {".", ".."}:
            raise ValueError(f"not a collection name: {collection!r}")
        return self.root / hashlib.sha256(caller.encode()).hexdigest()[:24] / collection

    def _base(self, caller: str, collection: str, external_id: str) -> Path:
        return self._collection_dir(caller, collection) / hashlib.sha256(external_id.encode()).hexdigest()

    def put(self, caller: str, collection: str, external_id: str, data: bytes) -> PhotoInfo:
        base = self._base(caller, collection, external_id)
        base.parent.mkdir(parents=True, exist_ok=True)
        width, height, thumbnail = make_thumbnail(data, self.thumbnail_size)
        info = PhotoInfo(external_id, width, height, content_type(data), thumbnail is not None)
        _write(base.with_suffix(".img"), data)
        if thumbnail is not None:
            _write(base.with_suffix(".thumb.jpg"), thumbnail)
        _write(base.with_suffix(".json"), json.dumps(asdict(info)).encode())
        return info

    def info(self, caller: str, collection: str, external_id: str) -> PhotoInfo | None:
        try:
            raw = self._base(caller, collection, external_id).with_suffix(".json").read_bytes()
        except (FileNotFoundError, ValueError):
            return None
        return PhotoInfo(**json.loads(raw))

    def read(self, caller: str, collection: str, external_id: str, thumbnail: bool) -> tuple[bytes, str] | None:
        info = self.info(caller, collection, external_id)
        if info is None:
            return None
        base = self._base(caller, collection, external_id)
        if thumbnail and info.has_thumbnail:
            return base.with_suffix(".thumb.jpg").read_bytes(), "image/jpeg"
        return base.with_suffix(".img").read_bytes(), info.content_type

    def delete_collection(self, caller: str, collection: str) -> None:
        shutil.rmtree(self._collection_dir(caller, collection), ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    """Atomic replace, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
