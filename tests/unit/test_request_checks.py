"""Unit tests of the hostile-input layer: the request check every field passes through
(facesearch.wire), the one mapping of infrastructure errors to UNAVAILABLE (facesearch.errors),
error results that hold no traceback, forged page tokens, streams that stop when draining."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import math
import weakref

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2

from facesearch import wire
from facesearch.errors import InvalidArgument, NotFound, detached, status_of
from facesearch.streams import UntilDraining
from facesearch.v1 import embedder_pb2, search_pb2
from search_service.public_ids import PublicIds
from search_service.search import PageToken


def _struct(value: object) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"v": value})
    return message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_any_struct_are_invalid(bad: float) -> None:
    for request in (
        search_pb2.IndexPhotosRequest(collection="c", external_id="p", metadata=_struct({"deep": [1, bad]})),
        search_pb2.SearchRequest(collection="c", filter=search_pb2.SearchFilter(metadata=_struct(bad))),
        search_pb2.EnrollPersonRequest(collection="c", external_id="p", metadata=_struct(bad)),
    ):
        with pytest.raises(InvalidArgument, match="finite"):
            wire.check_request(request)
    with pytest.raises(InvalidArgument, match="finite"):
        wire.struct_to_dict(_struct(bad))


def test_nul_in_any_text_field_is_invalid() -> None:
    for request in (
        search_pb2.CreateCollectionRequest(name="c", display_name="a\x00b"),
        search_pb2.SearchRequest(collection="c", filter=search_pb2.SearchFilter(photo_ids=["ok", "x\x00"])),
        search_pb2.DeletePhotoRequest(collection="c", external_id="\x00"),
        embedder_pb2.EmbedStreamRequest(request_id="r\x00"),
        search_pb2.IndexPhotosRequest(metadata=_struct({"k\x00": 1})),
    ):
        with pytest.raises(InvalidArgument, match="NUL"):
            wire.check_request(request)


def test_deep_nesting_is_invalid_and_shallow_json_passes() -> None:
    value: object = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(InvalidArgument, match="nested"):
        wire.check_request(search_pb2.IndexPhotosRequest(metadata=_struct(value)))
    wire.check_request(search_pb2.IndexPhotosRequest(metadata=_struct({"a": [{"b": [1, 2.5, "x", None]}]})))


def test_unparsable_body_becomes_invalid_argument() -> None:
    deserialize = wire.tolerant(search_pb2.SearchRequest.FromString, "Search")
    body = search_pb2.SearchRequest(collection="c" * 50).SerializeToString()
    parsed = deserialize(body[:10])
    assert isinstance(parsed, wire.Malformed)
    with pytest.raises(InvalidArgument, match="Search request could not be parsed"):
        wire.check_request(parsed)
    assert deserialize(body) == search_pb2.SearchRequest(collection="c" * 50)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InternalClientError("protocol state"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_infrastructure_errors_are_unavailable(exc: BaseException) -> None:
    assert status_of(exc)[0] is grpc.StatusCode.UNAVAILABLE
    assert status_of(detached(exc))[0] is grpc.StatusCode.UNAVAILABLE


def test_unexpected_errors_stay_internal_with_a_generic_message() -> None:
    assert status_of(KeyError("secret")) == (grpc.StatusCode.INTERNAL, "internal error")


def test_detached_errors_keep_nothing_of_the_frame_that_raised_them() -> None:
    class Image:
        def __init__(self, data: bytes) -> None:
            self.data = data

    def fail(image: Image) -> None:
        raise NotFound("gone")

    image = Image(b"x" * 1024)
    alive = weakref.ref(image)
    try:
        fail(image)
    except NotFound as exc:
        error = detached(exc)
    del image
    gc.collect()
    assert alive() is None
    assert status_of(error) == (grpc.StatusCode.NOT_FOUND, "gone")


def _payload(value: object) -> bytes:
    return json.dumps(value).encode()


_IDS = PublicIds.ephemeral()


@pytest.mark.parametrize(
    "payload",
    [
        b'{"d": 0.5, "k": 1e400, "q": "h"}',
        _payload({"d": 0.5, "k": 2**70, "q": "h"}),
        _payload({"d": 0.5, "k": -1, "q": "h"}),
        b'{"d": 1e400, "k": 1, "q": "h"}',
        _payload({"d": "x", "k": 1, "q": "h"}),
        _payload({"d": 0.5, "k": 1.5, "q": "h"}),
        _payload([1, 2]),
        b"[" * 100_000,
        b"[" * 300,
    ],
)
def test_forged_page_tokens_are_invalid(payload: bytes) -> None:
    """Refused both as plain base64 (not sealed) and sealed with the service's own key (the checks
    after the seal hold even if the key leaked)."""
    for token in (base64.urlsafe_b64encode(payload).decode(), _IDS.seal(payload)):
        with pytest.raises(InvalidArgument, match="page_token"):
            PageToken.decode(token, "h", _IDS)


async def test_until_draining_stops_reading_and_says_so() -> None:
    draining = asyncio.Event()
    taken = asyncio.Queue()

    async def requests():
        yield 1
        yield 2
        await asyncio.sleep(3600)  # a client that keeps its stream open
        yield 3

    stream = UntilDraining(requests(), draining)

    async def consume() -> None:
        async for item in stream:
            await taken.put(item)

    task = asyncio.create_task(consume())
    assert [await taken.get(), await taken.get()] == [1, 2]
    draining.set()
    await asyncio.wait_for(task, 5)
    assert stream.interrupted


async def test_until_draining_passes_a_whole_stream() -> None:
    async def requests():
        for i in range(3):
            yield i

    stream = UntilDraining(requests(), asyncio.Event())
    assert [item async for item in stream] == [0, 1, 2]
    assert not stream.interrupted
