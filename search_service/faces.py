"""Choosing the face to search with from what the embedder found in a query image."""

from __future__ import annotations

from search_service.domain import DetectedFace


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
