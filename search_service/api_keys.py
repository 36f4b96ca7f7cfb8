"""API keys: `fsk_<id>_<secret>` made from 256 random bits, stored only as a SHA-256 hash under
their public id (which lists, logs and revocation use), and their table's SQL."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from facesearch.errors import InvalidArgument, NotFound
from search_service import validation

KEY_PREFIX = "fsk"
# `fsk_` + 12 hex digits of id + `_` + 43 base64url characters of secret (32 bytes).
KEY_PATTERN = re.compile(r"fsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{12}")
MAX_DESCRIPTION = 1024


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    tenant: str
    description: str
    created_at: datetime
    revoked_at: datetime | None
    secret_hash: bytes = b""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: `key` is the only copy of the secret there will ever be."""

    record: ApiKey
    key: str


def hash_key(key: str) -> bytes:
    """A plain SHA-256 suffices: the secret has 256 random bits, so there is nothing to brute-force
    and no salt or slow hash to add (what GitHub and cloud APIs do with their tokens)."""
    return hashlib.sha256(key.encode()).digest()


def key_id_of(key: str) -> str | None:
    """The id of a well-formed key, None for anything else."""
    match = KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def generate_key() -> tuple[str, str]:
    """(id, key) of a new random key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def _record(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant=row["tenant"],
        description=row["description"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        secret_hash=bytes(row["secret_hash"]),
    )


class ApiKeyStore:
    """The api_keys table (migration 4)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, tenant: str, description: str = "") -> NewApiKey:
        validation.tenant(tenant)
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION} characters")
        while True:
            key_id, key = generate_key()
            try:
                row = await self._pool.fetchrow(
                    "INSERT INTO api_keys (id, tenant, description, secret_hash) VALUES ($1, $2, $3, $4) RETURNING *",
                    key_id,
                    tenant,
                    description,
                    hash_key(key),
                )
            except asyncpg.UniqueViolationError:
                continue  # 48-bit ids: a collision is rare, and another draw settles it
            return NewApiKey(_record(row), key)

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self._pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        return None if row is None else _record(row)

    async def list(self, tenant: str | None = None) -> list[ApiKey]:
        rows = await self._pool.fetch(
            "SELECT * FROM api_keys WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, created_at, id", tenant
        )
        return [_record(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKey:
        """Marks the key revoked (kept, so logs naming it stay explainable); idempotent."""
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise InvalidArgument(f"{key_id[:40]!r} is not a key id (12 hex digits, as `keys list` shows)")
        row = await self._pool.fetchrow(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING *", key_id
        )
        if row is None:
            raise NotFound(f"no API key with id {key_id}")
        return _record(row)
