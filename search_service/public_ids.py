"""Ids clients see, made opaque: a face id is its (collection, face) pair encrypted as one AES block,
so nothing of the global sequence shows and an id means nothing in another collection; page tokens
are sealed with AES-GCM. The key is made once per database (migration 4) and shared by replicas."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facesearch.errors import InvalidArgument, NotFound

_PAIR = struct.Struct(">QQ")
_FACE_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_NONCE_BYTES = 12


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PublicIds:
    def __init__(self, secret: bytes) -> None:
        # Separate keys per use, derived from the one stored secret.
        self._block = Cipher(algorithms.AES(hmac.digest(secret, b"face-ids", hashlib.sha256)), modes.ECB())
        self._aead = AESGCM(hmac.digest(secret, b"page-tokens", hashlib.sha256))

    @classmethod
    def ephemeral(cls) -> PublicIds:
        """A random key: ids last as long as this object (tests, tools without a database)."""
        return cls(os.urandom(32))

    def face_id(self, collection_id: int, face_id: int) -> str:
        """The id clients see for a face: 22 URL-safe characters. A single AES block is a keyed
        permutation, so ids never collide, never repeat across collections and reveal no order."""
        encryptor = self._block.encryptor()
        return _b64encode(encryptor.update(_PAIR.pack(collection_id, face_id)) + encryptor.finalize())

    def parse_face_id(self, collection_id: int, text: str) -> int:
        """The face behind a public id, which must belong to `collection_id`: an id of another
        collection (or tenant) is NOT_FOUND, like a face that never existed."""
        if not _FACE_ID.fullmatch(text):
            raise InvalidArgument(f"face_id {text[:40]!r} is not a face id this service issued")
        decryptor = self._block.decryptor()
        owner, face = _PAIR.unpack(decryptor.update(_b64decode(text)) + decryptor.finalize())
        if owner != collection_id:
            raise NotFound(f"face {text} not found")
        return face

    def seal(self, payload: bytes, bound_to: bytes = b"") -> str:
        """An authenticated, encrypted token of `payload` (e.g. a page cursor)."""
        nonce = os.urandom(_NONCE_BYTES)
        return _b64encode(nonce + self._aead.encrypt(nonce, payload, bound_to))

    def open(self, token: str, bound_to: bytes = b"") -> bytes:
        try:
            raw = _b64decode(token)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to)
        except (binascii.Error, ValueError, InvalidTag):
            raise InvalidArgument("page_token is not a token this service issued") from None


async def load_public_ids(pool: asyncpg.Pool) -> PublicIds:
    secret = await pool.fetchval("SELECT secret FROM service_secrets WHERE name = 'public_ids'")
    return PublicIds(bytes(secret))
