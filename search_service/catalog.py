"""Collections: create, get with counts, list a page at a time, delete with everything in them."""

from __future__ import annotations

import base64
import binascii

from facesearch.errors import InvalidArgument
from search_service import validation
from search_service.domain import Collection
from search_service.repository import Repository


def encode_page_token(after_name: str) -> str:
    return base64.urlsafe_b64encode(after_name.encode()).decode()


def decode_page_token(token: str) -> str:
    if not token:
        return ""
    try:
        name = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        name = ""
    if not validation.COLLECTION_NAME.fullmatch(name):
        raise InvalidArgument("page_token is not a token this service issued")
    return name


class Catalog:
    def __init__(self, repository: Repository) -> None:
        self._repo = repository

    async def create(self, tenant: str, name: str, display_name: str) -> Collection:
        validation.collection_name(name)
        if len(display_name) > 1024:
            raise InvalidArgument("display_name is longer than 1024 characters")
        return await self._repo.create_collection(tenant, name, display_name)

    async def get(self, tenant: str, name: str, with_counts: bool = True) -> Collection:
        return await self._repo.get_collection(tenant, validation.collection_name(name), with_counts=with_counts)

    async def list(self, tenant: str, page_size: int, page_token: str) -> tuple[list[Collection], str]:
        size = validation.top_k(page_size, default=100, maximum=1000, what="page_size")
        rows = await self._repo.list_collections(tenant, decode_page_token(page_token), size + 1)
        if len(rows) > size:
            return rows[:size], encode_page_token(rows[size - 1].name)
        return rows, ""

    async def delete(self, tenant: str, name: str) -> tuple[int, int, int]:
        return await self._repo.delete_collection(tenant, validation.collection_name(name))
