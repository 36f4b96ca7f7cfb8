"""Decoding for the job: JPEGs are decoded at the coarsest libjpeg-turbo DCT scale (up to a cap) that
still gives the detector its full input, and each face is aligned from pixels fine enough for it."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from insightface.utils import face_align
from PIL import Image

from embedder_service import pipeline
from facesearch.errors import InvalidArgument

log = logging.getLogger(__name__)

# libjpeg-turbo's DCT scaling as OpenCV exposes it (IMREAD_REDUCED_* apply EXIF orientation too).
_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_SCALABLE_FORMATS = frozenset({"JPEG", "MPO"})
JPEG_FORMATS = _SCALABLE_FORMATS
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded. `width`/`height` are as displayed (EXIF
    orientation applied), so they are the coordinates every box and landmark is given in."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes, max_pixels: int) -> ImageHeader:
    """Size and format from the header; every bad-input rule that needs no decoding (format, empty,
    pixel limit, truncated JPEG) answers InvalidArgument here, before anything large is allocated."""
    if not data:
        raise InvalidArgument("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))  # reads the header only
            width, height = header.size
            fmt = header.format
            orientation = header.getexif().get(_EXIF_ORIENTATION, 1) if fmt in _SCALABLE_FORMATS else 1
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"image is larger than the pixel limit of {max_pixels}: {exc}") from exc
    except Exception as exc:  # PIL raises UnidentifiedImageError, SyntaxError, struct.error...
        raise InvalidArgument("bytes are not an image in a supported format (JPEG, PNG, WebP, BMP)") from exc
    if fmt not in pipeline.ALLOWED_FORMATS:
        raise InvalidArgument(f"image format {fmt} is not supported (JPEG, PNG, WebP, BMP)")
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidArgument(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if fmt in _SCALABLE_FORMATS and not pipeline._jpeg_complete(data):
        raise InvalidArgument("JPEG is truncated (no end-of-image marker after its last scan)")
    if isinstance(orientation, int) and 5 <= orientation <= 8:  # transposed: width and height swap
        width, height = height, width
    return ImageHeader(fmt, width, height)


def letterbox_size(width: int, height: int, input_size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) the image is resized to inside the detector input (insightface's arithmetic)."""
    in_w, in_h = input_size
    if float(height) / width > float(in_h) / in_w:
        new_h = in_h
        new_w = int(new_h / (float(height) / width))
    else:
        new_w = in_w
        new_h = int(new_w * (float(height) / width))
    return max(new_w, 1), max(new_h, 1)


def detection_reduction(header: ImageHeader, input_size: tuple[int, int], max_reduction: int) -> int:
    """The largest DCT scale denominator (1, 2, 4, 8) whose image still covers the letterboxed
    detector input pixel for pixel. Only a factor dividing both sides is used, so reduced pixel
    centres map exactly onto full-size ones (and EXIF flips leave no partial edge block)."""
    if header.format not in _SCALABLE_FORMATS:
        return 1
    new_w, new_h = letterbox_size(header.width, header.height, input_size)
    best = 1
    for r in (2, 4, 8):
        if r > max_reduction or header.width % r or header.height % r:
            break
        if header.width // r >= new_w and header.height // r >= new_h:
            best = r
    return best


