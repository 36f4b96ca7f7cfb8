"""The one check every request field passes through before a handler sees it: bodies that do not
parse, NUL characters in text, NaN/infinity in JSON (Struct) values and over-deep nesting become
INVALID_ARGUMENT naming the field, never an internal error further down (PostgreSQL, JSON)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from facesearch.errors import InvalidArgument

# Message nesting a request may have; every JSON level of a Struct is two (Value, Struct), so this
# allows ~30 levels of metadata. The protobuf parser itself refuses 100.
MAX_DEPTH = 64

_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_JSON_VALUE = struct_pb2.Value.DESCRIPTOR


class Malformed:
    """Stands in for a request body that could not be parsed (truncated, wrong wire types, nested
    past the parser's limit). Handlers of request streams answer it as that item's own error."""

    def __init__(self, method: str, reason: str) -> None:
        self.error = InvalidArgument(f"the {method} request could not be parsed ({reason})")


def tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    """`deserializer` returning a Malformed instead of raising: grpc turns a raising deserializer
    into UNKNOWN (unary) or INTERNAL (streams), and in a stream it ends the whole call."""

    def deserialize(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as exc:
            return Malformed(method, str(exc)[:200] or "not a valid protobuf message")

    return deserialize


def check_request(request: Any) -> None:
    """Raises InvalidArgument for a Malformed body or the first bad field of a parsed one."""
    if isinstance(request, Malformed):
        raise request.error
    if isinstance(request, Message):
        _check_message(request, "", 0)


def _check_message(message: Message, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{path or 'request'} is nested more than {MAX_DEPTH} levels deep")
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    item_path = f"{name}[{_short(key)}]"
                    if isinstance(key, str):
                        _check_text(key, f"{name} key")
                    _check_value(value_field, item, item_path, depth + 1)
            elif field.is_repeated:
                for index, item in enumerate(value):
                    _check_message(item, f"{name}[{index}]", depth + 1)
            else:
                _check_message(value, name, depth + 1)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{name}[{index}]", depth)
        else:
            _check_value(field, value, name, depth)


def _check_value(field: FieldDescriptor, value: Any, path: str, depth: int) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(value, path, depth)
    elif field.type == FieldDescriptor.TYPE_STRING:
        _check_text(value, path)
    elif field.type in _FLOATS and field.containing_type is _JSON_VALUE and not math.isfinite(value):
        # JSON has no NaN or infinity (jsonb refuses them); other float fields are checked, with
        # their own ranges, by the services' domain validation.
        raise InvalidArgument(f"{path} must be a finite number (got {value})")


def _check_text(value: str, path: str) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000; no name, id or label needs it.
    if "\x00" in value:
        raise InvalidArgument(f"{path} must not contain NUL characters")


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def struct_to_dict(message: struct_pb2.Struct, path: str = "metadata") -> dict[str, Any]:
    """A checked Struct as a JSON object (numbers that are whole come back as ints, as
    json_format does)."""
    _check_message(message, path, 0)
    return json_format.MessageToDict(message)
