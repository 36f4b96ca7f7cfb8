"""Prometheus metrics of the search service beyond the shared per-RPC ones: database query
latency, connection-pool use, embedder call latency and the descriptor cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

DB_QUERY_LATENCY = Histogram(
    "facesearch_search_db_query_seconds",
    "Time of one repository operation against PostgreSQL, by operation.",
    ["operation"],
    buckets=_BUCKETS,
)
DB_POOL_SIZE = Gauge("facesearch_search_db_pool_size", "Connections open in the asyncpg pool.")
DB_POOL_IN_USE = Gauge("facesearch_search_db_pool_in_use", "Connections of the asyncpg pool checked out.")
EMBEDDER_CALL_LATENCY = Histogram(
    "facesearch_search_embedder_call_seconds",
    "Time of one embedder call attempt, by method and status code.",
    ["method", "code"],
    buckets=_BUCKETS,
)
EMBEDDER_RETRIES = Counter(
    "facesearch_search_embedder_retries_total",
    "Embedder calls sent again (to the next pod) after an UNAVAILABLE answer.",
)
INDEX_WRITE_PHOTOS = Histogram(
    "facesearch_search_index_write_photos",
    "Photos written per IndexPhotos transaction (ready photos are grouped).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CACHE_LOOKUPS = Counter(
    "facesearch_search_descriptor_cache_lookups_total",
    "Searches that asked this replica's descriptor cache, by result: hit (answered from memory), "
    "miss (not cached) or stale (cached at an older faces version); misses and stale ones go to PostgreSQL.",
    ["result"],
)
CACHE_BYTES = Gauge("facesearch_search_descriptor_cache_bytes", "Bytes held by this replica's descriptor cache.")
CACHE_COLLECTIONS = Gauge(
    "facesearch_search_descriptor_cache_collections", "Collections held by this replica's descriptor cache."
)


@contextmanager
def timed_query(operation: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        DB_QUERY_LATENCY.labels(operation).observe(time.perf_counter() - started)
