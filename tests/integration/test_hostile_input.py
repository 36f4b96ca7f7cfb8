"""Hostile requests and faults against real servers (issue 8): every bad request gets a clear
status of its own, a bad item in a stream never ends the stream, concurrent identical indexing
stores nothing new, pages fit the response limit, shutdown tells open streams early, and a
dropped database connection is UNAVAILABLE."""

from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, face_pb2, search_pb2, search_pb2_grpc
from search_service.public_ids import PublicIds, load_public_ids
from tests.faces import FaceSpec, make_photo
from tests.fixtures.search import RunningSearch, search_database_url, search_running
from tests.integration.test_search_memory import wait_serving
from tests.integration.test_search_process import free_port

_names = itertools.count()
OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def photo(i: int) -> bytes:
    return make_photo([FaceSpec(160 + (i % 5) * 20, 200, 50, 40 + i)], size=(320, 240), seed=i)


def struct(value: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def index(
    stub: search_pb2_grpc.FaceSearchServiceStub, requests: list[search_pb2.IndexPhotosRequest]
) -> list[search_pb2.IndexPhotosResponse]:
    async def gen() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
        for r in requests:
            yield r

    return [r async for r in stub.IndexPhotos(gen())]


@pytest.fixture
async def stub(search_server: RunningSearch) -> AsyncIterator[search_pb2_grpc.FaceSearchServiceStub]:
    async with grpc.aio.insecure_channel(search_server.target) as channel:
        yield search_pb2_grpc.FaceSearchServiceStub(channel)


async def collection(stub: search_pb2_grpc.FaceSearchServiceStub) -> str:
    name = unique("hostile")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    return name


async def expect_invalid(call: asyncio.Future | object, match: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert match in caught.value.details(), caught.value.details()


# 1. NaN / infinity in any Struct ------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_non_finite_struct_values_are_invalid_and_the_stream_goes_on(stub, bad: float) -> None:
    name = await collection(stub)
    responses = await index(
        stub,
        [
            search_pb2.IndexPhotosRequest(collection=name, external_id="before", image=photo(0)),
            search_pb2.IndexPhotosRequest(
                collection=name, external_id="bad", image=photo(1), metadata=struct({"score": bad})
            ),
            search_pb2.IndexPhotosRequest(collection=name, external_id="after", image=photo(2)),
        ],
    )
    by_id = {r.external_id: r.status for r in responses}
    assert by_id["before"].code == OK and by_id["after"].code == OK, by_id
    assert by_id["bad"].code == INVALID and "finite" in by_id["bad"].message
    await expect_invalid(
        stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512),
                filter=search_pb2.SearchFilter(metadata=struct({"x": [1, bad]})),
            )
        ),
        "finite",
    )
    await expect_invalid(
        stub.EnrollPerson(
            search_pb2.EnrollPersonRequest(
                collection=name, external_id="p", images=[photo(3)], metadata=struct({"age": bad})
            )
        ),
        "finite",
    )


# 2. Forged page tokens -------------------------------------------------------------------------


def _forge(payload: bytes, ids: PublicIds | None = None) -> str:
    """A token of `payload`: plain base64 (made without the key), or sealed with the service's own
    key (as if it had leaked: the checks after the seal must hold too)."""
    return base64.urlsafe_b64encode(payload).decode() if ids is None else ids.seal(payload)


