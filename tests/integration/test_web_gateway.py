"""The web gateway over HTTP, as the page calls it: a real `python -m facesearch.web` process in front
of the real search service (embedder, PostgreSQL): errors in plain words with fitting HTTP statuses,
photos kept per credential and removed with their event, the API key forwarded as gRPC metadata
(to a search service in api_key mode)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.api_keys import ApiKeyStore
from tests.faces import FaceSpec, blank_photo, make_photo, selfie
from tests.fixtures.search import search_database_url, search_running
from tests.fixtures.web import free_port, http, multipart, web_gateway_running

MAX_IMAGE_BYTES = 300_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """An HTTP call from a thread: the search service answering the gateway runs on this event loop."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif isinstance(body, list):
        body, form_headers = multipart(body)
        headers |= form_headers
    return await asyncio.to_thread(http, method, url, body, headers)


@pytest_asyncio.fixture(loop_scope="session")
async def web(search_server: Any, tmp_path: Path) -> AsyncIterator[str]:
    with web_gateway_running(search_server.target, tmp_path / "web", max_image_bytes=str(MAX_IMAGE_BYTES)) as running:
        yield running.url


async def test_events_upload_and_search_through_the_gateway(web: str) -> None:
    name = unique("gw")
    status, created = await call("POST", f"{web}/api/collections", {"name": name, "display_name": "Gateway"})
    assert status == 201 and created["name"] == name
    mine = make_photo([FaceSpec(200, 200, 80, 4)], seed=1)
    status, reply = await call(
        "POST",
        f"{web}/api/collections/{name}/photos",
        [
            ("photos", ("a.jpg", mine)),
            ("ids", "day 1/a.jpg"),
            ("photos", ("b.jpg", b"\0" * 400_000)),
            ("ids", "b.jpg"),
            ("photos", ("a.jpg", mine)),
            ("ids", "day 1/a.jpg"),
        ],
    )
    assert status == 200
    assert [r["external_id"] for r in reply["results"]] == ["day 1/a.jpg", "b.jpg", "day 1/a.jpg"]
    assert reply["results"][2]["error"]["message"] == "day 1/a.jpg appears twice in this upload; it was sent once."
    results = {r["external_id"]: r for r in reply["results"][:2]}
    assert results["day 1/a.jpg"]["ok"] and results["day 1/a.jpg"]["faces_indexed"] == 1
    assert results["b.jpg"]["error"]["code"] == "IMAGE_TOO_LARGE"
    assert "too large" in results["b.jpg"]["error"]["message"]

    status, found = await call("POST", f"{web}/api/collections/{name}/search", [("image", ("s.jpg", selfie(4)))])
    assert status == 200, found
    [match] = found["matches"]
    assert match["photo_id"] == "day 1/a.jpg" and match["photo"] == {"width": 640, "height": 480}
    assert match["box"] == pytest.approx([120, 120, 280, 280], abs=12)

    # The kept photo: a thumbnail and the original, for the credential that uploaded it only.
    photo = f"{web}/api/collections/{name}/photo?id=day%201/a.jpg"
    status, thumbnail = await call("GET", photo)
    assert status == 200 and thumbnail[:3] == b"\xff\xd8\xff"
    assert (await call("GET", f"{photo}&size=full"))[1] == mine
    status, error = await call("GET", photo, headers={"Authorization": "Bearer someone-else"})
    assert status == 404 and error["error"]["message"] == "This photo was not uploaded through this page."

    status, deleted = await call("DELETE", f"{web}/api/collections/{name}")
    assert status == 200 and deleted["photos_deleted"] == 1
    assert (await call("GET", photo))[0] == 404, "deleting the event removes the photos the gateway kept"


