"""Choosing the face to search with from what the embedder found in a query image, and turning a
face given as an image or an embedding into the vector to compare."""

from __future__ import annotations

import numpy as np

from facesearch.errors import InvalidArgument
from search_service import validation
from search_service.domain import DetectedFace, EmbedOptions, FaceSource, QueryFace
from search_service.embedder_client import EmbedderClient


def best_face(faces: list[DetectedFace]) -> tuple[DetectedFace | None, str]:
    """The first face passing the quality gates (the embedder orders faces largest and most central
    first), or None with the reason."""
    if not faces:
        return None, "no face detected"
    for face in faces:
        if face.quality.passed:
            return face, ""
    failures = sorted({f for face in faces for f in face.quality.failures})
    return None, f"no face passed the quality gates ({', '.join(failures) or 'unknown'})"


async def image_face(embedder: EmbedderClient, image: bytes, index: int) -> tuple[DetectedFace | None, str]:
    """The best face of an image (see best_face), or None with the reason."""
    validation.image_bytes(image, index)
    return best_face(await embedder.embed(image, EmbedOptions()))


async def source_vector(
    embedder: EmbedderClient, source: FaceSource, image_index: int, embedding_dim: int
) -> tuple[np.ndarray | None, QueryFace | None, str]:
    """(unit vector, the image face used, "") of a face given as an embedding or an image's best
    face; (None, None, why) when the image has no usable face."""
    if source.embedding is not None:
        return validation.embedding(list(source.embedding), embedding_dim), None, ""
    if source.image is not None:
        face, reason = await image_face(embedder, source.image, image_index)
        if face is None:
            return None, None, reason
        return face.embedding, QueryFace(face, image_index), ""
    raise InvalidArgument("face must be given as an image or an embedding")
