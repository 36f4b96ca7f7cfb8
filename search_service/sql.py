"""Builders of the search SQL. Only the query's shape varies (how many query vectors, which
filters); every value travels as a numbered parameter, never inside the SQL text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_service.domain import SearchFilter


@dataclass
class Params:
    """Collects positional parameters and hands out their `$n` placeholders."""

    values: list[Any] = field(default_factory=list)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass(frozen=True)
class Cursor:
    """Keyset position: results strictly after (distance, photo_key) in (distance, photo_key) order."""

    distance: float
    photo_key: int


def _distance_expr(params: Params, vectors: list[np.ndarray]) -> str:
    terms = [f"f.embedding <=> {params.add(vector)}" for vector in vectors]
    # A photo matches a multi-face query when any face matches: the smallest distance counts.
    return terms[0] if len(terms) == 1 else f"LEAST({', '.join(terms)})"


def photo_filter_clauses(params: Params, search_filter: SearchFilter, alias: str = "p") -> list[str]:
    """WHERE clauses on the photos row `alias` for a filter (empty when it restricts nothing)."""
    clauses: list[str] = []
    if search_filter.metadata:
        clauses.append(f"{alias}.metadata @> {params.add(json.dumps(search_filter.metadata))}::jsonb")
    if search_filter.start_time is not None:
        clauses.append(f"{alias}.taken_at >= {params.add(search_filter.start_time)}")
    if search_filter.end_time is not None:
        clauses.append(f"{alias}.taken_at < {params.add(search_filter.end_time)}")
    if search_filter.photo_ids:
        clauses.append(f"{alias}.external_id = ANY({params.add(list(search_filter.photo_ids))}::text[])")
    return clauses


def exact_search(
    collection_id: int,
    vectors: list[np.ndarray],
    search_filter: SearchFilter,
    max_distance: float | None,
    cursor: Cursor | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """Exact per-collection search grouped by photo: each photo once with its best face, ordered by
    (distance, photo key). The scan goes through the (collection_id, id) primary key."""
    params = Params()
    collection = params.add(collection_id)
    distance = _distance_expr(params, vectors)
    photo_clauses = photo_filter_clauses(params, search_filter)
    # Filters restrict photos, so applying them before grouping saves distance computations.
    inner_join = ""
    inner_where = ""
    if photo_clauses:
        inner_join = f"JOIN photos p ON p.collection_id = {collection} AND p.id = f.photo_id"
        inner_where = "AND " + " AND ".join(photo_clauses)
    outer: list[str] = []
    if max_distance is not None:
        outer.append(f"b.distance <= {params.add(max_distance)}")
    if cursor is not None:
        outer.append(f"(b.distance, b.photo_key) > ({params.add(cursor.distance)}, {params.add(cursor.photo_key)})")
    outer_where = ("WHERE " + " AND ".join(outer)) if outer else ""
    # The innermost query keeps each photo's best face; only the page's rows are then joined for
    # their box and photo (joining before the LIMIT would fetch every photo of the collection).
    sql = f"""
        SELECT top.photo_key, top.face_id, top.distance, fb.box, ph.external_id, ph.metadata, ph.taken_at
        FROM (
            SELECT b.photo_key, b.face_id, b.distance
            FROM (
                SELECT DISTINCT ON (f.photo_id) f.photo_id AS photo_key, f.id AS face_id, {distance} AS distance
                FROM faces f {inner_join}
                WHERE f.collection_id = {collection} AND f.photo_id IS NOT NULL {inner_where}
                ORDER BY f.photo_id, distance, f.id
            ) b
            {outer_where}
            ORDER BY b.distance, b.photo_key
            LIMIT {params.add(limit)}
        ) top
        JOIN faces fb ON fb.collection_id = {collection} AND fb.id = top.face_id
        JOIN photos ph ON ph.collection_id = {collection} AND ph.id = top.photo_key
        ORDER BY top.distance, top.photo_key
    """
    return sql, params.values


def exact_candidates(
    collection_id: int,
    vectors: list[np.ndarray],
    search_filter: SearchFilter,
    max_distance: float | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The `limit` nearest faces of one collection by an exact scan (a top-N heapsort, cheaper than
    grouping every face by photo); the caller groups them, and falls back to `exact_search` when
    they hold too few photos."""
    params = Params()
    collection = params.add(collection_id)
    distance = _distance_expr(params, vectors)
    clauses = photo_filter_clauses(params, search_filter)
    join = f"JOIN photos p ON p.collection_id = {collection} AND p.id = f.photo_id" if clauses else ""
    if max_distance is not None:
        clauses.append(f"{distance} <= {params.add(max_distance)}")
    where = ("AND " + " AND ".join(clauses)) if clauses else ""
    # Photo details are joined after the LIMIT, for the candidates only.
    sql = f"""
        SELECT c.photo_key, c.face_id, c.distance, c.box, ph.external_id, ph.metadata, ph.taken_at
        FROM (
            SELECT f.photo_id AS photo_key, f.id AS face_id, {distance} AS distance, f.box
            FROM faces f {join}
            WHERE f.collection_id = {collection} AND f.photo_id IS NOT NULL {where}
            ORDER BY distance, f.id
            LIMIT {params.add(limit)}
        ) c
        JOIN photos ph ON ph.collection_id = {collection} AND ph.id = c.photo_key
        ORDER BY c.distance, c.face_id
    """
    return sql, params.values