async def test_forged_page_tokens_are_invalid(stub, search_server: RunningSearch) -> None:
    name = await collection(stub)
    await index(
        stub, [search_pb2.IndexPhotosRequest(collection=name, external_id=f"a{i}", image=photo(i)) for i in range(3)]
    )
    query = search_pb2.SearchRequest(collection=name, embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512), top_k=1)
    issued = (await stub.Search(query)).next_page_token
    assert issued
    ids = await load_public_ids(search_server.app.database.pool)
    payload = json.loads(ids.open(issued))  # the real cursor: {"d": distance, "k": photo key, "q": query hash}
    forged = [
        issued[:-4] + ("AAAA" if not issued.endswith("AAAA") else "BBBB"),  # tampered: the seal breaks
        issued[: len(issued) // 2],
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
    ]
    for key in (None, ids):
        forged += [
            _forge(json.dumps({**payload, "k": 2**70}).encode(), key),  # bound to the right query, key past int64
            _forge(json.dumps({**payload, "k": -5}).encode(), key),
            _forge(json.dumps({**payload, "d": "near"}).encode(), key),
            _forge(json.dumps(payload).replace('"k": ', '"k": 1e400, "x": ').encode(), key),
        ]
    for token in forged:
        request = search_pb2.SearchRequest()
        request.CopyFrom(query)
        request.page_token = token
        await expect_invalid(stub.Search(request), "page_token")
    # The untouched token still works.
    query.page_token = issued
    assert len((await stub.Search(query)).matches) == 1


# 3. NUL characters ------------------------------------------------------------------------------


async def test_nul_characters_are_invalid_everywhere(stub) -> None:
    name = await collection(stub)
    await expect_invalid(
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name=unique("nul"), display_name="a\x00b")), "NUL"
    )
    await expect_invalid(
        stub.Search(
            search_pb2.SearchRequest(
                collection=name,
                embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512),
                filter=search_pb2.SearchFilter(photo_ids=["ok", "bad\x00"]),
            )
        ),
        "NUL",
    )
    await expect_invalid(stub.DeletePerson(search_pb2.DeletePersonRequest(collection=name, external_id="\x00")), "NUL")
    responses = await index(
        stub,
        [
            search_pb2.IndexPhotosRequest(collection=name, external_id="x\x00", image=photo(0)),
            search_pb2.IndexPhotosRequest(collection=name, external_id="fine", image=photo(0)),
        ],
    )
    assert [r.status.code for r in responses if r.external_id == "x\x00"] == [INVALID]
    assert [r.status.code for r in responses if r.external_id == "fine"] == [OK]


# 4. Malformed protobuf --------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def with_deep_metadata(request, levels: int) -> bytes:  # type: ignore[no-untyped-def]
    """`request` serialised with a `metadata` Struct nested `levels` deep, built as raw bytes (as a
    client without upb's depth limit would send it); the server's parser refuses it."""
    struct_bytes = b""
    for _ in range(levels):
        value = _length_delimited(5, struct_bytes)  # Value.struct_value
        entry = _length_delimited(1, b"x") + _length_delimited(2, value)  # map entry: key, value
        struct_bytes = _length_delimited(1, entry)  # Struct.fields
    number = request.DESCRIPTOR.fields_by_name["metadata"].number
    return request.SerializeToString() + _length_delimited(number, struct_bytes)


async def test_malformed_bodies_are_invalid_on_unary_calls_and_one_item_in_streams(search_server) -> None:
    async with grpc.aio.insecure_channel(search_server.target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        name = await collection(stub)
        raw_search = channel.unary_unary("/facesearch.v1.FaceSearchService/Search")
        body = search_pb2.SearchRequest(
            collection=name, embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512)
        ).SerializeToString()
        await expect_invalid(raw_search(body[:-7]), "could not be parsed")
        # A Struct 200 deep: the server's parser refuses it.
        raw_enroll = channel.unary_unary("/facesearch.v1.FaceSearchService/EnrollPerson")
        enroll = search_pb2.EnrollPersonRequest(collection=name, external_id="p", images=[photo(0)])
        await expect_invalid(raw_enroll(with_deep_metadata(enroll, 200)), "could not be parsed")
        good = search_pb2.IndexPhotosRequest(collection=name, external_id="good", image=photo(0)).SerializeToString()
        deep_request = search_pb2.IndexPhotosRequest(collection=name, external_id="deep", image=photo(1))
        deep = with_deep_metadata(deep_request, 200)
        later = search_pb2.IndexPhotosRequest(collection=name, external_id="later", image=photo(2)).SerializeToString()
        raw_index = channel.stream_stream(
            "/facesearch.v1.FaceSearchService/IndexPhotos",
            response_deserializer=search_pb2.IndexPhotosResponse.FromString,
        )

        async def bodies() -> AsyncIterator[bytes]:
            for item in (good, good[:-9], deep, later):
                yield item

        responses = [r async for r in raw_index(bodies())]
    assert len(responses) == 4
    by_id = {r.external_id: r.status for r in responses if r.external_id}
    assert by_id["good"].code == OK and by_id["later"].code == OK
    unnamed = [r.status for r in responses if not r.external_id]
    assert [s.code for s in unnamed] == [INVALID, INVALID]
    assert all("could not be parsed" in s.message for s in unnamed)


