"""The asyncpg pool: migrations first (they create the vector extension), then a pool whose every
connection has pgvector's binary codec registered, so vectors never travel as text."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import asyncpg
import numpy as np
from pgvector import Vector
from pgvector.asyncpg import register_vector

from search_service.config import DatabaseSettings
from search_service.metrics import DB_POOL_IN_USE, DB_POOL_SIZE
from search_service.migrations import migrate

_VECTOR_HEADER = struct.Struct(">HH")


@dataclass(frozen=True)
class PgvectorVersion:
    """The installed pgvector extension's version, e.g. (0, 6, 2)."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> PgvectorVersion:
        return cls(tuple(int(p) for p in text.split("-")[0].split(".") if p.isdigit()))

    @property
    def has_iterative_scan(self) -> bool:
        """`hnsw.iterative_scan` (filtered HNSW that keeps scanning) arrived in 0.8.0."""
        return self.parts >= (0, 8)

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


@dataclass
class Database:
    pool: asyncpg.Pool
    pgvector: PgvectorVersion

    async def close(self) -> None:
        await self.pool.close()


def encode_vector(value: np.ndarray | Vector | list[float]) -> bytes:
    """pgvector's binary format (uint16 dim, uint16 unused, big-endian float32s), straight from
    numpy: several times cheaper than going through pgvector.Vector on the bulk path."""
    if isinstance(value, Vector):
        return value.to_binary()
    array = np.asarray(value, dtype=">f4")
    if array.ndim != 1:
        raise ValueError("expected a 1-d vector")
    return _VECTOR_HEADER.pack(array.shape[0], 0) + array.tobytes()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)
    # Same wire format as register_vector's codec; only the encoder is swapped for a faster one.
    await conn.set_type_codec(
        "vector", schema="public", encoder=encode_vector, decoder=Vector.from_binary, format="binary"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset without asyncpg's reset query: that query is a round trip per checkout, and this
    service changes session state only with transaction-local settings (set_config(..., true)).
    asyncpg still rolls back any open transaction itself before this runs."""


async def open_database(url: str, settings: DatabaseSettings) -> Database:
    """Migrates the schema (under an advisory lock) and opens the pool."""
    conn = await asyncpg.connect(url, timeout=settings.command_timeout_s)
    try:
        await migrate(conn)
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        command_timeout=settings.command_timeout_s,
        init=_init_connection,
        reset=_keep_session,
    )
    database = Database(pool=pool, pgvector=PgvectorVersion.parse(version))
    DB_POOL_SIZE.set_function(pool.get_size)
    DB_POOL_IN_USE.set_function(lambda: pool.get_size() - pool.get_idle_size())
    return database
