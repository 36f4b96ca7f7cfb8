"""Faces without storage: compare two faces 1:1 (similarity and match at a threshold) and detect the
faces of an image, through the embedder, which clients cannot reach themselves."""

from __future__ import annotations

import asyncio

import numpy as np

from search_service import validation
from search_service.config import SearchSettings
from search_service.domain import CompareResult, DetectedFace, EmbedOptions, FaceSource
from search_service.embedder_client import EmbedderClient
from search_service.faces import source_vector


class FaceAnalysis:
    def __init__(self, embedder: EmbedderClient, settings: SearchSettings, embedding_dim: int) -> None:
        self._embedder = embedder
        self._settings = settings
        self.embedding_dim = embedding_dim

    async def compare(self, first: FaceSource, second: FaceSource, threshold: float | None) -> CompareResult:
        """Similarity of two faces (each an image's best face or an embedding); the first image is
        image 0, the second image 1 in the reasons and query faces."""
        threshold_value = validation.similarity(threshold, "threshold")
        applied = self._settings.thresholds.verify if threshold_value is None else threshold_value
        (vector_a, face_a, reason_a), (vector_b, face_b, reason_b) = await asyncio.gather(
            source_vector(self._embedder, first, 0, self.embedding_dim),
            source_vector(self._embedder, second, 1, self.embedding_dim),
        )
        if vector_a is None or vector_b is None:
            reason = f"{reason_a} in image 0" if vector_a is None else f"{reason_b} in image 1"
            return CompareResult(False, 0.0, applied, face_a, face_b, no_face_reason=reason)
        similarity = float(np.clip(np.dot(vector_a, vector_b), -1.0, 1.0))
        return CompareResult(similarity >= applied, similarity, applied, face_a, face_b)

    async def detect(self, image: bytes, options: EmbedOptions) -> list[DetectedFace]:
        """Every face the embedder finds, largest and most central first, quality gates evaluated."""
        validation.image_bytes(image)
        return await self._embedder.embed(image, options)
