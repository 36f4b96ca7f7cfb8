"""FaceSearchService end to end: a real search server (grpc.aio on localhost) on a real PostgreSQL
(pgserver) and a real embedder on the generated model pack. Index -> search, idempotency, tenant
isolation, deletes that leave no vector, the embedder down, persons, and every bad input."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import urllib.request
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.v1 import face_pb2, search_pb2, search_pb2_grpc
from tests.faces import FaceSpec, blank_photo, make_photo, noise_photo, selfie
from tests.fixtures.search import RunningSearch, search_database_url, search_running

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture
async def channel(search_server: RunningSearch) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(search_server.target) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> search_pb2_grpc.FaceSearchServiceStub:
    return search_pb2_grpc.FaceSearchServiceStub(channel)


def tenant(name: str) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", name),)


def struct(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


# Photos of an "event": identity 1 is in p0, p2, p4 (with others), identity 2 in p1, p2, identity 3 alone in p3.
EVENT = {
    "p0": [FaceSpec(200, 200, 70, 1)],
    "p1": [FaceSpec(180, 220, 60, 2), FaceSpec(470, 240, 50, 5)],
    "p2": [FaceSpec(150, 240, 55, 2), FaceSpec(460, 200, 65, 1)],
    "p3": [FaceSpec(320, 240, 80, 3)],
    "p4": [FaceSpec(420, 300, 45, 1), FaceSpec(160, 150, 40, 4)],
}


def event_photo(name: str, seed: int = 0) -> bytes:
    return make_photo(EVENT[name], size=(640, 480), fmt="jpg", seed=seed)


async def index(
    stub: search_pb2_grpc.FaceSearchServiceStub,
    requests: list[search_pb2.IndexPhotosRequest],
    metadata: tuple[tuple[str, str], ...] = (),
) -> dict[str, search_pb2.IndexPhotosResponse]:
    async def gen() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
        for r in requests:
            yield r

    responses = [r async for r in stub.IndexPhotos(gen(), metadata=metadata)]
    assert len(responses) == len(requests)
    return {r.external_id: r for r in responses}


async def make_event(stub: search_pb2_grpc.FaceSearchServiceStub, md: tuple = ()) -> str:
    name = unique("event")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=md)
    results = await index(
        stub,
        [
            search_pb2.IndexPhotosRequest(
                collection=name, external_id=pid, image=event_photo(pid), metadata=struct(n=i, even=i % 2 == 0)
            )
            for i, pid in enumerate(EVENT)
        ],
        md,
    )
    for pid, result in results.items():
        assert result.status.code == 0, (pid, result.status)
        assert result.outcome == search_pb2.INDEX_OUTCOME_CREATED
        assert result.faces_indexed == len(EVENT[pid])
    return name


async def test_health_is_serving_and_metrics_are_exported(search_server: RunningSearch, channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="facesearch.v1.FaceSearchService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = search_pb2_grpc.FaceSearchServiceStub(channel)
    await stub.ListCollections(search_pb2.ListCollectionsRequest())
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{search_server.app.metrics_port}/metrics").read().decode()
    )
    for name in (
        "facesearch_grpc_server_handled_total",
        "facesearch_search_db_query_seconds",
        "facesearch_search_db_pool_in_use",
        "facesearch_search_embedder_call_seconds",
    ):
        assert name in body, name


async def test_index_then_search_by_selfie_finds_the_right_photos(stub) -> None:
    name = await make_event(stub)
    reply = await stub.Search(search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1))))
    assert reply.no_face_reason == ""
    assert len(reply.query_faces) == 1
    top3 = [m.photo_id for m in reply.matches[:3]]
    assert sorted(top3) == ["p0", "p2", "p4"]
    assert all(m.similarity > 0.9 for m in reply.matches[:3])
    assert all(m.similarity < 0.6 for m in reply.matches[3:])
    assert len({m.photo_id for m in reply.matches}) == len(reply.matches)  # each photo once
    # The box is the matching face's, not the other face of the photo.
    p2 = next(m for m in reply.matches if m.photo_id == "p2")
    expected = EVENT["p2"][1].box
    assert np.allclose([p2.box.x1, p2.box.y1, p2.box.x2, p2.box.y2], expected, atol=4), p2.box
    assert p2.metadata["n"] == 2

    # With a threshold, only identity 1's photos; with a metadata filter, only even ones.
    strict = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1)), min_similarity=0.8)
    )
    assert sorted(m.photo_id for m in strict.matches) == ["p0", "p2", "p4"]
    odd = await stub.Search(
        search_pb2.SearchRequest(
            collection=name,
            image=search_pb2.ImageQuery(image=selfie(1)),
            filter=search_pb2.SearchFilter(metadata=struct(even=False)),
        )
    )
    assert sorted(m.photo_id for m in odd.matches) == ["p1", "p3"]  # identity 1's photos are all even
    assert all(m.similarity < 0.6 for m in odd.matches)
    ids = await stub.Search(
        search_pb2.SearchRequest(
            collection=name,
            image=search_pb2.ImageQuery(image=selfie(1)),
            filter=search_pb2.SearchFilter(photo_ids=["p3", "p4"]),
        )
    )
    assert [m.photo_id for m in ids.matches] == ["p4", "p3"]

    # Search by an indexed face id: the same face comes first with similarity 1.
    by_face = await stub.Search(search_pb2.SearchRequest(collection=name, face_id=p2.face_id, top_k=1))
    assert by_face.matches[0].photo_id == "p2"
    assert by_face.matches[0].similarity == pytest.approx(1.0, abs=1e-4)


async def test_multi_image_and_all_faces_queries(stub) -> None:
    name = await make_event(stub)
    multi = await stub.Search(
        search_pb2.SearchRequest(
            collection=name,
            images=search_pb2.MultiImageQuery(images=[selfie(2), selfie(2, fmt="png")]),
            min_similarity=0.8,
        )
    )
    assert [q.image_index for q in multi.query_faces] == [0, 1]
    assert sorted(m.photo_id for m in multi.matches) == ["p1", "p2"]
    group = make_photo([FaceSpec(160, 240, 70, 3), FaceSpec(460, 240, 70, 4)], size=(640, 480))
    both = await stub.Search(
        search_pb2.SearchRequest(
            collection=name, image=search_pb2.ImageQuery(image=group, all_faces=True), min_similarity=0.8
        )
    )
    assert len(both.query_faces) == 2
    assert sorted(m.photo_id for m in both.matches) == ["p3", "p4"]


async def test_pages_cover_every_photo_once(stub) -> None:
    name = await make_event(stub)
    query = search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1)), top_k=2)
    seen: list[str] = []
    similarities: list[float] = []
    while True:
        reply = await stub.Search(query)
        seen += [m.photo_id for m in reply.matches]
        similarities += [m.similarity for m in reply.matches]
        if not reply.next_page_token:
            break
        query.page_token = reply.next_page_token
    assert sorted(seen) == sorted(EVENT)
    assert similarities == sorted(similarities, reverse=True)
    # A token is refused for another query.
    first = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1)), top_k=2)
    )
    other = search_pb2.SearchRequest(
        collection=name, image=search_pb2.ImageQuery(image=selfie(2)), top_k=2, page_token=first.next_page_token
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Search(other)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "another query" in err.value.details()


async def test_reindex_is_idempotent_and_changed_photos_replace_faces(stub, search_server: RunningSearch) -> None:
    name = await make_event(stub)
    before = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))).collection
    assert (before.photo_count, before.face_count) == (5, 8)
    again = await index(
        stub, [search_pb2.IndexPhotosRequest(collection=name, external_id=p, image=event_photo(p)) for p in EVENT]
    )
    assert {r.outcome for r in again.values()} == {search_pb2.INDEX_OUTCOME_UNCHANGED}
    assert all(r.faces_indexed == 0 for r in again.values())
    # p3 now shows identity 5 (other bytes): its one face is replaced, nothing else changes.
    changed = make_photo([FaceSpec(320, 240, 80, 5)], size=(640, 480))
    result = await index(stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="p3", image=changed)])
    assert result["p3"].outcome == search_pb2.INDEX_OUTCOME_UPDATED
    after = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))).collection
    assert (after.photo_count, after.face_count) == (5, 8)
    found = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(3)), min_similarity=0.8)
    )
    assert found.matches == []
    found = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(5)), min_similarity=0.8)
    )
    assert sorted(m.photo_id for m in found.matches) == ["p1", "p3"]


async def test_tenants_do_not_see_each_other(stub) -> None:
    name = await make_event(stub, tenant("alpha"))
    for call, request in (
        (stub.GetCollection, search_pb2.GetCollectionRequest(name=name)),
        (stub.DeleteCollection, search_pb2.DeleteCollectionRequest(name=name)),
        (
            stub.Search,
            search_pb2.SearchRequest(collection=name, embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512)),
        ),
        (stub.DeletePhoto, search_pb2.DeletePhotoRequest(collection=name, external_id="p0")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=tenant("beta"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=tenant("beta"))
    assert name not in [c.name for c in listed.collections]
    # Indexing into another tenant's collection fails per photo and writes nothing.
    result = await index(
        stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="x", image=event_photo("p0"))], tenant("beta")
    )
    assert result["x"].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    mine = await stub.GetCollection(search_pb2.GetCollectionRequest(name=name), metadata=tenant("alpha"))
    assert mine.collection.photo_count == 5
    # The same name is free in another tenant.
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=tenant("beta"))


async def test_deletes_leave_no_vector(stub, search_server: RunningSearch) -> None:
    name = await make_event(stub)
    pool = search_server.app.database.pool
    cid = await pool.fetchval("SELECT id FROM collections WHERE name = $1", name)
    await stub.EnrollPerson(search_pb2.EnrollPersonRequest(collection=name, external_id="ann", images=[selfie(1)]))
    p2 = await pool.fetchval("SELECT id FROM photos WHERE collection_id = $1 AND external_id = 'p2'", cid)
    faces_of_p2 = "SELECT count(*) FROM faces WHERE collection_id = $1 AND photo_id = $2"
    assert await pool.fetchval(faces_of_p2, cid, p2) == 2
    deleted = await stub.DeletePhoto(search_pb2.DeletePhotoRequest(collection=name, external_id="p2"))
    assert deleted.faces_deleted == 2
    assert await pool.fetchval(faces_of_p2, cid, p2) == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DeletePhoto(search_pb2.DeletePhotoRequest(collection=name, external_id="p2"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    person = await stub.DeletePerson(search_pb2.DeletePersonRequest(collection=name, external_id="ann"))
    assert person.faces_deleted == 1
    assert (
        await pool.fetchval("SELECT count(*) FROM faces WHERE collection_id = $1 AND person_id IS NOT NULL", cid) == 0
    )
    gone = await stub.DeleteCollection(search_pb2.DeleteCollectionRequest(name=name))
    assert (gone.photos_deleted, gone.faces_deleted, gone.persons_deleted) == (4, 6, 0)
    for table in ("faces", "photos", "persons"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE collection_id = $1", cid) == 0, table


async def test_persons_enrol_identify_verify(stub) -> None:
    name = unique("registry")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    small = make_photo([FaceSpec(320, 240, 40, 7)], size=(640, 480))
    first = await stub.EnrollPerson(
        search_pb2.EnrollPersonRequest(collection=name, external_id="eve", images=[small], metadata=struct(team="a"))
    )
    assert first.created and first.template_replaced
    low_quality = first.person.template_quality
    # A bigger, better photo replaces the template; a photo with no face reports why.
    second = await stub.EnrollPerson(
        search_pb2.EnrollPersonRequest(collection=name, external_id="eve", images=[blank_photo(), selfie(7)])
    )
    assert not second.created and second.template_replaced
    assert second.person.template_quality > low_quality
    assert second.images[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "no face" in second.images[0].status.message
    assert second.images[1].status.code == 0
    assert second.person.metadata["team"] == "a"
    third = await stub.EnrollPerson(search_pb2.EnrollPersonRequest(collection=name, external_id="eve", images=[small]))
    assert not third.template_replaced
    await stub.EnrollPerson(search_pb2.EnrollPersonRequest(collection=name, external_id="bob", images=[selfie(8)]))

    who = await stub.IdentifyPerson(
        search_pb2.IdentifyPersonRequest(collection=name, face=search_pb2.FaceQuery(image=selfie(7, fmt="png")))
    )
    assert [c.person.external_id for c in who.candidates] == ["eve"]
    assert who.candidates[0].similarity > 0.9
    nobody = await stub.IdentifyPerson(
        search_pb2.IdentifyPersonRequest(collection=name, face=search_pb2.FaceQuery(image=selfie(9)))
    )
    assert nobody.candidates == []
    yes = await stub.VerifyPerson(
        search_pb2.VerifyPersonRequest(collection=name, person_id="eve", face=search_pb2.FaceQuery(image=selfie(7)))
    )
    assert yes.match and yes.similarity > 0.9
    no = await stub.VerifyPerson(
        search_pb2.VerifyPersonRequest(collection=name, person_id="bob", face=search_pb2.FaceQuery(image=selfie(7)))
    )
    assert not no.match and no.similarity < no.threshold
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.VerifyPerson(
            search_pb2.VerifyPersonRequest(collection=name, person_id="zed", face=search_pb2.FaceQuery(image=selfie(7)))
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    info = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))).collection
    assert (info.person_count, info.face_count) == (2, 2)


async def test_no_face_is_ok_with_a_reason(stub) -> None:
    name = unique("empty")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    result = await index(stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="n", image=noise_photo())])
    assert result["n"].status.code == 0
    assert (result["n"].faces_indexed, result["n"].no_face_reason) == (0, "no face detected")
    reply = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=blank_photo()))
    )
    assert reply.matches == [] and "no face detected" in reply.no_face_reason
    tiny = make_photo([FaceSpec(320, 240, 12, 1)], size=(640, 480))
    gated = await index(stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="t", image=tiny)])
    assert gated["t"].faces_indexed == 0
    assert len(gated["t"].rejected_faces) == 1
    assert "quality gates" in gated["t"].no_face_reason
    rejected = gated["t"].rejected_faces[0]
    assert not rejected.quality.passed and rejected.quality.failures
    # Per-request options reach the embedder: with the gates off the same face is stored.
    ungated = await index(
        stub,
        [
            search_pb2.IndexPhotosRequest(
                collection=name,
                external_id="t2",
                image=tiny,
                options=face_pb2.EmbedOptions(disable_quality_gates=True),
            )
        ],
    )
    assert ungated["t2"].faces_indexed == 1 and not ungated["t2"].rejected_faces


async def test_bad_input_gets_clear_statuses(stub) -> None:
    name = unique("bad")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    async def code_of(call, request) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request)
        return err.value.code(), err.value.details()

    def by_embedding(values: list[float], **kw: object) -> search_pb2.SearchRequest:
        return search_pb2.SearchRequest(collection=name, embedding=search_pb2.EmbeddingQuery(values=values), **kw)

    ok = [0.0] * 511 + [1.0]
    cases = [
        (stub.Search, by_embedding([1.0] * 511), invalid, "511 values"),
        (stub.Search, by_embedding([math.nan, *ok[1:]]), invalid, "NaN"),
        (stub.Search, by_embedding([0.0] * 512), invalid, "zero norm"),
        (stub.Search, by_embedding(ok, top_k=1001), invalid, "top_k"),
        (stub.Search, by_embedding(ok, page_token="garbage!"), invalid, "page_token"),
        (stub.Search, by_embedding(ok, min_similarity=2.0), invalid, "min_similarity"),
        (stub.Search, search_pb2.SearchRequest(collection=name), invalid, "needs a query"),
        (stub.Search, search_pb2.SearchRequest(collection=name, face_id="abc"), invalid, "face id"),
        # Face ids are opaque: a number is not one; a well-formed id of no face here is NOT_FOUND.
        (stub.Search, search_pb2.SearchRequest(collection=name, face_id="999999999"), invalid, "face id"),
        (stub.Search, search_pb2.SearchRequest(collection=name, face_id="9" * 30), invalid, "face id"),
        (stub.Search, search_pb2.SearchRequest(collection=name, face_id="A" * 22), grpc.StatusCode.NOT_FOUND, "face"),
        (
            stub.Search,
            search_pb2.SearchRequest(collection="nope", embedding=search_pb2.EmbeddingQuery(values=ok)),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
        (
            stub.Search,
            search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=b"not an image")),
            invalid,
            "",
        ),
        (
            stub.Search,
            search_pb2.SearchRequest(collection=name, images=search_pb2.MultiImageQuery(images=[selfie(1)] * 11)),
            invalid,
            "1-10",
        ),
        (stub.Search, by_embedding(ok, filter=search_pb2.SearchFilter(photo_ids=["x"] * 10001)), invalid, "photo_ids"),
        (stub.CreateCollection, search_pb2.CreateCollectionRequest(name="bad name!"), invalid, "collection name"),
        (stub.CreateCollection, search_pb2.CreateCollectionRequest(name=name), grpc.StatusCode.ALREADY_EXISTS, name),
        (stub.GetCollection, search_pb2.GetCollectionRequest(name="missing"), grpc.StatusCode.NOT_FOUND, "missing"),
        (stub.ListCollections, search_pb2.ListCollectionsRequest(page_token="%%%"), invalid, "page_token"),
        (
            stub.EnrollPerson,
            search_pb2.EnrollPersonRequest(collection=name, external_id="p", images=[]),
            invalid,
            "1-10",
        ),
        (
            stub.EnrollPerson,
            search_pb2.EnrollPersonRequest(collection=name, external_id="p", images=[noise_photo()]),
            invalid,
            "no usable face",
        ),
        (stub.IdentifyPerson, search_pb2.IdentifyPersonRequest(collection=name), invalid, "image or an embedding"),
        (
            stub.IdentifyPerson,
            search_pb2.IdentifyPersonRequest(
                collection=name, face=search_pb2.FaceQuery(embedding=search_pb2.EmbeddingQuery(values=[1.0] * 3))
            ),
            invalid,
            "3 values",
        ),
    ]
    for call, request, code, text in cases:
        got, details = await code_of(call, request)
        assert got == code, (request, got, details)
        assert text in details, (text, details)

    huge = struct(blob="x" * 17000)
    results = await index(
        stub,
        [
            search_pb2.IndexPhotosRequest(collection=name, external_id="junk", image=b"\x89PNG not really"),
            search_pb2.IndexPhotosRequest(collection=name, external_id="empty", image=b""),
            search_pb2.IndexPhotosRequest(collection=name, external_id="", image=selfie(1)),
            search_pb2.IndexPhotosRequest(collection=name, external_id="big", image=selfie(1), metadata=huge),
            search_pb2.IndexPhotosRequest(collection="nope", external_id="lost", image=selfie(1)),
            search_pb2.IndexPhotosRequest(collection=name, external_id="good", image=selfie(1)),
        ],
    )
    assert results["junk"].status.code == invalid.value[0]
    assert results["empty"].status.code == invalid.value[0]
    assert results[""].status.code == invalid.value[0]
    assert results["big"].status.code == invalid.value[0] and "metadata" in results["big"].status.message
    assert results["lost"].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert results["good"].status.code == 0 and results["good"].faces_indexed == 1
    info = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))).collection
    assert (info.photo_count, info.face_count) == (1, 1)  # only the good photo was written


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_embedder_down_is_unavailable_and_nothing_is_written(pg_server) -> None:
    url = search_database_url(pg_server, unique("down").replace("-", "_"))
    async with search_running(url, f"127.0.0.1:{_closed_port()}", embedder={"timeout_s": 3.0}) as running:
        async with grpc.aio.insecure_channel(running.target) as ch:
            stub = search_pb2_grpc.FaceSearchServiceStub(ch)
            name = unique("down")
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
            results = await index(
                stub,
                [
                    search_pb2.IndexPhotosRequest(collection=name, external_id=f"p{i}", image=selfie(i))
                    for i in range(3)
                ],
            )
            for result in results.values():
                assert result.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
                assert "embedder" in result.status.message
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Search(
                    search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1)))
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "embedder" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.EnrollPerson(
                    search_pb2.EnrollPersonRequest(collection=name, external_id="x", images=[selfie(1)])
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # Search by embedding needs no embedder.
            reply = await stub.Search(
                search_pb2.SearchRequest(collection=name, embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512))
            )
            assert reply.matches == []
            pool = running.app.database.pool
            for table in ("photos", "faces", "persons"):
                assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