# 6. Health Watch ---------------------------------------------------------------------------------


async def test_health_watch_works_on_both_servers(search_server, embedder_server) -> None:
    for target in (search_server.target, embedder_server.target):
        async with grpc.aio.insecure_channel(target) as channel:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
            first = await call.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            call.cancel()


# 8. EmbedStream duplicate request ids ---------------------------------------------------------


async def test_duplicate_request_id_keeps_each_requests_options(embedder_server) -> None:
    image = make_photo([FaceSpec(160, 120, 50, 3)], size=(320, 240))
    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        for _ in range(3):
            requests = [
                embedder_pb2.EmbedStreamRequest(
                    request_id="same",
                    input=embedder_pb2.ImageInput(encoded_image=image),
                    options=face_pb2.EmbedOptions(return_landmarks=True),
                ),
                embedder_pb2.EmbedStreamRequest(request_id="same", input=embedder_pb2.ImageInput(encoded_image=image)),
            ]

            async def gen(items=requests) -> AsyncIterator[embedder_pb2.EmbedStreamRequest]:
                for r in items:
                    yield r

            responses = [r async for r in stub.EmbedStream(gen())]
            assert len(responses) == 2
            refused = [r for r in responses if r.status.code == INVALID]
            answered = [r for r in responses if r.status.code == OK]
            assert len(refused) == 1 and "already in progress" in refused[0].status.message
            assert len(answered) == 1 and answered[0].faces
            assert all(len(f.landmarks) == 5 for f in answered[0].faces)  # the first asked for landmarks


# 10. Concurrent identical bytes, one taken_time rule ------------------------------------------


async def test_concurrent_identical_photos_store_nothing_new(stub, search_server) -> None:
    name = await collection(stub)
    image = photo(7)
    for round_ in range(6):
        request = search_pb2.IndexPhotosRequest(collection=name, external_id=f"same{round_}", image=image)
        results = await asyncio.gather(*(index(stub, [request]) for _ in range(4)))
        outcomes = sorted(search_pb2.IndexOutcome.Name(r[0].outcome) for r in results)
        assert outcomes == ["INDEX_OUTCOME_CREATED"] + ["INDEX_OUTCOME_UNCHANGED"] * 3, outcomes
    pool = search_server.app.database.pool
    face_ids = await pool.fetch(
        "SELECT id FROM faces WHERE photo_id IN (SELECT id FROM photos WHERE external_id='same0')"
    )
    again = await index(stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="same0", image=image)])
    assert again[0].outcome == search_pb2.INDEX_OUTCOME_UNCHANGED
    assert (
        await pool.fetch("SELECT id FROM faces WHERE photo_id IN (SELECT id FROM photos WHERE external_id='same0')")
        == face_ids
    )


async def test_taken_time_left_out_keeps_the_stored_time_whether_bytes_changed_or_not(stub) -> None:
    name = await collection(stub)
    taken = timestamp_pb2.Timestamp(seconds=1_500_000_000)
    await index(
        stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="t", image=photo(1), taken_time=taken)]
    )
    for image in (photo(1), photo(2)):  # identical bytes, then changed bytes, no taken_time
        (result,) = await index(stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="t", image=image)])
        assert result.status.code == OK
        reply = await stub.Search(
            search_pb2.SearchRequest(collection=name, embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512))
        )
        assert reply.matches[0].taken_time.seconds == taken.seconds


# 11. Responses stay under the limit ------------------------------------------------------------


