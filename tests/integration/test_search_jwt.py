"""SEARCH_AUTH__MODE=jwt with keys the test makes: tokens verified against a JWKS served over HTTP
(an identity provider's shape) or a PEM public key file; issuer, audience, expiry and signature
are checked and the tenant comes from the configured claim."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.search import search_running

ISSUER = "https://idp.example.test/"
AUDIENCE = "facesearch"


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A JWKS endpoint holding the test's public key under kid `k1`."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()


def token(key: Any, algorithm: str = "RS256", kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-1", "tenant": "jwt-a", "iat": now, "exp": now + 300}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def bearer(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


async def code_of(stub: search_pb2_grpc.FaceSearchServiceStub, md: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=md)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_jwt_from_a_jwks_url(
    database_url: str, embedder_server: Any, rsa_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    jwt_settings = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": jwks_url}
    async with search_running(database_url, embedder_server.target, auth={"mode": "jwt", "jwt": jwt_settings}) as s:
        async with grpc.aio.insecure_channel(s.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            a = bearer(token(rsa_key))
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="jwt-event"), metadata=a)
            listed = await stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=a)
            assert [c.name for c in listed.collections] == ["jwt-event"]
            # Another tenant's token does not see it.
            b = bearer(token(rsa_key, tenant="jwt-b"))
            assert list((await stub.ListCollections(search_pb2.ListCollectionsRequest(), metadata=b)).collections) == []

            other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            refused = {
                "expired": token(rsa_key, iat=int(time.time()) - 3600, exp=int(time.time()) - 600),
                "audience": token(rsa_key, aud="someone-else"),
                "issuer": token(rsa_key, iss="https://evil.example.test/"),
                "signature": token(other_key),
                "unknown kid": token(other_key, kid="k2"),
                "no tenant": token(rsa_key, tenant=None),
                "no exp": token(rsa_key, exp=None),
                "alg none": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "tenant": "jwt-a"}, None, algorithm="none"),
                "HS256": token(b"a shared secret the idp never uses!", algorithm="HS256"),
                "garbage": "abc.def.ghi",
            }
            for why, value in refused.items():
                code, details = await code_of(stub, bearer(value))
                assert code == grpc.StatusCode.UNAUTHENTICATED, (why, code, details)
            assert (await code_of(stub, bearer(refused["expired"])))[1] == "token expired"
            assert "tenant" in (await code_of(stub, bearer(refused["no tenant"])))[1]
            assert (await code_of(stub, ()))[0] == grpc.StatusCode.UNAUTHENTICATED
            # A tenant header naming another tenant than the token's is refused.
            code, _ = await code_of(stub, (*a, ("x-tenant-id", "jwt-b")))
            assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_jwt_from_a_public_key_file_and_a_custom_claim(
    database_url: str, embedder_server: Any, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    jwt_settings = {"issuer": ISSUER, "audience": AUDIENCE, "public_key_file": pem, "tenant_claim": "org"}
    async with search_running(database_url, embedder_server.target, auth={"mode": "jwt", "jwt": jwt_settings}) as s:
        async with grpc.aio.insecure_channel(s.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            assert (await code_of(stub, bearer(token(key, "ES256", org="acme"))))[0] == grpc.StatusCode.OK
            # The default claim name means nothing here.
            code, details = await code_of(stub, bearer(token(key, "ES256")))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "org" in details
