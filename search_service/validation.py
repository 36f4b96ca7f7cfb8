"""Checks of caller input shared by the core modules: names, ids, metadata size, embeddings and
paging bounds. Each failure is an InvalidArgument that says what was wrong."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from facesearch.errors import InvalidArgument
from search_service.domain import JsonObject

COLLECTION_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_EXTERNAL_ID = 256
MAX_TENANT = 128
MAX_IMAGES = 10
MAX_PHOTO_IDS = 10_000


def collection_name(name: str) -> str:
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidArgument(f"collection name {name[:140]!r} is not 1-128 characters of [A-Za-z0-9._-]")
    return name


def tenant(value: str) -> str:
    if not value or len(value) > MAX_TENANT or not value.isprintable():
        raise InvalidArgument("x-tenant-id must be 1-128 printable characters")
    return value


def external_id(value: str, what: str = "external_id") -> str:
    if not value or len(value) > MAX_EXTERNAL_ID:
        raise InvalidArgument(f"{what} must be 1-{MAX_EXTERNAL_ID} characters (got {len(value)})")
    if "\x00" in value:
        raise InvalidArgument(f"{what} must not contain NUL characters")
    return value


def metadata(value: JsonObject, max_bytes: int) -> JsonObject:
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise InvalidArgument(f"metadata is not valid JSON: {exc}") from None
    if len(encoded.encode()) > max_bytes:
        raise InvalidArgument(f"metadata is {len(encoded.encode())} bytes as JSON; at most {max_bytes} allowed")
    if "\\u0000" in encoded:
        raise InvalidArgument("metadata must not contain NUL characters")  # PostgreSQL jsonb refuses them
    return value


def embedding(values: list[float] | np.ndarray, dim: int) -> np.ndarray:
    """A unit-length float32 copy of `values`; INVALID_ARGUMENT for a wrong size, NaN/inf or zero norm."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.shape[0] != dim:
        raise InvalidArgument(f"embedding has {vector.size} values; {dim} expected")
    if not np.all(np.isfinite(vector)):
        raise InvalidArgument("embedding contains NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise InvalidArgument("embedding has zero norm")
    return (vector / norm).astype(np.float32)


def top_k(value: int, default: int, maximum: int, what: str = "top_k") -> int:
    if value == 0:
        return default
    if value > maximum:
        raise InvalidArgument(f"{what} is {value}; at most {maximum} allowed")
    return value


def similarity(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise InvalidArgument(f"{what} must be within [-1, 1] (got {value})")
    return value


def image_count(count: int, what: str = "images") -> None:
    if not 1 <= count <= MAX_IMAGES:
        raise InvalidArgument(f"{what}: {count} given; 1-{MAX_IMAGES} allowed")


def image_bytes(image: bytes, index: int = 0) -> bytes:
    if not image:
        raise InvalidArgument(f"image {index} is empty")
    return image
