"""TLS and mutual TLS end to end with certificates the test makes: the CLI to the search service
and the search service to the embedder, both with client certificates; the web gateway to a TLS
search service; calls without a valid certificate are refused; a certificate renewed on disk is
served without a restart."""

from __future__ import annotations

import asyncio
import shutil
import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facesearch.cli import build_parser
from facesearch.commands.common import EXIT_UNAVAILABLE
from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.certs import CertificateAuthority, write_atomically
from tests.faces import FaceSpec, make_photo, selfie
from tests.fixtures.embedder import embedder_running
from tests.fixtures.search import search_running
from tests.fixtures.web import http, web_gateway_running


async def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return await asyncio.to_thread(args.func, args)


def tls_channel(target: str, ca: Path, cert: Any = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=cert.key_file.read_bytes() if cert else None,
        certificate_chain=cert.cert_file.read_bytes() if cert else None,
    )
    # A channel of its own, so a handshake made by an earlier channel is never reused.
    return grpc.aio.secure_channel(target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


async def list_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    stub = search_pb2_grpc.FaceSearchServiceStub(channel)
    try:
        await stub.ListCollections(search_pb2.ListCollectionsRequest(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_mutual_tls_cli_to_search_to_embedder(
    model_pack: Any, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    ca = CertificateAuthority.create(pki)
    embedder_cert = ca.issue(pki, "embedder")
    search_cert = ca.issue(pki, "search")
    search_client = ca.issue(pki, "search-client", server=False, client=True)
    cli_client = ca.issue(pki, "cli-client", server=False, client=True)
    stranger_ca = CertificateAuthority.create(tmp_path / "other", "stranger-ca")
    stranger = stranger_ca.issue(tmp_path / "other", "stranger", server=False, client=True)

    server_tls = {
        "cert_file": embedder_cert.cert_file,
        "key_file": embedder_cert.key_file,
        "client_ca_file": ca.cert_file,
    }
    async with embedder_running(model_pack, tls=server_tls) as embedder:
        embedder_target = f"localhost:{embedder.port}"
        client_tls = {"ca_file": ca.cert_file, "cert_file": search_client.cert_file, "key_file": search_client.key_file}
        search_tls = {
            "cert_file": search_cert.cert_file,
            "key_file": search_cert.key_file,
            "client_ca_file": ca.cert_file,
        }
        async with search_running(
            database_url, embedder_target, embedder={"timeout_s": 10.0, "tls": client_tls}, tls=search_tls
        ) as search:
            target = f"localhost:{search.port}"
            photos = tmp_path / "photos"
            photos.mkdir()
            (photos / "a.jpg").write_bytes(make_photo([FaceSpec(200, 200, 70, 31)]))
            (photos / "b.jpg").write_bytes(make_photo([FaceSpec(300, 220, 60, 32)]))
            me = tmp_path / "me.jpg"
            me.write_bytes(selfie(31))
            creds = [
                "--ca-file",
                str(ca.cert_file),
                "--cert-file",
                str(cli_client.cert_file),
                "--key-file",
                str(cli_client.key_file),
            ]
            # CLI -> search (mTLS) -> embedder (mTLS): faces are found and stored.
            assert await cli(["index", "tls-event", str(photos), "--target", target, *creds, "--no-progress"]) == 0
            assert "faces: 2" in capsys.readouterr().out
            assert (
                await cli(["search", "tls-event", str(me), "--target", target, *creds, "--min-similarity", "0.8"]) == 0
            )
            rows = capsys.readouterr().out.strip().splitlines()[2:]
            assert [row.split()[1] for row in rows] == ["a.jpg"]

            # Without a client certificate, with one of another CA, or in plaintext: refused.
            no_client_cert = ["search", "tls-event", str(me), "--target", target, "--ca-file", str(ca.cert_file)]
            assert await cli(no_client_cert) == EXIT_UNAVAILABLE
            assert "UNAVAILABLE" in capsys.readouterr().err
            wrong = ["--cert-file", str(stranger.cert_file), "--key-file", str(stranger.key_file)]
            assert await cli([*no_client_cert, *wrong]) == EXIT_UNAVAILABLE
            assert "UNAVAILABLE" in capsys.readouterr().err
            async with grpc.aio.insecure_channel(target) as plaintext:
                assert await list_code(plaintext) == grpc.StatusCode.UNAVAILABLE

        # A search service without a client certificate cannot use the embedder.
        no_cert = {"ca_file": ca.cert_file}
        async with search_running(
            database_url, embedder_target, embedder={"timeout_s": 10.0, "tls": no_cert}
        ) as search:
            async with grpc.aio.insecure_channel(search.target) as channel:
                stub = search_pb2_grpc.FaceSearchServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Search(
                        search_pb2.SearchRequest(collection="tls-event", image=search_pb2.ImageQuery(image=selfie(31)))
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "embedder" in refused.value.details()


async def test_renewed_certificate_is_served_without_restart(
    search_server: Any, embedder_server: Any, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    old_ca = CertificateAuthority.create(pki, "old-ca")
    issued = old_ca.issue(pki, "search")
    # The files the server reads, as a mounted Secret would hold them.
    live = tmp_path / "live"
    live.mkdir()
    cert_file, key_file = live / "tls.crt", live / "tls.key"
    shutil.copy(issued.cert_file, cert_file)
    shutil.copy(issued.key_file, key_file)
    async with search_running(
        search_server.database_url, embedder_server.target, tls={"cert_file": cert_file, "key_file": key_file}
    ) as search:
        target = f"localhost:{search.port}"
        async with tls_channel(target, old_ca.cert_file) as channel:
            assert await list_code(channel) == grpc.StatusCode.OK

        # cert-manager renews: a new key and certificate (here from a new CA, so the test can tell
        # which one a handshake got) replace the files in place.
        new_ca = CertificateAuthority.create(pki, "new-ca")
        renewed = new_ca.issue(pki / "new", "search")
        write_atomically(cert_file, renewed.cert_file.read_bytes())
        write_atomically(key_file, renewed.key_file.read_bytes())

        async with tls_channel(target, new_ca.cert_file) as channel:
            assert await list_code(channel) == grpc.StatusCode.OK
        async with tls_channel(target, old_ca.cert_file) as channel:
            assert await list_code(channel) == grpc.StatusCode.UNAVAILABLE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_tls_server_has_a_plaintext_health_port_and_reflection_can_be_off(
    search_server: Any, embedder_server: Any, tmp_path: Path
) -> None:
    ca = CertificateAuthority.create(tmp_path)
    issued = ca.issue(tmp_path, "search")
    health_port = free_port()
    async with search_running(
        search_server.database_url,
        embedder_server.target,
        tls={"cert_file": issued.cert_file, "key_file": issued.key_file},
        health_port=health_port,
        reflection=False,
        metrics_port=0,
        metrics_host="127.0.0.1",
    ) as search:
        # Probes (kubelet speaks no TLS) get health in plaintext, and nothing else there.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert await list_code(channel) == grpc.StatusCode.UNIMPLEMENTED
        async with tls_channel(f"localhost:{search.port}", ca.cert_file) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            with pytest.raises(grpc.aio.AioRpcError) as off:
                async for _ in stub.ServerReflectionInfo(ask()):
                    pass
            assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # The metrics listener on the address it was given.
        url = f"http://127.0.0.1:{search.app.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        assert "facesearch_grpc_server_handled_total" in body


async def test_search_uses_a_renewed_client_certificate_to_the_embedder(
    model_pack: Any, database_url: str, tmp_path: Path
) -> None:
    """Both ends of search -> embedder renewed onto a new CA while running: the embedder serves and
    trusts only the new one, so calls succeed again only once the search service presents its
    renewed client certificate and trusts the new CA (read from disk, no restart)."""
    pki = tmp_path / "pki"
    old_ca = CertificateAuthority.create(pki, "old-ca")
    live_embedder, live_search = tmp_path / "embedder", tmp_path / "search"
    live_embedder.mkdir()
    live_search.mkdir()

    def install(ca: CertificateAuthority, where: Path) -> None:
        server = ca.issue(where / "issued", "embedder")
        client = ca.issue(where / "issued", "search-client", server=False, client=True)
        for source, target in (
            (server.cert_file, live_embedder / "tls.crt"),
            (server.key_file, live_embedder / "tls.key"),
            (ca.cert_file, live_embedder / "ca.crt"),
            (client.cert_file, live_search / "tls.crt"),
            (client.key_file, live_search / "tls.key"),
            (ca.cert_file, live_search / "ca.crt"),
        ):
            write_atomically(target, source.read_bytes())

    install(old_ca, pki / "old")
    server_tls = {
        "cert_file": live_embedder / "tls.crt",
        "key_file": live_embedder / "tls.key",
        "client_ca_file": live_embedder / "ca.crt",
    }
    client_tls = {
        "ca_file": live_search / "ca.crt",
        "cert_file": live_search / "tls.crt",
        "key_file": live_search / "tls.key",
        "reload_interval_s": 0.5,
    }
    # Short connection age: the search service's connections are remade (new handshakes) often.
    async with embedder_running(
        model_pack, tls=server_tls, max_connection_age_s=1.0, max_connection_age_grace_s=1.0
    ) as embedder:
        async with search_running(
            database_url, f"localhost:{embedder.port}", embedder={"timeout_s": 10.0, "tls": client_tls}
        ) as search:
            async with grpc.aio.insecure_channel(search.target) as channel:
                stub = search_pb2_grpc.FaceSearchServiceStub(channel)
                await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="renewal"))
                query = search_pb2.SearchRequest(collection="renewal", image=search_pb2.ImageQuery(image=selfie(61)))

                async def search_code() -> grpc.StatusCode:
                    try:
                        await stub.Search(query, timeout=15)
                    except grpc.aio.AioRpcError as exc:
                        return exc.code()
                    return grpc.StatusCode.OK

                assert await search_code() == grpc.StatusCode.OK
                install(CertificateAuthority.create(pki, "new-ca"), pki / "new")
                # Past the old connections' age and grace (with jitter): every call now needs a
                # new handshake, which only the renewed credentials pass.
                await asyncio.sleep(4.0)
                codes = []
                for _ in range(40):  # up to ~20 s
                    codes.append(await search_code())
                    if codes[-1] == grpc.StatusCode.OK:
                        break
                    await asyncio.sleep(0.5)
                assert codes[-1] == grpc.StatusCode.OK, codes


async def test_web_gateway_reaches_a_tls_search_service(
    search_server: Any, embedder_server: Any, tmp_path: Path
) -> None:
    """FACESEARCH_WEB_TLS__CA_FILE: the gateway (a process of its own) calls a search service that
    serves TLS, as the cert-manager component runs it; without the CA it cannot (503)."""
    ca = CertificateAuthority.create(tmp_path / "pki")
    issued = ca.issue(tmp_path / "pki", "search")
    async with search_running(
        search_server.database_url,
        embedder_server.target,
        tls={"cert_file": issued.cert_file, "key_file": issued.key_file},
    ) as search:
        target = f"localhost:{search.port}"
        with web_gateway_running(target, tmp_path / "web", tls__ca_file=str(ca.cert_file), tenant="web-tls") as web:
            status, _ = await asyncio.to_thread(
                http,
                "POST",
                f"{web.url}/api/collections",
                b'{"name": "over-tls"}',
                {"Content-Type": "application/json"},
            )
            assert status == 201
            status, listed = await asyncio.to_thread(http, "GET", f"{web.url}/api/collections")
            assert status == 200 and [c["name"] for c in listed["collections"]] == ["over-tls"]
            assert (await asyncio.to_thread(http, "GET", f"{web.url}/readyz"))[0] == 200
        with web_gateway_running(target, tmp_path / "web-plain", timeout_s="5") as web:
            status, error = await asyncio.to_thread(http, "GET", f"{web.url}/api/collections")
            assert status == 503 and error["error"]["code"] == "UNAVAILABLE"