def filtered_photo_count(collection_id: int, search_filter: SearchFilter, bound: int) -> tuple[str, list[Any]]:
    """How many of the collection's photos pass the filter, counted up to `bound` only (the GIN
    index on metadata and the (collection_id, ...) keys find them)."""
    params = Params()
    collection = params.add(collection_id)
    clauses = photo_filter_clauses(params, search_filter)
    where = ("AND " + " AND ".join(clauses)) if clauses else ""
    sql = f"""
        SELECT count(*) FROM (
            SELECT 1 FROM photos p WHERE p.collection_id = {collection} {where} LIMIT {params.add(bound)}
        ) s
    """
    return sql, params.values


def ann_candidates(
    collection_id: int, vector: np.ndarray, search_filter: SearchFilter, limit: int
) -> tuple[str, list[Any]]:
    """Nearest faces of one collection by the HNSW index (`ORDER BY embedding <=> q LIMIT n` is
    the shape pgvector's index scan serves); grouping by photo happens in the caller."""
    params = Params()
    collection = params.add(collection_id)
    query = params.add(vector)
    photo_clauses = photo_filter_clauses(params, search_filter)
    join = ""
    where = ""
    if photo_clauses:
        join = f"JOIN photos p ON p.collection_id = {collection} AND p.id = f.photo_id"
        where = "AND " + " AND ".join(photo_clauses)
    sql = f"""
        SELECT c.photo_key, c.face_id, c.distance, c.box, ph.external_id, ph.metadata, ph.taken_at
        FROM (
            SELECT f.photo_id AS photo_key, f.id AS face_id, f.embedding <=> {query} AS distance, f.box
            FROM faces f {join}
            WHERE f.collection_id = {collection} AND f.photo_id IS NOT NULL {where}
            ORDER BY f.embedding <=> {query}
            LIMIT {params.add(limit)}
        ) c
        JOIN photos ph ON ph.collection_id = {collection} AND ph.id = c.photo_key
        ORDER BY c.distance, c.face_id
    """
    return sql, params.values


def hnsw_index_name(collection_id: int) -> str:
    return f"faces_hnsw_{int(collection_id)}"


def create_hnsw_index(collection_id: int, m: int, ef_construction: int) -> str:
    """DDL of a collection's partial HNSW index. DDL takes no parameters, so the values are
    integers of our own (the collection's serial id and two settings), forced through int()."""
    cid = int(collection_id)
    return (
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {hnsw_index_name(cid)} ON faces "
        f"USING hnsw (embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE collection_id = {cid} AND photo_id IS NOT NULL"
    )
