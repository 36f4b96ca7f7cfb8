"""Opaque page tokens of the list calls: a keyset position plus a hash of the query it belongs to,
so a token sent with another collection, order or filter is refused instead of skipping rows.
Sealed with the service's key (search_service.public_ids): positions hold internal row ids."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from facesearch.errors import InvalidArgument
from search_service.public_ids import PublicIds

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Tokens this service issues are ~150 characters; anything much longer is forged.
MAX_TOKEN_CHARS = 1024


# What a list page may carry (estimated from its rows), well under gRPC's default 4 MiB receive
# limit. Search and Identify responses are cut by their exact encoded size in the servicer instead.
RESPONSE_BUDGET_BYTES = 3 * 1024 * 1024


def bind(*parts: Any) -> str:
    """The hash a token is bound to: everything that decides which rows a query returns."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def encode(position: dict[str, Any], bound_to: str, ids: PublicIds) -> str:
    payload = {"p": position, "q": bound_to}
    return ids.seal(json.dumps(payload, separators=(",", ":")).encode())


def decode(token: str, bound_to: str, fields: dict[str, type], ids: PublicIds) -> dict[str, Any]:
    """The position (`fields`: name -> type) of a token this service issued for the same query;
    INVALID_ARGUMENT otherwise."""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument("page_token is not a token this service issued")
    try:
        payload = json.loads(ids.open(token))
        position, query = payload["p"], payload["q"]
    except (ValueError, KeyError, TypeError, UnicodeError, RecursionError):
        raise InvalidArgument("page_token is not a token this service issued") from None
    if query != bound_to:
        raise InvalidArgument("page_token belongs to another query; send it with the query that returned it")
    # type(), not isinstance(): a bool is no int here.
    if not isinstance(position, dict) or any(type(position.get(name)) is not kind for name, kind in fields.items()):
        raise InvalidArgument("page_token is not a token this service issued")
    return position


def microseconds(value: datetime) -> int:
    """A timestamp as whole microseconds since the epoch (PostgreSQL's precision, exact in JSON)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_microseconds(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