def decoded_pixels(header: ImageHeader, reduction: int) -> int:
    return (header.width // reduction) * (header.height // reduction)


def decode(data: bytes, header: ImageHeader, reduction: int, max_pixels: int) -> np.ndarray:
    """BGR uint8 image at 1/`reduction` of the displayed size (EXIF orientation applied)."""
    if reduction == 1:
        return pipeline.decode_image(data, max_pixels)
    flag = _REDUCED_FLAGS[reduction]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None or image.size == 0:
        raise InvalidArgument(f"{header.format} image could not be decoded (corrupt or truncated)")
    # The same rule as a full-size decode: image data cut short and padded to an end-of-image
    # marker decodes grey-filled at every scale.
    if header.format in _SCALABLE_FORMATS and pipeline.jpeg_data_ends_early(
        data, image, lambda padded: cv2.imdecode(np.frombuffer(padded, np.uint8), flag)
    ):
        raise InvalidArgument("JPEG is truncated (its image data ends before its last block)")
    expected = (header.height // reduction, header.width // reduction)
    if image.shape[:2] != expected:  # a header that lies about the size
        raise InvalidArgument(
            f"{header.format} image decoded to {image.shape[1] * reduction}x{image.shape[0] * reduction}, "
            f"not the {header.width}x{header.height} its header says"
        )
    return image


@dataclass(frozen=True)
class ScaledImage:
    """A decoded image and the DCT scale it was decoded at: pixel (x, y) of `image` is centred on
    full-size pixel ((x + 0.5) * reduction - 0.5, (y + 0.5) * reduction - 0.5)."""

    image: np.ndarray
    reduction: int

    def to_scaled(self, points: np.ndarray) -> np.ndarray:
        """Full-size pixel coordinates -> this image's."""
        return (points + 0.5) / self.reduction - 0.5


def letterbox(scaled: ScaledImage, full_size: tuple[int, int], input_size: tuple[int, int]) -> pipeline.Letterboxed:
    """The detector input from a (possibly reduced) image, with the size and scale insightface would
    compute from the full-size image, so boxes come out in full-size pixels."""
    width, height = full_size
    new_w, new_h = letterbox_size(width, height, input_size)
    canvas = np.zeros((input_size[1], input_size[0], 3), dtype=np.uint8)
    canvas[:new_h, :new_w, :] = cv2.resize(scaled.image, (new_w, new_h))
    return pipeline.Letterboxed(canvas, float(new_h) / height)


def crop_scale(landmarks: np.ndarray, size: int) -> float:
    """Crop pixels per full-size pixel of the face's alignment transform (insightface's norm_crop)."""
    matrix = face_align.estimate_norm(landmarks, size)
    return float(np.hypot(matrix[0, 0], matrix[0, 1]))


def alignment_reduction(scale: float, detection_reduction: int, max_crop_pixels_per_source_pixel: float) -> int:
    """The coarsest DCT scale (a divisor of the detection one) at which the face's crop samples the
    source no finer than `max_crop_pixels_per_source_pixel`: never more crop pixels than source
    pixels across the face at the default of 1.0."""
    r = detection_reduction
    while r > 1 and scale * r > max_crop_pixels_per_source_pixel:
        r //= 2
    return r


class GpuJpegDecoder:
    """JPEG decoding on the GPU with NVIDIA nvImageCodec (nvJPEG, the hardware decoder where the GPU
    has one), full size with EXIF orientation applied, copied back as BGR. `create` answers None
    where the package or a GPU is missing, so the CPU path is the same everywhere else."""

    def __init__(self, module: Any, device_id: int) -> None:
        self._nvimgcodec = module
        self._device_id = device_id
        self._local = threading.local()  # one decoder per decode thread
        self._params = module.DecodeParams(apply_exif_orientation=True, color_spec=module.ColorSpec.RGB)

    @classmethod
    def create(cls, device_id: int) -> GpuJpegDecoder | None:
        try:
            from nvidia import nvimgcodec  # type: ignore[import-not-found]
        except ImportError:
            return None
        try:
            decoder = cls(nvimgcodec, device_id)
            decoder._decoder()  # fails here, not on the first image, when no GPU is usable
        except Exception as exc:
            log.warning("nvImageCodec is installed but cannot decode on GPU %d: %s", device_id, exc)
            return None
        return decoder

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = self._nvimgcodec.Decoder(device_id=self._device_id)
            self._local.decoder = decoder
        return decoder

    def decode(self, data: bytes, header: ImageHeader) -> np.ndarray:
        try:
            image = self._decoder().decode(data, params=self._params)
        except Exception as exc:  # nvImageCodec raises RuntimeError for corrupt streams
            raise InvalidArgument(f"{header.format} image could not be decoded (corrupt or truncated)") from exc
        if image is None:
            raise InvalidArgument(f"{header.format} image could not be decoded (corrupt or truncated)")
        rgb = np.asarray(image.cpu())
        if rgb.ndim != 3 or rgb.shape[:2] != (header.height, header.width):
            raise InvalidArgument(
                f"{header.format} image decoded to {rgb.shape[1]}x{rgb.shape[0]}, not the "
                f"{header.width}x{header.height} its header says"
            )
        return np.ascontiguousarray(rgb[..., 2::-1])
