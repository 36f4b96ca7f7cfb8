"""The descriptor cache's in-memory search against a plain reference: each photo once at its best
face, (distance, photo) order, pages after a cursor, a distance bound, several query vectors,
ties between photos and between faces of one photo."""

from __future__ import annotations

import numpy as np

from search_service.descriptor_cache import CollectionMatrix, _build_entry
from search_service.sql import Cursor


def reference(
    photo_keys: np.ndarray,
    face_ids: np.ndarray,
    matrix: np.ndarray,
    queries: list[np.ndarray],
    max_distance: float | None,
    cursor: Cursor | None,
    want: int,
) -> list[tuple[int, int, float]]:
    # The same float32 products as the cache (rounding is not under test): the grouping, order,
    # bound and cursor are.
    stacked = np.stack(queries)
    sims = matrix @ stacked[0] if len(queries) == 1 else (matrix @ stacked.T).max(axis=1)
    best: dict[int, tuple[float, int]] = {}
    for key, face, sim in zip(photo_keys, face_ids, sims, strict=True):
        distance = 1.0 - float(sim)
        if int(key) not in best or (distance, int(face)) < best[int(key)]:
            best[int(key)] = (distance, int(face))
    rows = sorted((d, k, f) for k, (d, f) in best.items())
    if max_distance is not None:
        rows = [r for r in rows if r[0] <= max_distance]
    if cursor is not None:
        rows = [r for r in rows if (r[0], r[1]) > (cursor.distance, cursor.photo_key)]
    return [(k, f, d) for d, k, f in rows[:want]]


def collection(seed: int, faces: int = 400, photos: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = np.sort(rng.integers(1, photos, faces)).astype(np.int64)
    ids = np.arange(1000, 1000 + faces, dtype=np.int64)
    matrix = rng.standard_normal((faces, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    # Ties: an identical face in another photo, and a duplicate face inside one photo.
    matrix[10] = matrix[200]
    matrix[21] = matrix[20] if keys[21] == keys[20] else matrix[21]
    return keys, ids, matrix


def hits(entry: CollectionMatrix, *args) -> list[tuple[int, int, float]]:
    return [(h.photo_key, h.face_id, h.distance) for h in entry.search(*args)]


def test_matches_the_reference_on_every_page() -> None:
    for seed in range(5):
        keys, ids, matrix = collection(seed)
        entry = _build_entry(7, keys, ids, matrix.copy())
        rng = np.random.default_rng(100 + seed)
        for n_queries in (1, 3):
            queries = [q / np.linalg.norm(q) for q in rng.standard_normal((n_queries, 16)).astype(np.float32)]
            for max_distance in (None, 0.9):
                cursor = None
                pages = []
                while True:
                    got = hits(entry, queries, max_distance, cursor, 7)
                    expected = reference(keys, ids, entry.matrix, queries, max_distance, cursor, 7)
                    assert [(k, f) for k, f, _ in got] == [(k, f) for k, f, _ in expected]
                    assert np.allclose([d for *_, d in got], [d for *_, d in expected], atol=1e-6)
                    pages += got
                    if len(got) < 7:
                        break
                    cursor = Cursor(got[-1][2], got[-1][0])
                photos = [k for k, _, _ in pages]
                assert len(photos) == len(set(photos))
                if max_distance is None:
                    assert sorted(photos) == sorted(set(keys.tolist()))


def test_empty_collection() -> None:
    entry = _build_entry(0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 16), np.float32))
    assert entry.search([np.ones(16, np.float32) / 4], None, None, 10) == []