async def test_errors_come_back_in_plain_words(web: str) -> None:
    status, error = await call("GET", f"{web}/api/collections/no-such-event")
    assert (status, error["error"]) == (404, {"code": "NOT_FOUND", "message": "Collection 'no-such-event' not found."})
    status, error = await call("POST", f"{web}/api/collections", {"name": "bad name!"})
    assert status == 400 and error["error"]["message"].startswith("Collection name 'bad name!' is not 1-128")
    name = unique("gw-err")
    assert (await call("POST", f"{web}/api/collections", {"name": name}))[0] == 201
    assert (await call("POST", f"{web}/api/collections", {"name": name}))[0] == 409

    search = f"{web}/api/collections/{name}/search"
    status, error = await call("POST", search, [("image", ("blank.png", blank_photo()))])
    assert (status, error["error"]["message"]) == (422, "No face found in the picture: no face detected in image 0.")
    status, error = await call("POST", search, [("image", ("big.jpg", b"\xff" * (MAX_IMAGE_BYTES + 1)))])
    assert status == 413 and error["error"]["message"] == "The image is too large (0.3 MB; at most 0.3 MB)."
    status, error = await call("POST", search, [("top_k", "5")])
    assert (status, error["error"]["message"]) == (400, "Choose a selfie first.")
    status, error = await call("POST", search, [("image", ("s.jpg", selfie(1))), ("min_similarity", "2")])
    assert (status, error["error"]["message"]) == (400, "min similarity must be between -1.0 and 1.0.")
    status, error = await call(
        "POST", f"{web}/api/collections/{name}/verify", [("image", ("s.jpg", selfie(1))), ("person_id", "zed")]
    )
    assert (status, error["error"]["message"]) == (404, "Person 'zed' not found.")

    # Another site's page may not spend the gateway's key.
    status, error = await call(
        "POST", f"{web}/api/collections", {"name": unique("csrf")}, headers={"Origin": "https://evil.example"}
    )
    assert (status, error["error"]["code"]) == (403, "PERMISSION_DENIED")
    assert (await call("GET", f"{web}/readyz"))[0] == 200


async def test_search_service_down_is_service_unavailable(tmp_path: Path) -> None:
    with web_gateway_running(f"127.0.0.1:{free_port()}", tmp_path / "web", timeout_s="5") as running:
        status, error = await call("GET", f"{running.url}/api/collections")
        assert status == 503 and error["error"]["code"] == "UNAVAILABLE"
        assert error["error"]["message"].startswith("The search service is unavailable; try again in a moment.")
        assert (await call("GET", f"{running.url}/readyz"))[0] == 503
        status, page = await call("GET", f"{running.url}/")
        assert status == 200 and b"<title>FaceSearch</title>" in page, "the page itself still loads"


async def test_the_api_key_goes_to_the_search_service_as_bearer_metadata(
    pg_server: Any, embedder_server: Any, tmp_path: Path
) -> None:
    """Against the real search service with SEARCH_AUTH__MODE=api_key: the configured key acts for
    its tenant, a key sent by the page for its own, a revoked key is 401 in plain words, and a
    configured tenant that is not the key's is 403."""
    url = search_database_url(pg_server, f"web_keys_{os.getpid()}")
    async with search_running(url, embedder_server.target, auth={"mode": "api_key"}) as search:
        store = ApiKeyStore(search.app.database.pool)
        configured, from_page, revoked = [await store.create(t) for t in ("web-a", "web-b", "web-b")]
        await store.revoke(revoked.record.id)
        async with grpc.aio.insecure_channel(search.target) as channel:
            await search_pb2_grpc.FaceSearchServiceStub(channel).CreateCollection(
                search_pb2.CreateCollectionRequest(name="only-a"),
                metadata=(("authorization", f"Bearer {configured.key}"),),
            )
        with web_gateway_running(search.target, tmp_path / "web", api_key=configured.key) as web:
            status, listed = await call("GET", f"{web.url}/api/collections")
            assert status == 200 and [c["name"] for c in listed["collections"]] == ["only-a"]
            headers = {"Authorization": f"Bearer {from_page.key}"}
            status, listed = await call("GET", f"{web.url}/api/collections", headers=headers)
            assert status == 200 and listed["collections"] == [], "the page's key acts for its own tenant"
            headers = {"Authorization": f"Bearer {revoked.key}"}
            status, error = await call("GET", f"{web.url}/api/collections", headers=headers)
            assert status == 401
            assert error["error"]["message"] == (
                f"The API key is missing or was not accepted. (API key {revoked.record.id} is revoked)"
            )
            status_config, config = await call("GET", f"{web.url}/api/config")
            assert status_config == 200 and config["key_configured"] is True
            assert (await call("GET", f"{web.url}/readyz"))[0] == 200, "health needs no key"
        with web_gateway_running(search.target, tmp_path / "web2", api_key=configured.key, tenant="web-b") as web:
            status, error = await call("GET", f"{web.url}/api/collections")
            assert status == 403 and error["error"]["code"] == "PERMISSION_DENIED"
        with web_gateway_running(search.target, tmp_path / "web3") as web:
            status, error = await call("GET", f"{web.url}/api/collections")
            assert status == 401 and "missing credentials" in error["error"]["message"]
