"""Authentication of the search service with SEARCH_AUTH__MODE=api_key (keys made and revoked with
`facesearch keys`): no/bad/revoked key is UNAUTHENTICATED, a key of tenant b never reaches tenant
a's data through any RPC whatever metadata it sends, revocation reaches every replica (another
process) within 15 s, audit lines, opaque face ids, and mode `none` refusing a non-loopback bind."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.cli import build_parser
from facesearch.commands.common import EXIT_FAILED
from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.auth import is_loopback
from search_service.config import SearchSettings
from search_service.server import start
from tests.faces import FaceSpec, make_photo, selfie
from tests.fixtures.search import RunningSearch, search_database_url, search_running

SERVICE = search_pb2.DESCRIPTOR.services_by_name["FaceSearchService"]
REPO_ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count()

Md = tuple[tuple[str, str], ...]


def bearer(key: str) -> Md:
    return (("authorization", f"Bearer {key}"),)


async def keys_cli(monkeypatch: pytest.MonkeyPatch, database_url: str, *argv: str) -> str:
    """Runs `facesearch keys ...` as at a terminal (its own event loop) and returns its stdout."""
    monkeypatch.setenv("SEARCH_DATABASE_URL", database_url)
    args = build_parser().parse_args(["keys", *argv])
    proc_out: list[str] = []

    def run() -> int:
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = args.func(args)
        proc_out.append(buffer.getvalue())
        return code

    code = await asyncio.to_thread(run)
    assert code == 0, proc_out
    return proc_out[0]


async def create_key(monkeypatch: pytest.MonkeyPatch, database_url: str, tenant: str) -> dict[str, Any]:
    created = json.loads(await keys_cli(monkeypatch, database_url, "create", "--tenant", tenant, "--json"))
    assert created["tenant"] == tenant and created["key"].startswith(f"fsk_{created['id']}_")
    return created


@pytest.fixture(scope="module")
def auth_database_url(pg_server: Any) -> str:
    return search_database_url(pg_server, f"auth_{os.getpid()}")


@pytest.fixture(scope="module")
async def api_key_server(auth_database_url: str, embedder_server: Any) -> AsyncIterator[RunningSearch]:
    async with search_running(auth_database_url, embedder_server.target, auth={"mode": "api_key"}) as running:
        yield running


@pytest.fixture
async def stub(api_key_server: RunningSearch) -> AsyncIterator[search_pb2_grpc.FaceSearchServiceStub]:
    async with grpc.aio.insecure_channel(api_key_server.target) as channel:
        yield search_pb2_grpc.FaceSearchServiceStub(channel)


async def index(stub: search_pb2_grpc.FaceSearchServiceStub, collection: str, photos: dict[str, bytes], md: Md):
    async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
        for external_id, image in photos.items():
            yield search_pb2.IndexPhotosRequest(collection=collection, external_id=external_id, image=image)

    return [r async for r in stub.IndexPhotos(requests(), metadata=md)]


# One call per RPC of FaceSearchService, as tenant b would make it against tenant a's names. The
# test fails when an RPC is added without a case here.
def struct(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# Calls that involve no collection: every tenant may make them.
TENANT_FREE = {"ListCollections", "CompareFaces", "DetectFaces"}
# Calls naming a face by its id: an id of tenant a is NOT_FOUND for b, even in b's own collection.
BY_FACE_ID = {"SearchByFaceId", "DeleteFace", "GetFaceThumbnail"}


def rpc_calls(
    stub: search_pb2_grpc.FaceSearchServiceStub, name: str, a_face_id: str
) -> dict[str, Callable[[Md], Awaitable[Any]]]:
    face = search_pb2.FaceQuery(image=selfie(21))
    calls: dict[str, Callable[[Md], Awaitable[Any]]] = {
        "CreateCollection": lambda md: stub.CreateCollection(
            search_pb2.CreateCollectionRequest(name=name), metadata=md
        ),
        "GetCollection": lambda md: stub.GetCollection(search_pb2.GetCollectionRequest(name=name), metadata=md),
        "ListCollections": lambda md: stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=md),
        "DeleteCollection": lambda md: stub.DeleteCollection(
            search_pb2.DeleteCollectionRequest(name=name), metadata=md
        ),
        "IndexPhotos": lambda md: index(stub, name, {"p0": make_photo([FaceSpec(200, 200, 70, 22)])}, md),
        "DeletePhoto": lambda md: stub.DeletePhoto(
            search_pb2.DeletePhotoRequest(collection=name, external_id="p0"), metadata=md
        ),
        "Search": lambda md: stub.Search(
            search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(21))), metadata=md
        ),
        "SearchByFaceId": lambda md: stub.Search(
            search_pb2.SearchRequest(collection=name, face_id=a_face_id), metadata=md
        ),
        "EnrollPerson": lambda md: stub.EnrollPerson(
            search_pb2.EnrollPersonRequest(collection=name, external_id="alice", images=[selfie(21)]), metadata=md
        ),
        "IdentifyPerson": lambda md: stub.IdentifyPerson(
            search_pb2.IdentifyPersonRequest(collection=name, face=face), metadata=md
        ),
        "VerifyPerson": lambda md: stub.VerifyPerson(
            search_pb2.VerifyPersonRequest(collection=name, person_id="alice", face=face), metadata=md
        ),
        "DeletePerson": lambda md: stub.DeletePerson(
            search_pb2.DeletePersonRequest(collection=name, external_id="alice"), metadata=md
        ),
    }
    # RPCs of the management and analysis API (built only where the service has them).
    later = {
        "ListPhotos": lambda md: stub.ListPhotos(search_pb2.ListPhotosRequest(collection=name), metadata=md),
        "GetPhoto": lambda md: stub.GetPhoto(
            search_pb2.GetPhotoRequest(collection=name, external_id="p0"), metadata=md
        ),
        "UpdatePhoto": lambda md: stub.UpdatePhoto(
            search_pb2.UpdatePhotoRequest(
                collection=name, external_id="p0", metadata=struct(x=1), update_mask=mask("metadata")
            ),
            metadata=md,
        ),
        "DeleteFace": lambda md: stub.DeleteFace(
            search_pb2.DeleteFaceRequest(collection=name, face_id=a_face_id), metadata=md
        ),
        "GetFaceThumbnail": lambda md: stub.GetFaceThumbnail(
            search_pb2.GetFaceThumbnailRequest(collection=name, face_id=a_face_id), metadata=md
        ),
        "ListPersons": lambda md: stub.ListPersons(search_pb2.ListPersonsRequest(collection=name), metadata=md),
        "GetPerson": lambda md: stub.GetPerson(
            search_pb2.GetPersonRequest(collection=name, external_id="alice"), metadata=md
        ),
        "UpdatePerson": lambda md: stub.UpdatePerson(
            search_pb2.UpdatePersonRequest(
                collection=name, external_id="alice", metadata=struct(x=1), update_mask=mask("metadata")
            ),
            metadata=md,
        ),
        "CompareFaces": lambda md: stub.CompareFaces(
            search_pb2.CompareFacesRequest(first=face, second=face), metadata=md
        ),
        "DetectFaces": lambda md: stub.DetectFaces(search_pb2.DetectFacesRequest(image=selfie(21)), metadata=md),
    }
    calls.update({method: call for method, call in later.items() if method in SERVICE.methods_by_name})
    return calls


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, result


async def tenant_a_state(stub: search_pb2_grpc.FaceSearchServiceStub, name: str, a_face_id: str, md: Md) -> tuple:
    """Everything tenant a can observe of its collection."""
    collection = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name), metadata=md)).collection
    found = await stub.Search(search_pb2.SearchRequest(collection=name, face_id=a_face_id, top_k=10), metadata=md)
    verify = await stub.VerifyPerson(
        search_pb2.VerifyPersonRequest(collection=name, person_id="alice", face=search_pb2.FaceQuery(image=selfie(21))),
        metadata=md,
    )
    return (
        collection.photo_count,
        collection.face_count,
        collection.person_count,
        sorted((m.photo_id, m.face_id) for m in found.matches),
        verify.match,
    )


async def test_every_rpc_with_tenant_b_key_never_reaches_tenant_a(
    stub: search_pb2_grpc.FaceSearchServiceStub,
    auth_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="facesearch.audit")
    a = bearer((await create_key(monkeypatch, auth_database_url, "tenant-a"))["key"])
    b_key = await create_key(monkeypatch, auth_database_url, "tenant-b")
    b = bearer(b_key["key"])
    name = f"shared-{next(_names)}"
    # Tenant a: a collection with two photos of identity 21 and an enrolled person.
    await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=a)
    results = await index(
        stub,
        name,
        {"p0": make_photo([FaceSpec(200, 200, 70, 21)]), "p1": make_photo([FaceSpec(300, 220, 60, 21)])},
        a,
    )
    assert all(r.status.code == 0 and r.faces_indexed == 1 for r in results)
    await stub.EnrollPerson(
        search_pb2.EnrollPersonRequest(collection=name, external_id="alice", images=[selfie(21)]), metadata=a
    )
    first = await stub.Search(
        search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(21))), metadata=a
    )
    a_face_id = first.matches[0].face_id
    # Opaque ids: not a number, and not the same text for the two faces' neighbours in sequence.
    assert not a_face_id.isdigit() and len(a_face_id) == 22
    before = await tenant_a_state(stub, name, a_face_id, a)
    assert before[:3] == (2, 3, 1) and before[4] is True  # 2 photo faces + the template

    calls = rpc_calls(stub, name, a_face_id)
    assert {m.name for m in SERVICE.methods} == set(calls) - {"SearchByFaceId"}, "add the new RPC to rpc_calls"

    # 1. Naming tenant a in x-tenant-id (alone, twice, or after b) is refused outright.
    for spoof in ((("x-tenant-id", "tenant-a"),), (("x-tenant-id", "tenant-b"), ("x-tenant-id", "tenant-a"))):
        for method, call in calls.items():
            code, _ = await code_of(call(b + spoof))
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method, spoof, code)

    # 2. Without the header, b acts for b: a's collection does not exist for it.
    for method, call in calls.items():
        if method == "CreateCollection":
            continue
        code, result = await code_of(call(b))
        if method == "ListCollections":
            assert code == grpc.StatusCode.OK and [c.name for c in result.collections] == [], method
        elif method in TENANT_FREE:
            assert code == grpc.StatusCode.OK, (method, code, result)
        elif method == "IndexPhotos":
            assert [r.status.code for r in result] == [grpc.StatusCode.NOT_FOUND.value[0]], method
        else:
            assert code == grpc.StatusCode.NOT_FOUND, (method, code, result)

    # 3. b makes its own collection of the same name: every call acts on b's own, never on a's.
    code, _ = await code_of(calls["CreateCollection"](b))
    assert code == grpc.StatusCode.OK
    for method, call in calls.items():
        if method in ("CreateCollection", "DeleteCollection"):
            continue
        code, result = await code_of(call(b))
        if method in BY_FACE_ID:
            assert code == grpc.StatusCode.NOT_FOUND, f"{method}: a face id of tenant a means nothing to b"
            continue
        # b's own photo p0 and person alice exist from IndexPhotos/EnrollPerson on, until deleted.
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), (method, code, result)
        if method in {"IndexPhotos", "EnrollPerson", "Search", "IdentifyPerson"} | TENANT_FREE:
            assert code == grpc.StatusCode.OK, (method, code, result)
        if method == "GetCollection":
            assert (result.collection.photo_count, result.collection.person_count) == (0, 0)
        elif method == "ListCollections":
            assert [c.name for c in result.collections] == [name]
        elif method == "IndexPhotos":
            assert [r.status.code for r in result] == [0]
        elif method == "Search":
            assert [m.photo_id for m in result.matches] == []  # b's only photo was just deleted
    code, result = await code_of(calls["DeleteCollection"](b))
    assert code == grpc.StatusCode.OK and result.photos_deleted == 0 and result.persons_deleted == 0

    # Tenant a's data is exactly as it was.
    assert await tenant_a_state(stub, name, a_face_id, a) == before

    # Audit: b's deletes carry tenant b, its key id, the method, the object ids and the outcome.
    deletes = [r for r in caplog.records if r.name == "facesearch.audit" and getattr(r, "audit", "") == "delete"]
    assert any(
        r.tenant == "tenant-b"
        and r.key_id == b_key["id"]
        and r.method == "DeleteCollection"
        and r.objects == {"name": name}
        and r.outcome == "OK"
        for r in deletes
    ), [(r.tenant, r.method, r.objects, r.outcome) for r in deletes]
    assert any(r.method == "DeletePhoto" and r.outcome == "NOT_FOUND" and r.tenant == "tenant-b" for r in deletes)


async def test_missing_malformed_unknown_and_wrong_keys_are_unauthenticated(
    stub: search_pb2_grpc.FaceSearchServiceStub,
    api_key_server: RunningSearch,
    auth_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = await create_key(monkeypatch, auth_database_url, "tenant-c")
    wrong_secret = real["key"][:-4] + ("AAAA" if not real["key"].endswith("AAAA") else "BBBB")
    unknown = "fsk_000000000000_" + "x" * 43
    bad: list[Md] = [
        (),
        (("x-tenant-id", "tenant-c"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer"),),
        bearer("not-a-key"),
        bearer(unknown),
        bearer(wrong_secret),
        bearer(real["key"]) + bearer(real["key"]),
    ]
    caplog.set_level(logging.INFO, logger="facesearch.audit")
    for method, call in rpc_calls(stub, "anything", "A" * 22).items():
        for md in bad:
            code, details = await code_of(call(md))
            if method == "IndexPhotos" and code == grpc.StatusCode.OK:
                pytest.fail(f"IndexPhotos accepted {md}")
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method, md, code, details)
    code, details = await code_of(
        stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=bearer(wrong_secret))
    )
    assert details == f"unknown API key {real['id']}"
    code, details = await code_of(stub.ListCollections(search_pb2.ListCollectionsRequest()))
    assert "missing credentials" in details
    # The real key works; health needs no key (probes).
    assert (await code_of(stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=bearer(real["key"]))))[
        0
    ] == grpc.StatusCode.OK
    async with grpc.aio.insecure_channel(api_key_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest())
        # Watch too (a server stream of grpc's own that the shared interceptor wraps like a unary).
        watch = health.Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(watch.read(), 30)
        watch.cancel()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    # Every failure is audited, with the presented key's id and never its secret.
    failures = [r for r in caplog.records if getattr(r, "audit", "") == "authentication_failure"]
    assert any(r.key_id == real["id"] and r.outcome == "UNAUTHENTICATED" for r in failures)
    assert not any(real["key"] in r.getMessage() or real["key"] in str(r.__dict__) for r in caplog.records)


def _start_replica(database_url: str, embedder_target: str, log_path: Path) -> subprocess.Popen:
    """Another search replica, in a process of its own, on the same database."""
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": database_url,
        "SEARCH_EMBEDDER_TARGET": embedder_target,
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_GRPC_PORT": "0",
        "SEARCH_METRICS_PORT": "0",
        "SEARCH_AUTH__MODE": "api_key",
        "SEARCH_DATABASE__POOL_MIN_SIZE": "1",
    }
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "search_service"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )


async def _replica_port(log_path: Path, process: subprocess.Popen, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log_path.read_text)
        assert process.poll() is None, text
        for line in text.splitlines():
            if "search service serving on port" in line:
                return int(json.loads(line)["message"].split("port ")[1].split()[0])
        await asyncio.sleep(0.2)
    raise AssertionError("replica did not start (see its log)")


async def test_revocation_reaches_every_replica_within_15_seconds(
    api_key_server: RunningSearch,
    auth_database_url: str,
    embedder_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    key = await create_key(monkeypatch, auth_database_url, "tenant-r")
    log_path = tmp_path / "replica.log"
    process = _start_replica(auth_database_url, embedder_server.target, log_path)
    try:
        port = await _replica_port(log_path, process)
        targets = [api_key_server.target, f"127.0.0.1:{port}"]
        channels = [grpc.aio.insecure_channel(t) for t in targets]
        stubs = [search_pb2_grpc.FaceSearchServiceStub(c) for c in channels]
        request = search_pb2.ListCollectionsRequest()
        # Both replicas accept the key (and now hold it in their caches).
        for replica in stubs:
            await replica.ListCollections(request, metadata=bearer(key["key"]))
        out = await keys_cli(monkeypatch, auth_database_url, "revoke", key["id"])
        revoked_at = time.monotonic()
        assert f"revoked API key {key['id']}" in out
        refused_after: dict[int, float] = {}
        while len(refused_after) < len(stubs) and time.monotonic() - revoked_at < 20:
            for i, replica in enumerate(stubs):
                if i in refused_after:
                    continue
                code, details = await code_of(replica.ListCollections(request, metadata=bearer(key["key"])))
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    assert details == f"API key {key['id']} is revoked"
                    refused_after[i] = time.monotonic() - revoked_at
                else:
                    assert code == grpc.StatusCode.OK
            await asyncio.sleep(0.25)
        print(f"revocation took effect after {refused_after} s (replica index -> seconds)")
        assert sorted(refused_after) == [0, 1], refused_after
        assert max(refused_after.values()) < 15.0
        listed = await keys_cli(monkeypatch, auth_database_url, "list", "--tenant", "tenant-r", "--json")
        assert [json.loads(line)["revoked_at"] is not None for line in listed.splitlines()] == [True]
        for channel in channels:
            await channel.close()
    finally:
        process.terminate()
        process.wait(30)


async def test_mode_none_refuses_to_listen_beyond_loopback_unless_explicit(
    auth_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("[::]") and not is_loopback("0.0.0.0")
    settings = SearchSettings(
        database_url=auth_database_url, grpc_host="0.0.0.0", grpc_port=0, metrics_port=0, embedder_target="127.0.0.1:1"
    )
    with pytest.raises(RuntimeError, match="without authentication"):
        await start(settings)
    # The same through the environment, as a deployment sets it: explicit `none` starts.
    monkeypatch.setenv("SEARCH_AUTH__MODE", "none")
    explicit = SearchSettings(
        database_url=auth_database_url, grpc_host="0.0.0.0", grpc_port=0, metrics_port=0, embedder_target="127.0.0.1:1"
    )
    app = await start(explicit, metrics=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=(("x-tenant-id", "x"),))
            # Two tenant headers are refused rather than the first one winning.
            code, _ = await code_of(
                stub.ListCollections(
                    search_pb2.ListCollectionsRequest(), metadata=(("x-tenant-id", "x"), ("x-tenant-id", "y"))
                )
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await app.stop(grace_s=0.5)


async def test_cli_sends_the_api_key(
    api_key_server: RunningSearch,
    auth_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = (await create_key(monkeypatch, auth_database_url, "tenant-cli"))["key"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(make_photo([FaceSpec(200, 200, 70, 71)]))
    target = ["--target", api_key_server.target, "--no-progress"]

    def run(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    capsys.readouterr()
    assert await asyncio.to_thread(run, ["index", "cli-keyed", str(photos), *target]) == EXIT_FAILED
    assert "UNAUTHENTICATED: missing credentials" in capsys.readouterr().err
    assert await asyncio.to_thread(run, ["index", "cli-keyed", str(photos), *target, "--api-key", key]) == 0
    assert "faces: 1" in capsys.readouterr().out
    # FACESEARCH_API_KEY is the flag's default.
    monkeypatch.setenv("FACESEARCH_API_KEY", key)
    me = tmp_path / "me.jpg"
    me.write_bytes(selfie(71))
    assert await asyncio.to_thread(run, ["search", "cli-keyed", str(me), "--target", api_key_server.target]) == 0
    assert "a.jpg" in capsys.readouterr().out
    # The management commands take the same key: list the photo, then delete its face by the
    # opaque id the listing shows.
    target = ["--target", api_key_server.target]
    assert await asyncio.to_thread(run, ["collections", "list", "--json", *target]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)["collections"]] == ["cli-keyed"]
    assert await asyncio.to_thread(run, ["photos", "list", "cli-keyed", "--json", *target]) == 0
    (photo,) = json.loads(capsys.readouterr().out)["photos"]
    face_id = photo["faces"][0]["face_id"]
    assert len(face_id) == 22 and not face_id.isdigit()
    assert await asyncio.to_thread(run, ["photos", "delete-face", "cli-keyed", face_id, *target]) == 0
    assert f"deleted face {face_id} of photo a.jpg (0 faces left)" in capsys.readouterr().out
    monkeypatch.setenv("FACESEARCH_API_KEY", "fsk_000000000000_" + "x" * 43)
    assert await asyncio.to_thread(run, ["photos", "list", "cli-keyed", *target]) == EXIT_FAILED
    assert "UNAUTHENTICATED: unknown API key 000000000000" in capsys.readouterr().err
