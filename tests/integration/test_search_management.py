"""The management and analysis calls end to end, on a real search server, PostgreSQL and embedder:
ListPhotos/GetPhoto/UpdatePhoto, DeleteFace, face thumbnails, ListPersons/GetPerson/UpdatePerson,
CompareFaces and DetectFaces, each with its tenancy and bad-input statuses."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from PIL import Image

from facesearch.v1 import face_pb2, search_pb2, search_pb2_grpc
from search_service.public_ids import load_public_ids
from tests.faces import FaceSpec, decode, make_photo, noise_photo, selfie
from tests.fixtures.search import RunningSearch, search_database_url, search_running
from tests.integration.test_search_service import (
    EVENT,
    _closed_port,
    event_photo,
    index,
    struct,
    tenant,
    unique,
)

BASE_TIME = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
async def stub(search_server: RunningSearch) -> AsyncIterator[search_pb2_grpc.FaceSearchServiceStub]:
    async with grpc.aio.insecure_channel(search_server.target) as channel:
        yield search_pb2_grpc.FaceSearchServiceStub(channel)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


async def expect(code: grpc.StatusCode, call, *args, **kwargs) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(*args, **kwargs)
    assert err.value.code() == code, err.value.details()
    return err.value.details()


async def dated_event(
    stub: search_pb2_grpc.FaceSearchServiceStub, md: tuple = (), thumbnails: bool | None = None
) -> str:
    """The EVENT photos, p{i} taken i hours after BASE_TIME, metadata {n: i, even: i % 2 == 0}."""
    name = unique("photos")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=md)
    requests = []
    for i, pid in enumerate(EVENT):
        request = search_pb2.IndexPhotosRequest(
            collection=name,
            external_id=pid,
            image=event_photo(pid),
            metadata=struct(n=i, even=i % 2 == 0),
            taken_time=timestamp(BASE_TIME + timedelta(hours=i)),
        )
        if thumbnails is not None:
            request.store_thumbnails = thumbnails
        requests.append(request)
    results = await index(stub, requests, md)
    assert all(r.status.code == 0 for r in results.values()), results
    return name


async def all_pages(stub, request: search_pb2.ListPhotosRequest, md: tuple = ()) -> list[list[str]]:
    pages = []
    while True:
        reply = await stub.ListPhotos(request, metadata=md)
        pages.append([p.external_id for p in reply.photos])
        if not reply.next_page_token:
            return pages
        request.page_token = reply.next_page_token


async def test_list_photos_pages_in_order_with_faces_and_filters(stub) -> None:
    md = tenant("lister")
    name = await dated_event(stub, md)
    newest = await all_pages(stub, search_pb2.ListPhotosRequest(collection=name, page_size=2), md)
    assert newest == [["p4", "p3"], ["p2", "p1"], ["p0"]]
    by_id = await all_pages(
        stub,
        search_pb2.ListPhotosRequest(collection=name, page_size=3, order=search_pb2.PHOTO_ORDER_EXTERNAL_ID),
        md,
    )
    assert by_id == [["p0", "p1", "p2"], ["p3", "p4"]]

    reply = await stub.ListPhotos(search_pb2.ListPhotosRequest(collection=name), metadata=md)
    assert not reply.next_page_token
    for photo in reply.photos:
        specs = EVENT[photo.external_id]
        assert len(photo.faces) == len(specs)
        assert photo.taken_time.ToDatetime(tzinfo=UTC) == BASE_TIME + timedelta(hours=int(photo.external_id[1]))
        assert photo.metadata["n"] == int(photo.external_id[1])
        boxes = sorted((f.box.x1, f.box.y1, f.box.x2, f.box.y2) for f in photo.faces)
        expected = sorted(tuple(s.box.tolist()) for s in specs)
        assert np.allclose(boxes, expected, atol=4), (boxes, expected)
        for face in photo.faces:
            assert len(face.face_id) == 22 and not face.face_id.isdigit()  # opaque (public_ids)
            assert face.det_score > 0.5 and face.quality.score > 0
            assert face.quality.passed and not face.thumbnail and not face.has_thumbnail

    # The same SearchFilter as Search: metadata containment and a taken-time range.
    even = await all_pages(
        stub,
        search_pb2.ListPhotosRequest(collection=name, filter=search_pb2.SearchFilter(metadata=struct(even=True))),
        md,
    )
    assert even == [["p4", "p2", "p0"]]
    window = search_pb2.SearchFilter(
        start_time=timestamp(BASE_TIME + timedelta(hours=1)), end_time=timestamp(BASE_TIME + timedelta(hours=3))
    )
    assert await all_pages(stub, search_pb2.ListPhotosRequest(collection=name, filter=window), md) == [["p2", "p1"]]

    # A page token is bound to its query.
    first = await stub.ListPhotos(search_pb2.ListPhotosRequest(collection=name, page_size=2), metadata=md)
    details = await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.ListPhotos,
        search_pb2.ListPhotosRequest(
            collection=name, page_size=2, page_token=first.next_page_token, order=search_pb2.PHOTO_ORDER_EXTERNAL_ID
        ),
        metadata=md,
    )
    assert "another query" in details
    for token in ("garbage", "eyJwIjoxfQ==", first.next_page_token[:-4]):
        await expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            stub.ListPhotos,
            search_pb2.ListPhotosRequest(collection=name, page_token=token),
            metadata=md,
        )
    for bad in (
        search_pb2.ListPhotosRequest(collection=name, page_size=1001),
        search_pb2.ListPhotosRequest(collection="bad name"),
        search_pb2.ListPhotosRequest(collection=name, order=7),
        search_pb2.ListPhotosRequest(
            collection=name,
            filter=search_pb2.SearchFilter(start_time=timestamp(BASE_TIME), end_time=timestamp(BASE_TIME)),
        ),
    ):
        await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.ListPhotos, bad, metadata=md)
    # Another tenant sees no such collection.
    await expect(grpc.StatusCode.NOT_FOUND, stub.ListPhotos, search_pb2.ListPhotosRequest(collection=name))
    await expect(
        grpc.StatusCode.NOT_FOUND, stub.ListPhotos, search_pb2.ListPhotosRequest(collection=unique("none")), metadata=md
    )


async def test_pages_stay_under_four_mebibytes(stub) -> None:
    """~4.5 MB of metadata in 300 photos of one face: one page of 1000 photos or matches would pass
    4 MiB; ListPhotos and Search pages stop early and still cover every photo once."""
    name = unique("big-metadata")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    image = make_photo([FaceSpec(48, 48, 30, 61)], size=(96, 96))
    results = await index(
        stub,
        [
            search_pb2.IndexPhotosRequest(
                collection=name, external_id=f"x{i:03d}", image=image, metadata=struct(blob="m" * 15_000, i=i)
            )
            for i in range(300)
        ],
    )
    assert all(r.status.code == 0 and r.faces_indexed == 1 for r in results.values())
    listing = search_pb2.ListPhotosRequest(collection=name, page_size=1000, order=search_pb2.PHOTO_ORDER_EXTERNAL_ID)
    query = search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(61)), top_k=1000)
    for call, request, items in (
        (stub.ListPhotos, listing, lambda reply: [p.external_id for p in reply.photos]),
        (stub.Search, query, lambda reply: [m.photo_id for m in reply.matches]),
    ):
        seen: list[str] = []
        pages = 0
        while True:
            reply = await call(request)
            assert reply.ByteSize() < 4 * 1024 * 1024
            seen += items(reply)
            pages += 1
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
        assert pages >= 2
        assert sorted(seen) == [f"x{i:03d}" for i in range(300)]


async def test_get_and_update_photo(stub) -> None:
    md = tenant("updater")
    name = await dated_event(stub, md)
    photo = (await stub.GetPhoto(search_pb2.GetPhotoRequest(collection=name, external_id="p2"), metadata=md)).photo
    assert photo.external_id == "p2" and len(photo.faces) == 2 and photo.metadata["n"] == 2
    taken = photo.taken_time.ToDatetime(tzinfo=UTC)

    # Metadata only (by mask): the taken time stays, and searches filter on the new metadata.
    updated = await stub.UpdatePhoto(
        search_pb2.UpdatePhotoRequest(
            collection=name,
            external_id="p2",
            metadata=struct(album="keep"),
            taken_time=timestamp(BASE_TIME),
            update_mask=field_mask_pb2.FieldMask(paths=["metadata"]),
        ),
        metadata=md,
    )
    assert dict(updated.photo.metadata) == {"album": "keep"}
    assert updated.photo.taken_time.ToDatetime(tzinfo=UTC) == taken
    assert len(updated.photo.faces) == 2
    found = await stub.Search(
        search_pb2.SearchRequest(
            collection=name,
            image=search_pb2.ImageQuery(image=selfie(1)),
            filter=search_pb2.SearchFilter(metadata=struct(album="keep")),
        ),
        metadata=md,
    )
    assert [m.photo_id for m in found.matches] == ["p2"]

    # No mask: the fields that are set (here the taken time only).
    moved = BASE_TIME - timedelta(days=1)
    updated = await stub.UpdatePhoto(
        search_pb2.UpdatePhotoRequest(collection=name, external_id="p2", taken_time=timestamp(moved)), metadata=md
    )
    assert updated.photo.taken_time.ToDatetime(tzinfo=UTC) == moved
    assert dict(updated.photo.metadata) == {"album": "keep"}
    listed = await all_pages(stub, search_pb2.ListPhotosRequest(collection=name), md)
    assert listed == [["p4", "p3", "p1", "p0", "p2"]]

    # In the mask but unset: metadata cleared, taken time back to the index time.
    updated = await stub.UpdatePhoto(
        search_pb2.UpdatePhotoRequest(
            collection=name, external_id="p2", update_mask=field_mask_pb2.FieldMask(paths=["metadata", "taken_time"])
        ),
        metadata=md,
    )
    assert dict(updated.photo.metadata) == {}
    assert updated.photo.taken_time == updated.photo.create_time

    for bad in (
        search_pb2.UpdatePhotoRequest(collection=name, external_id="p2"),  # nothing to update
        search_pb2.UpdatePhotoRequest(
            collection=name, external_id="p2", update_mask=field_mask_pb2.FieldMask(paths=["image"])
        ),
        search_pb2.UpdatePhotoRequest(collection=name, external_id="", metadata=struct(a=1)),
        search_pb2.UpdatePhotoRequest(collection=name, external_id="p2", metadata=struct(blob="x" * 20_000)),
        search_pb2.UpdatePhotoRequest(
            collection=name, external_id="p2", taken_time=timestamp_pb2.Timestamp(seconds=2**60)
        ),
    ):
        await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.UpdatePhoto, bad, metadata=md)
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.UpdatePhoto,
        search_pb2.UpdatePhotoRequest(collection=name, external_id="nope", metadata=struct(a=1)),
        metadata=md,
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetPhoto,
        search_pb2.GetPhotoRequest(collection=name, external_id="nope"),
        metadata=md,
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT, stub.GetPhoto, search_pb2.GetPhotoRequest(collection=name), metadata=md
    )
    # Another tenant can neither read nor change it.
    await expect(
        grpc.StatusCode.NOT_FOUND, stub.GetPhoto, search_pb2.GetPhotoRequest(collection=name, external_id="p2")
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.UpdatePhoto,
        search_pb2.UpdatePhotoRequest(collection=name, external_id="p2", metadata=struct(a=1)),
    )


async def test_delete_face_erases_its_embedding(stub, search_server: RunningSearch) -> None:
    md = tenant("face-deleter")
    name = await dated_event(stub, md, thumbnails=True)
    # Identity 5 is the bystander on the right of p1.
    found = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(5)), min_similarity=0.8),
        metadata=md,
    )
    assert [m.photo_id for m in found.matches] == ["p1"]
    bystander = found.matches[0].face_id

    # Another tenant cannot delete it; an id this service did not issue (a raw number included) is
    # INVALID_ARGUMENT, a well-formed one of no face here NOT_FOUND.
    await expect(
        grpc.StatusCode.NOT_FOUND, stub.DeleteFace, search_pb2.DeleteFaceRequest(collection=name, face_id=bystander)
    )
    for malformed in ("x1", "0", "999999999", str(2**64)):
        await expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            stub.DeleteFace,
            search_pb2.DeleteFaceRequest(collection=name, face_id=malformed),
            metadata=md,
        )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.DeleteFace,
        search_pb2.DeleteFaceRequest(collection=name, face_id="A" * 22),
        metadata=md,
    )

    reply = await stub.DeleteFace(search_pb2.DeleteFaceRequest(collection=name, face_id=bystander), metadata=md)
    assert (reply.photo_id, reply.faces_remaining) == ("p1", 1)
    pool = search_server.app.database.pool
    cid = await pool.fetchval("SELECT id FROM collections WHERE tenant = 'face-deleter' AND name = $1", name)
    internal_id = (await load_public_ids(pool)).parse_face_id(cid, bystander)
    for table, column in (("faces", "id"), ("face_thumbnails", "face_id")):
        count = f"SELECT count(*) FROM {table} WHERE collection_id = $1 AND {column} = $2"
        assert await pool.fetchval(count, cid, internal_id) == 0, table

    after = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(5)), min_similarity=0.8),
        metadata=md,
    )
    assert after.matches == []
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.Search,
        search_pb2.SearchRequest(collection=name, face_id=bystander),
        metadata=md,
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.DeleteFace,
        search_pb2.DeleteFaceRequest(collection=name, face_id=bystander),
        metadata=md,
    )
    # Re-indexing the same bytes does not bring it back; the other face of p1 is still found.
    again = await index(
        stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="p1", image=event_photo("p1"))], md
    )
    assert again["p1"].outcome == search_pb2.INDEX_OUTCOME_UNCHANGED
    photo = (await stub.GetPhoto(search_pb2.GetPhotoRequest(collection=name, external_id="p1"), metadata=md)).photo
    assert len(photo.faces) == 1 and photo.faces[0].face_id != bystander
    two = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(2)), min_similarity=0.8),
        metadata=md,
    )
    assert sorted(m.photo_id for m in two.matches) == ["p1", "p2"]


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def crop_difference(thumbnail: bytes, photo: bytes, box: tuple[float, float, float, float]) -> float:
    """Mean absolute difference (0-255) between a thumbnail and the photo's region `box` grown by
    the default 20% margin, cut here independently with OpenCV."""
    with Image.open(io.BytesIO(thumbnail)) as image:
        got = np.asarray(image.convert("RGB"), dtype=np.float64)
    rgb = cv2.cvtColor(decode(photo), cv2.COLOR_BGR2RGB)
    x1, y1, x2, y2 = box
    pad = 0.2 * max(x2 - x1, y2 - y1)
    region = rgb[max(0, int(y1 - pad)) : int(y2 + pad), max(0, int(x1 - pad)) : int(x2 + pad)]
    expected = cv2.resize(region, (got.shape[1], got.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float64)
    return float(np.abs(got - expected).mean())


async def test_face_thumbnails_on_request(stub, search_server: RunningSearch) -> None:
    md = tenant("thumbs")
    name = await dated_event(stub, md, thumbnails=True)
    plain = unique("plain")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=plain), metadata=md)
    # The session server keeps the default setting: no thumbnails unless the request asks.
    await index(stub, [search_pb2.IndexPhotosRequest(collection=plain, external_id="p0", image=event_photo("p0"))], md)

    photo = (
        await stub.GetPhoto(
            search_pb2.GetPhotoRequest(collection=name, external_id="p2", include_thumbnails=True), metadata=md
        )
    ).photo
    assert len(photo.faces) == 2
    for face in photo.faces:
        assert face.has_thumbnail
        width, height = jpeg_size(face.thumbnail)
        assert max(width, height) == 112  # the default size; a face with margin is bigger than that
        # The crop is of this face: close to that region cut independently, far from the other face's.
        box = (face.box.x1, face.box.y1, face.box.x2, face.box.y2)
        other = next(f.box for f in photo.faces if f.face_id != face.face_id)
        assert crop_difference(face.thumbnail, event_photo("p2"), box) < 8
        assert crop_difference(face.thumbnail, event_photo("p2"), (other.x1, other.y1, other.x2, other.y2)) > 15
        single = await stub.GetFaceThumbnail(
            search_pb2.GetFaceThumbnailRequest(collection=name, face_id=face.face_id), metadata=md
        )
        assert single.thumbnail == face.thumbnail and single.photo_id == "p2"
    # Not asked for: left out, but said to exist.
    light = (await stub.GetPhoto(search_pb2.GetPhotoRequest(collection=name, external_id="p2"), metadata=md)).photo
    assert all(f.has_thumbnail and not f.thumbnail for f in light.faces)
    listed = await stub.ListPhotos(search_pb2.ListPhotosRequest(collection=name, include_thumbnails=True), metadata=md)
    assert all(f.thumbnail for p in listed.photos for f in p.faces)
    found = await stub.Search(
        search_pb2.SearchRequest(
            collection=name, image=search_pb2.ImageQuery(image=selfie(3)), top_k=1, include_thumbnails=True
        ),
        metadata=md,
    )
    assert found.matches[0].photo_id == "p3" and jpeg_size(found.matches[0].thumbnail)
    found = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(3)), top_k=1), metadata=md
    )
    assert not found.matches[0].thumbnail

    # A face indexed without one: NOT_FOUND that says why.
    bare = (await stub.GetPhoto(search_pb2.GetPhotoRequest(collection=plain, external_id="p0"), metadata=md)).photo
    assert not bare.faces[0].has_thumbnail
    details = await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetFaceThumbnail,
        search_pb2.GetFaceThumbnailRequest(collection=plain, face_id=bare.faces[0].face_id),
        metadata=md,
    )
    assert "no thumbnail" in details
    face_id = photo.faces[0].face_id
    await expect(  # another tenant
        grpc.StatusCode.NOT_FOUND,
        stub.GetFaceThumbnail,
        search_pb2.GetFaceThumbnailRequest(collection=name, face_id=face_id),
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.GetFaceThumbnail,
        search_pb2.GetFaceThumbnailRequest(collection=name, face_id=""),
        metadata=md,
    )

    # Erased with the photo, and with the collection.
    pool = search_server.app.database.pool
    cid = await pool.fetchval("SELECT id FROM collections WHERE tenant = 'thumbs' AND name = $1", name)
    thumbnails = "SELECT count(*) FROM face_thumbnails WHERE collection_id = $1"
    assert await pool.fetchval(thumbnails, cid) == 8
    await stub.DeletePhoto(search_pb2.DeletePhotoRequest(collection=name, external_id="p2"), metadata=md)
    assert await pool.fetchval(thumbnails, cid) == 6
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetFaceThumbnail,
        search_pb2.GetFaceThumbnailRequest(collection=name, face_id=face_id),
        metadata=md,
    )
    await stub.DeleteCollection(search_pb2.DeleteCollectionRequest(name=name), metadata=md)
    assert await pool.fetchval(thumbnails, cid) == 0


async def test_thumbnail_setting_and_required_tenant(pg_server, embedder_server) -> None:
    """SEARCH_THUMBNAILS__ENABLED stores thumbnails without asking (at SEARCH_THUMBNAILS__SIZE); a
    request can still opt out. With no default tenant, every new call needs the header."""
    url = search_database_url(pg_server, unique("thumbs_on").replace("-", "_"))
    async with search_running(
        url, embedder_server.target, thumbnails={"enabled": True, "size": 48}, default_tenant=""
    ) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            md = tenant("t")
            name = unique("on")
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=md)
            await index(
                stub,
                [
                    search_pb2.IndexPhotosRequest(collection=name, external_id="p3", image=event_photo("p3")),
                    search_pb2.IndexPhotosRequest(
                        collection=name, external_id="p0", image=event_photo("p0"), store_thumbnails=False
                    ),
                ],
                md,
            )
            with_thumbnail = await stub.GetPhoto(
                search_pb2.GetPhotoRequest(collection=name, external_id="p3", include_thumbnails=True), metadata=md
            )
            assert max(jpeg_size(with_thumbnail.photo.faces[0].thumbnail)) == 48
            without = await stub.GetPhoto(
                search_pb2.GetPhotoRequest(collection=name, external_id="p0", include_thumbnails=True), metadata=md
            )
            assert not without.photo.faces[0].has_thumbnail

            for call, request in (
                (stub.ListPhotos, search_pb2.ListPhotosRequest(collection=name)),
                (stub.GetPhoto, search_pb2.GetPhotoRequest(collection=name, external_id="p3")),
                (stub.ListPersons, search_pb2.ListPersonsRequest(collection=name)),
                (stub.DetectFaces, search_pb2.DetectFacesRequest(image=selfie(1))),
                (
                    stub.CompareFaces,
                    search_pb2.CompareFacesRequest(
                        first=search_pb2.FaceQuery(image=selfie(1)), second=search_pb2.FaceQuery(image=selfie(1))
                    ),
                ),
            ):
                details = await expect(grpc.StatusCode.INVALID_ARGUMENT, call, request)
                assert "x-tenant-id" in details


async def test_list_get_update_persons(stub) -> None:
    md = tenant("registrar")
    name = unique("people")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=md)
    for identity, person in ((7, "carol"), (8, "alice"), (9, "bob")):
        await stub.EnrollPerson(
            search_pb2.EnrollPersonRequest(
                collection=name, external_id=person, images=[selfie(identity)], metadata=struct(team=person[0])
            ),
            metadata=md,
        )
    first = await stub.ListPersons(search_pb2.ListPersonsRequest(collection=name, page_size=2), metadata=md)
    assert [p.external_id for p in first.persons] == ["alice", "bob"]
    second = await stub.ListPersons(
        search_pb2.ListPersonsRequest(collection=name, page_size=2, page_token=first.next_page_token), metadata=md
    )
    assert [p.external_id for p in second.persons] == ["carol"] and not second.next_page_token
    # The template's source: its box in the enrolment selfie (480x640, face centred, radius 168).
    alice = (
        await stub.GetPerson(search_pb2.GetPersonRequest(collection=name, external_id="alice"), metadata=md)
    ).person
    assert alice.HasField("template_face")
    box = alice.template_face.box
    assert np.allclose([box.x1, box.y1, box.x2, box.y2], [72, 152, 408, 488], atol=6)
    assert alice.template_face.quality.score == pytest.approx(alice.template_quality)
    assert alice.template_face.det_score > 0.5 and alice.metadata["team"] == "a"
    assert first.persons[0] == alice

    updated = await stub.UpdatePerson(
        search_pb2.UpdatePersonRequest(collection=name, external_id="alice", metadata=struct(team="z", vip=True)),
        metadata=md,
    )
    assert dict(updated.person.metadata) == {"team": "z", "vip": True}
    assert updated.person.update_time == alice.update_time  # the template did not change
    again = (
        await stub.GetPerson(search_pb2.GetPersonRequest(collection=name, external_id="alice"), metadata=md)
    ).person
    assert dict(again.metadata) == {"team": "z", "vip": True}
    identified = await stub.IdentifyPerson(
        search_pb2.IdentifyPersonRequest(collection=name, face=search_pb2.FaceQuery(image=selfie(8))), metadata=md
    )
    assert identified.candidates[0].person.external_id == "alice"

    for call, bad in (
        (stub.ListPersons, search_pb2.ListPersonsRequest(collection=name, page_size=5000)),
        (stub.ListPersons, search_pb2.ListPersonsRequest(collection=name, page_token="nope")),
        (stub.GetPerson, search_pb2.GetPersonRequest(collection=name, external_id="")),
        (
            stub.UpdatePerson,
            search_pb2.UpdatePersonRequest(
                collection=name, external_id="alice", update_mask=field_mask_pb2.FieldMask(paths=["template"])
            ),
        ),
        (
            stub.UpdatePerson,
            search_pb2.UpdatePersonRequest(collection=name, external_id="alice", metadata=struct(b="x" * 20_000)),
        ),
    ):
        await expect(grpc.StatusCode.INVALID_ARGUMENT, call, bad, metadata=md)
    other = unique("people")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=other), metadata=md)
    await expect(  # a token of another collection's listing
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.ListPersons,
        search_pb2.ListPersonsRequest(collection=other, page_token=first.next_page_token),
        metadata=md,
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.GetPerson,
        search_pb2.GetPersonRequest(collection=name, external_id="dave"),
        metadata=md,
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        stub.UpdatePerson,
        search_pb2.UpdatePersonRequest(collection=name, external_id="dave", metadata=struct(a=1)),
        metadata=md,
    )
    for call, request in (
        (stub.ListPersons, search_pb2.ListPersonsRequest(collection=name)),
        (stub.GetPerson, search_pb2.GetPersonRequest(collection=name, external_id="alice")),
        (stub.UpdatePerson, search_pb2.UpdatePersonRequest(collection=name, external_id="alice")),
    ):
        await expect(grpc.StatusCode.NOT_FOUND, call, request)  # another tenant


async def test_list_persons_pages_stay_under_four_mebibytes(stub) -> None:
    name = unique("big-registry")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    image = make_photo([FaceSpec(48, 48, 30, 62)], size=(96, 96))
    gate = asyncio.Semaphore(8)

    async def enroll(i: int) -> None:
        async with gate:
            await stub.EnrollPerson(
                search_pb2.EnrollPersonRequest(
                    collection=name, external_id=f"p{i:03d}", images=[image], metadata=struct(blob="m" * 15_000)
                )
            )

    await asyncio.gather(*(enroll(i) for i in range(240)))
    request = search_pb2.ListPersonsRequest(collection=name, page_size=1000)
    seen: list[str] = []
    while True:
        reply = await stub.ListPersons(request)
        assert reply.ByteSize() < 4 * 1024 * 1024
        seen += [p.external_id for p in reply.persons]
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert seen == [f"p{i:03d}" for i in range(240)] and len(seen) > len(reply.persons)


def face(image: bytes | None = None, embedding: list[float] | None = None) -> search_pb2.FaceQuery:
    if embedding is not None:
        return search_pb2.FaceQuery(embedding=search_pb2.EmbeddingQuery(values=embedding))
    return search_pb2.FaceQuery(image=image)


async def test_compare_faces(stub) -> None:
    same = await stub.CompareFaces(
        search_pb2.CompareFacesRequest(
            first=face(selfie(1)), second=face(make_photo([FaceSpec(400, 260, 90, 1)], size=(800, 600), seed=3))
        )
    )
    assert same.match and same.similarity > 0.8 and same.threshold == pytest.approx(0.4)
    assert same.first_face.image_index == 0 and same.second_face.image_index == 1
    assert same.second_face.box.x1 == pytest.approx(310, abs=4)
    different = await stub.CompareFaces(
        search_pb2.CompareFacesRequest(first=face(selfie(1)), second=face(selfie(2)), threshold=0.5)
    )
    assert not different.match and different.similarity < 0.5 and different.threshold == pytest.approx(0.5)

    # The same image twice: the same face.
    self_match = await stub.CompareFaces(search_pb2.CompareFacesRequest(first=face(selfie(1)), second=face(selfie(1))))
    assert self_match.similarity == pytest.approx(1.0, abs=1e-5)

    no_face = await stub.CompareFaces(search_pb2.CompareFacesRequest(first=face(selfie(1)), second=face(noise_photo())))
    assert not no_face.match and no_face.no_face_reason == "no face detected in image 1"

    for bad in (
        search_pb2.CompareFacesRequest(first=face(selfie(1))),
        search_pb2.CompareFacesRequest(first=face(b""), second=face(selfie(1))),
        search_pb2.CompareFacesRequest(first=face(b"\x89PNG broken"), second=face(selfie(1))),
        search_pb2.CompareFacesRequest(first=face(embedding=[1.0] * 3), second=face(selfie(1))),
        search_pb2.CompareFacesRequest(first=face(embedding=[0.0] * 512), second=face(embedding=[1.0] * 512)),
        search_pb2.CompareFacesRequest(first=face(selfie(1)), second=face(selfie(1)), threshold=1.5),
    ):
        await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.CompareFaces, bad)


async def test_compare_embedding_with_image(stub) -> None:
    """An embedding taken from an indexed face compares to its image as the image itself does."""
    name = unique("vectors")
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name))
    await index(stub, [search_pb2.IndexPhotosRequest(collection=name, external_id="me", image=selfie(4))])
    basis = np.eye(512, dtype=np.float32)
    a = await stub.CompareFaces(
        search_pb2.CompareFacesRequest(
            first=face(embedding=basis[0].tolist()), second=face(embedding=basis[0].tolist())
        )
    )
    assert a.match and a.similarity == pytest.approx(1.0)
    assert not a.HasField("first_face")
    b = await stub.CompareFaces(
        search_pb2.CompareFacesRequest(
            first=face(embedding=basis[0].tolist()), second=face(embedding=(-basis[0]).tolist())
        )
    )
    assert not b.match and b.similarity == pytest.approx(-1.0)
    mixed = await stub.CompareFaces(
        search_pb2.CompareFacesRequest(first=face(embedding=basis[1].tolist()), second=face(selfie(4)))
    )
    assert mixed.second_face.image_index == 1 and -1.0 <= mixed.similarity <= 1.0


async def test_detect_faces(stub) -> None:
    specs = [FaceSpec(180, 220, 60, 2), FaceSpec(470, 240, 50, 5), FaceSpec(600, 420, 10, 6)]
    reply = await stub.DetectFaces(search_pb2.DetectFacesRequest(image=make_photo(specs, size=(640, 480))))
    assert len(reply.faces) == 3
    by_x = sorted(reply.faces, key=lambda f: f.box.x1)
    for found, spec in zip(by_x, specs, strict=True):
        assert np.allclose([found.box.x1, found.box.y1, found.box.x2, found.box.y2], spec.box, atol=4)
        assert len(found.landmarks) == 5
        points = np.array([[p.x, p.y] for p in found.landmarks])
        assert np.allclose(points, spec.landmarks, atol=max(3, spec.radius * 0.15))
    tiny = by_x[2]
    assert not tiny.quality.passed and face_pb2.QUALITY_FAILURE_FACE_TOO_SMALL in tiny.quality.failures
    assert by_x[0].quality.passed and by_x[0].det_score > 0.5
    # Options pass through: at most one face, or gates off.
    one = await stub.DetectFaces(
        search_pb2.DetectFacesRequest(
            image=make_photo(specs, size=(640, 480)), options=face_pb2.EmbedOptions(max_faces=1)
        )
    )
    assert len(one.faces) == 1
    assert (await stub.DetectFaces(search_pb2.DetectFacesRequest(image=noise_photo()))).faces == []
    for bad in (
        search_pb2.DetectFacesRequest(),
        search_pb2.DetectFacesRequest(image=b"not an image"),
        search_pb2.DetectFacesRequest(image=selfie(1), options=face_pb2.EmbedOptions(detection_threshold=7.0)),
    ):
        await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.DetectFaces, bad)


async def test_analysis_with_the_embedder_down_is_unavailable(pg_server) -> None:
    url = search_database_url(pg_server, unique("analysis_down").replace("-", "_"))
    async with search_running(url, f"127.0.0.1:{_closed_port()}", embedder={"timeout_s": 3.0}) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            details = await expect(
                grpc.StatusCode.UNAVAILABLE, stub.DetectFaces, search_pb2.DetectFacesRequest(image=selfie(1))
            )
            assert "embedder" in details
            await expect(
                grpc.StatusCode.UNAVAILABLE,
                stub.CompareFaces,
                search_pb2.CompareFacesRequest(first=face(selfie(1)), second=face(embedding=[1.0] * 512)),
            )
            # Two embeddings need no embedder.
            reply = await stub.CompareFaces(
                search_pb2.CompareFacesRequest(first=face(embedding=[1.0] * 512), second=face(embedding=[2.0] * 512))
            )
            assert reply.match and reply.similarity == pytest.approx(1.0)
