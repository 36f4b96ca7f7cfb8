"""`facesearch up` end to end, as a person runs it: real processes, real ports, real database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.v1 import embedder_pb2, embedder_pb2_grpc, search_pb2, search_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        EMBEDDER_GRPC_PORT=str(free_port()),
        EMBEDDER_METRICS_PORT=str(free_port()),
        EMBEDDER_MODELS_DIR=str(models_dir),
        SEARCH_GRPC_PORT=str(free_port()),
        SEARCH_METRICS_PORT=str(free_port()),
        SEARCH_DATA_DIR=str(tmp_path / "data" / "pgdata"),
        FACESEARCH_WEB_PORT=str(free_port()),
    )
    env.pop("SEARCH_DATABASE_URL", None)
    env.pop("SEARCH_EMBEDDER_TARGET", None)
    env.pop("FACESEARCH_WEB_SEARCH_TARGET", None)
    env.pop("FACESEARCH_WEB_DATA_DIR", None)
    return env


def start_up(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "facesearch.cli", "up", "--ready-timeout", "180", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"{marker!r} not printed; output so far:\n{''.join(seen)}")


def test_up_runs_the_whole_stack_and_stops_on_ctrl_c(tmp_path: Path, model_pack) -> None:
    env = stack_env(tmp_path, model_pack.models_dir)
    process = start_up(env)
    try:
        banner = read_until(process, "Press Ctrl-C to stop.", timeout_s=180)
        embedder_target = f"localhost:{env['EMBEDDER_GRPC_PORT']}"
        search_target = f"localhost:{env['SEARCH_GRPC_PORT']}"
        assert embedder_target in banner and search_target in banner
        assert str(tmp_path / "data" / "pgdata") in banner
        assert "auth            none: any client" in banner

        for target in (embedder_target, search_target):
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(embedder_target) as channel:
            info = embedder_pb2_grpc.EmbedderServiceStub(channel).GetModelInfo(
                embedder_pb2.GetModelInfoRequest(), timeout=5
            )
            assert (info.pack_name, info.embedding_size) == ("buffalo_l", 512)
        with grpc.insecure_channel(search_target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            created = stub.CreateCollection(search_pb2.CreateCollectionRequest(name="up-smoke"), timeout=10)
            assert created.collection.name == "up-smoke"
        # The web page, served by the gateway `up` started, lists what the search service holds.
        web_url = f"http://localhost:{env['FACESEARCH_WEB_PORT']}"
        assert f"web page        {web_url}" in banner
        with urllib.request.urlopen(web_url, timeout=10) as reply:
            assert "<title>FaceSearch</title>" in reply.read().decode()
        with urllib.request.urlopen(f"{web_url}/api/collections", timeout=30) as reply:
            assert "up-smoke" in [c["name"] for c in json.load(reply)["collections"]]
        assert (tmp_path / "data" / "web").is_dir(), "photos kept beside the database's data"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output


def test_up_without_models_explains_how_to_provide_them(tmp_path: Path) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    env = stack_env(tmp_path, empty)
    # Offline either way: no download from here, and a download URL nobody answers.
    env["EMBEDDER_ALLOW_DOWNLOAD"] = "false"
    process = start_up(env)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert "stopped during start-up" in output
    assert str(empty) in output, output
    assert "EMBEDDER_MODELS_DIR" in output, output