async def test_search_pages_end_early_to_fit_the_response_limit(pg_server, embedder_server) -> None:
    url = search_database_url(pg_server, unique("fit").replace("-", "_"))
    limit = 64 * 1024
    async with search_running(url, embedder_server.target, max_response_bytes=limit) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            name = await collection(stub)
            big = {"tags": [float(i) for i in range(1200)]}  # ~6 KiB as JSON, ~13 KiB as a Struct
            image = photo(3)
            responses = await index(
                stub,
                [
                    search_pb2.IndexPhotosRequest(
                        collection=name, external_id=f"p{i}", image=image, metadata=struct(big)
                    )
                    for i in range(12)
                ],
            )
            assert all(r.status.code == OK for r in responses)
            seen: list[str] = []
            token = ""
            pages = 0
            while True:
                reply = await stub.Search(
                    search_pb2.SearchRequest(
                        collection=name,
                        embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512),
                        top_k=100,
                        page_token=token,
                    )
                )
                assert reply.ByteSize() <= limit
                assert reply.matches
                seen += [m.photo_id for m in reply.matches]
                pages += 1
                token = reply.next_page_token
                if not token:
                    break
            assert pages > 1
            assert sorted(seen) == sorted(f"p{i}" for i in range(12))
            # IdentifyPerson has no pages: it leaves out what would not fit.
            for i in range(8):
                await stub.EnrollPerson(
                    search_pb2.EnrollPersonRequest(
                        collection=name, external_id=f"person{i}", images=[photo(i)], metadata=struct(big)
                    )
                )
            identified = await stub.IdentifyPerson(
                search_pb2.IdentifyPersonRequest(
                    collection=name,
                    face=search_pb2.FaceQuery(embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512)),
                    top_k=100,
                    threshold=-1.0,
                )
            )
            assert identified.ByteSize() <= limit
            assert 1 <= len(identified.candidates) < 8


# 12. Shutdown tells open streams early ---------------------------------------------------------


async def test_shutdown_ends_open_index_streams_early_with_resend_status(pg_server, embedder_server) -> None:
    url = search_database_url(pg_server, unique("drain").replace("-", "_"))
    async with search_running(url, embedder_server.target) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            name = await collection(stub)
            queue: asyncio.Queue[search_pb2.IndexPhotosRequest | None] = asyncio.Queue()

            async def gen() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                # A long import: the client does not end its stream (None only ends this test's sender).
                while (item := await queue.get()) is not None:
                    yield item

            call = stub.IndexPhotos(gen())
            for i in range(3):
                queue.put_nowait(search_pb2.IndexPhotosRequest(collection=name, external_id=f"p{i}", image=photo(i)))
            answered = [await call.read() for _ in range(3)]
            assert all(r.status.code == OK for r in answered)
            queue.put_nowait(search_pb2.IndexPhotosRequest(collection=name, external_id="p3", image=photo(3)))
            loop = asyncio.get_running_loop()
            started = loop.time()
            stopping = asyncio.create_task(running.app.server.stop(60.0))
            rest = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                while (response := await asyncio.wait_for(call.read(), 30)) is not grpc.aio.EOF:
                    rest.append(response)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "resend" in caught.value.details()
            assert all(r.status.code == OK for r in rest)  # p3, when the server took it before stopping
            await asyncio.wait_for(stopping, 30)
            assert loop.time() - started < 20  # far inside the 60 s grace
            queue.put_nowait(None)


async def test_sigterm_ends_open_index_streams_early_in_a_process(pg_server, embedder_server, tmp_path) -> None:
    """The same through `python -m search_service` and a real SIGTERM, with a 60 s grace."""
    port = free_port()
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": search_database_url(pg_server, unique("sigterm").replace("-", "_")),
        "SEARCH_GRPC_PORT": str(port),
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": str(free_port()),
        "SEARCH_EMBEDDER_TARGET": embedder_server.target,
        "SEARCH_SHUTDOWN_GRACE_S": "60",
    }
    log = tmp_path / "search.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "search_service"]
        process = await asyncio.to_thread(subprocess.Popen, command, env=env, stdout=out, stderr=out)
    try:
        await wait_serving(f"127.0.0.1:{port}", process, log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            name = await collection(stub)
            queue: asyncio.Queue[search_pb2.IndexPhotosRequest | None] = asyncio.Queue()

            async def gen() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                while (item := await queue.get()) is not None:
                    yield item

            call = stub.IndexPhotos(gen())
            for i in range(2):
                queue.put_nowait(search_pb2.IndexPhotosRequest(collection=name, external_id=f"p{i}", image=photo(i)))
            answered = [await call.read() for _ in range(2)]
            assert all(r.status.code == OK for r in answered)
            loop = asyncio.get_running_loop()
            started = loop.time()
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                while await asyncio.wait_for(call.read(), 30) is not grpc.aio.EOF:
                    pass
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "resend" in caught.value.details()
            queue.put_nowait(None)
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert loop.time() - started < 20  # not the 60 s grace
    finally:
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait)


