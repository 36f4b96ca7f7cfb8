"""Fuzzing every RPC of both services (hypothesis, fixed seed): valid requests with one field made
hostile (NaN, infinities, huge and negative numbers, NUL and very long text, deep or bad JSON,
timestamps out of range, empty and broken images) or their bytes broken (truncated, flipped,
spliced, nested past the parser's limit). No answer may be INTERNAL or UNKNOWN, a bad item in a
stream gets its own answer while the stream goes on, and both servers stay SERVING."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facesearch.v1 import embedder_pb2, face_pb2, search_pb2, search_pb2_grpc
from tests.faces import FaceSpec, make_photo
from tests.integration.test_hostile_input import with_deep_metadata

# Examples over all RPCs together (~12 s here); the same ones run every time (CI-stable).
# FACESEARCH_FUZZ_EXAMPLES=5000 FACESEARCH_FUZZ_RANDOM=1 explores further with fresh examples.
EXAMPLES = int(os.environ.get("FACESEARCH_FUZZ_EXAMPLES", "1500"))
RANDOM = os.environ.get("FACESEARCH_FUZZ_RANDOM") == "1"
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FORBIDDEN_VALUES = {code.value[0] for code in FORBIDDEN}
COLLECTION = "fuzz"
_ids = itertools.count()

FACE = make_photo([FaceSpec(80, 60, 30, 9)], size=(160, 120))
JPEG_CUT_WITH_EOI = FACE[: len(FACE) // 2] + b"\xff\xd9"

TEXTS = ["", "\x00", "a\x00b", "x" * 10_000, "💥" * 300, "../../etc/passwd", "' OR 1=1 --", "fuzz", "\ud7ff\ue000"]
BYTES = [b"", b"\x00" * 16, b"\xff\xd8\xff", JPEG_CUT_WITH_EOI, FACE[:-2], b"GIF89a" + b"\x00" * 32, FACE]
FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 1e9, -1.0, 2.0]
INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
}


def hostile_json(draw: Callable) -> object:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if kind == 1:
        value: object = 1
        for _ in range(draw(st.integers(20, 45))):
            value = [value] if draw(st.booleans()) else {"k": value}
        return value
    if kind == 2:
        return {draw(st.sampled_from(TEXTS)): draw(st.sampled_from(TEXTS))}
    if kind == 3:
        return [float(i) for i in range(draw(st.integers(0, 3000)))]
    if kind == 4:
        return draw(st.sampled_from([1e308, -1e308, 2.0**63, 2.0**64, 0.1]))
    return draw(
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=8,
        )
    )


def mutate_field(draw: Callable, message: Message, depth: int = 0) -> None:
    """Makes one field of `message` (or of a message inside it) hostile."""
    fields = list(message.DESCRIPTOR.fields)
    if not fields:  # e.g. GetModelInfoRequest: only its bytes can be broken
        return
    field = draw(st.sampled_from(fields))
    name = field.name
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Struct":
            struct = struct_pb2.Struct()
            struct.update({"v": hostile_json(draw)})
            target = getattr(message, name)
            if field.is_repeated:
                target.add().CopyFrom(struct)
            else:
                target.CopyFrom(struct)
            return
        if field.message_type.full_name == "google.protobuf.Timestamp":
            stamp = getattr(message, name)
            stamp.seconds = draw(st.sampled_from([-(2**62), 2**62, -62135596801, 253402300800, 0]))
            stamp.nanos = draw(st.sampled_from([0, -1, 2**31 - 1, 999_999_999]))
            return
        if field.is_repeated:
            mutate_field(draw, getattr(message, name).add(), depth + 1)
        elif depth < 3:
            mutate_field(draw, getattr(message, name), depth + 1)
        return
    if field.type == FieldDescriptor.TYPE_STRING:
        values = [draw(st.sampled_from(TEXTS))]
    elif field.type == FieldDescriptor.TYPE_BYTES:
        values = [draw(st.sampled_from(BYTES) | st.binary(max_size=64))]
    elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        values = [draw(st.sampled_from(FLOATS))]
    elif field.type == FieldDescriptor.TYPE_BOOL:
        values = [draw(st.booleans())]
    else:
        low, high = INT_BOUNDS.get(field.type, (0, 1))
        values = [draw(st.sampled_from([low, high, 0, -1 if low < 0 else 1, 7]))]
    if field.is_repeated:
        many = draw(st.sampled_from([1, 3, 600]))
        getattr(message, name).extend(values * many)
    else:
        setattr(message, name, values[0])


def break_bytes(draw: Callable, message: Message) -> bytes:
    body = message.SerializeToString()
    kind = draw(st.integers(0, 4))
    if kind == 0 and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if kind == 1 and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    if kind == 2:
        return body + draw(st.binary(min_size=1, max_size=32))
    if kind == 3 and "metadata" in message.DESCRIPTOR.fields_by_name:
        return with_deep_metadata(message, draw(st.sampled_from([90, 200])))
    return draw(st.binary(max_size=64))


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    base: Callable[[], Message]
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/facesearch.v1.{self.service}/{self.name}"


def _embedding() -> search_pb2.EmbeddingQuery:
    return search_pb2.EmbeddingQuery(values=[1.0] * 512)


RPCS = [
    Rpc(
        "FaceSearchService", "CreateCollection", lambda: search_pb2.CreateCollectionRequest(name=f"fz-{next(_ids):08d}")
    ),
    Rpc("FaceSearchService", "GetCollection", lambda: search_pb2.GetCollectionRequest(name=COLLECTION)),
    Rpc("FaceSearchService", "ListCollections", lambda: search_pb2.ListCollectionsRequest(page_size=5)),
    Rpc(
        "FaceSearchService",
        "DeleteCollection",
        lambda: search_pb2.DeleteCollectionRequest(name=f"gone-{next(_ids):08d}"),
    ),
    Rpc(
        "FaceSearchService",
        "IndexPhotos",
        lambda: search_pb2.IndexPhotosRequest(collection=COLLECTION, external_id="m", image=FACE),
        streaming=True,
    ),
    Rpc(
        "FaceSearchService",
        "DeletePhoto",
        lambda: search_pb2.DeletePhotoRequest(collection=COLLECTION, external_id="x"),
    ),
    Rpc(
        "FaceSearchService",
        "Search",
        lambda: search_pb2.SearchRequest(collection=COLLECTION, embedding=_embedding(), top_k=3),
    ),
    Rpc(
        "FaceSearchService",
        "EnrollPerson",
        lambda: search_pb2.EnrollPersonRequest(collection=COLLECTION, external_id="person", images=[FACE]),
    ),
    Rpc(
        "FaceSearchService",
        "IdentifyPerson",
        lambda: search_pb2.IdentifyPersonRequest(
            collection=COLLECTION, face=search_pb2.FaceQuery(embedding=_embedding())
        ),
    ),
    Rpc(
        "FaceSearchService",
        "VerifyPerson",
        lambda: search_pb2.VerifyPersonRequest(
            collection=COLLECTION, person_id="person", face=search_pb2.FaceQuery(embedding=_embedding())
        ),
    ),
    Rpc(
        "FaceSearchService",
        "DeletePerson",
        lambda: search_pb2.DeletePersonRequest(collection=COLLECTION, external_id="x"),
    ),
    Rpc(
        "EmbedderService",
        "Embed",
        lambda: embedder_pb2.EmbedRequest(
            input=embedder_pb2.ImageInput(encoded_image=FACE), options=face_pb2.EmbedOptions(return_landmarks=True)
        ),
    ),
    Rpc(
        "EmbedderService",
        "EmbedStream",
        lambda: embedder_pb2.EmbedStreamRequest(request_id="m", input=embedder_pb2.ImageInput(encoded_image=FACE)),
        streaming=True,
    ),
    Rpc("EmbedderService", "GetModelInfo", lambda: embedder_pb2.GetModelInfoRequest()),
]


@st.composite
def cases(draw: Callable) -> tuple[Rpc, bytes]:
    rpc = draw(st.sampled_from(RPCS))
    message = rpc.base()
    if draw(st.integers(0, 3)) == 0:
        return rpc, break_bytes(draw, message)
    for _ in range(draw(st.integers(1, 2))):
        mutate_field(draw, message)
    return rpc, message.SerializeToString()


def _valid_stream_items(rpc: Rpc) -> list[bytes]:
    """Two good items around the hostile one: identical bytes under fixed ids, so after the first
    example they are answered without the embedder (UNCHANGED) and the fuzz stays fast."""
    if rpc.name == "IndexPhotos":
        make = lambda i: search_pb2.IndexPhotosRequest(collection=COLLECTION, external_id=f"good{i}", image=FACE)  # noqa: E731
    else:
        make = lambda i: embedder_pb2.EmbedStreamRequest(  # noqa: E731
            request_id=f"good{i}", input=embedder_pb2.ImageInput(encoded_image=FACE)
        )
    return [make(i).SerializeToString() for i in range(2)]


def run_fuzz(channels: dict[str, grpc.Channel]) -> dict[str, int]:
    seen: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    def one(case: tuple[Rpc, bytes]) -> None:
        rpc, body = case
        channel = channels[rpc.service]
        seen[rpc.name] = seen.get(rpc.name, 0) + 1
        if not rpc.streaming:
            try:
                channel.unary_unary(rpc.path)(body, timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() not in FORBIDDEN, (rpc.name, body[:200], exc.code(), exc.details())
            return
        good = _valid_stream_items(rpc)
        items = [good[0], body, good[1]]
        call = channel.stream_stream(rpc.path)(iter(items), timeout=60)
        try:
            answers = list(call)
        except grpc.RpcError as exc:
            raise AssertionError(f"{rpc.name} stream ended by one bad item: {exc.code()} {exc.details()}") from None
        assert len(answers) == len(items), (rpc.name, body[:200], len(answers))
        parse = search_pb2.IndexPhotosResponse if rpc.name == "IndexPhotos" else embedder_pb2.EmbedStreamResponse
        for raw in answers:
            status = parse.FromString(raw).status
            assert status.code not in FORBIDDEN_VALUES, (rpc.name, body[:200], status)

    one()
    return seen


async def test_fuzz_every_rpc_of_both_services(search_server, embedder_server) -> None:
    async with grpc.aio.insecure_channel(search_server.target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        try:
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=COLLECTION))
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.ALREADY_EXISTS:
                raise
        await stub.EnrollPerson(
            search_pb2.EnrollPersonRequest(collection=COLLECTION, external_id="person", images=[FACE])
        )
    channels = {
        "FaceSearchService": grpc.insecure_channel(search_server.target),
        "EmbedderService": grpc.insecure_channel(embedder_server.target),
    }
    try:
        # Sync clients on a thread: the in-process servers keep this event loop.
        seen = await asyncio.to_thread(run_fuzz, channels)
    finally:
        for ch in channels.values():
            ch.close()
    print(f"\nfuzzed calls per RPC: {seen}")
    assert set(seen) == {rpc.name for rpc in RPCS}, seen  # every RPC was fuzzed
    assert sum(seen.values()) >= EXAMPLES, seen
    for target in (search_server.target, embedder_server.target):
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