# 7. Dropped database connections are UNAVAILABLE -----------------------------------------------


async def test_dropped_database_connections_are_unavailable_never_internal(pg_server, embedder_server, caplog) -> None:
    caplog.set_level(logging.WARNING)
    db = unique("drop").replace("-", "_")
    url = search_database_url(pg_server, db)
    async with search_running(url, embedder_server.target) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            name = await collection(stub)
            stop = asyncio.Event()

            async def terminate() -> None:
                while not stop.is_set():
                    await asyncio.to_thread(
                        pg_server.psql,
                        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{db}' AND pid <> pg_backend_pid();",
                    )
                    await asyncio.sleep(0.05)

            killer = asyncio.create_task(terminate())
            codes: list[int] = []
            try:
                # A kill lands mid-query only sometimes (an idle pooled connection that dies is
                # replaced unseen): go on until one did, within a bound, so that a quiet machine
                # sees faults too.
                for round_ in range(40):
                    if round_ >= 4 and grpc.StatusCode.UNAVAILABLE.value[0] in codes:
                        break
                    responses = await index(
                        stub,
                        [
                            search_pb2.IndexPhotosRequest(collection=name, external_id=f"r{round_}p{i}", image=photo(i))
                            for i in range(6)
                        ],
                    )
                    codes += [r.status.code for r in responses]
                    for _ in range(5):
                        try:
                            await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))
                            codes.append(OK)
                        except grpc.aio.AioRpcError as exc:
                            codes.append(exc.code().value[0])
            finally:
                stop.set()
                await killer
    allowed = {OK, grpc.StatusCode.UNAVAILABLE.value[0]}
    assert set(codes) <= allowed, codes
    assert grpc.StatusCode.UNAVAILABLE.value[0] in codes  # the faults did hit
    # An unreachable database is an expected fault: a warning, not an ERROR with a traceback.
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("search_service", "facesearch")]
    assert not [r for r in ours if r.levelno >= logging.ERROR], [r.getMessage() for r in ours]


# 13. Log hygiene ----------------------------------------------------------------------------------


async def test_cancelled_streams_log_no_errors(stub, caplog) -> None:
    """Streams cancelled at every stage (photos in the embedder, answers unread, mid-read) leave no
    task behind and log nothing at ERROR; expected per-photo failures are not errors either."""
    name = await collection(stub)
    caplog.set_level(logging.WARNING)
    for variant in range(8):
        queue: asyncio.Queue[search_pb2.IndexPhotosRequest | None] = asyncio.Queue()

        async def gen(q=queue) -> AsyncIterator[search_pb2.IndexPhotosRequest]:
            while (item := await q.get()) is not None:
                yield item

        call = stub.IndexPhotos(gen())
        for i in range(4):
            queue.put_nowait(search_pb2.IndexPhotosRequest(collection=name, external_id=f"c{i}", image=photo(i)))
        queue.put_nowait(search_pb2.IndexPhotosRequest(collection=name, external_id="bad", image=b"not an image"))
        queue.put_nowait(search_pb2.IndexPhotosRequest(collection="no-such-one", external_id="x", image=photo(0)))
        if variant % 2:
            await call.read()
        await asyncio.sleep(0.05 * (variant % 4))
        call.cancel()
        queue.put_nowait(None)  # lets the client's own sender task end
    await asyncio.sleep(1)
    gc.collect()
    await asyncio.sleep(0.5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
