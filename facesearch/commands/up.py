"""`facesearch up`: the whole stack on this machine — embedder, search service and (unless
SEARCH_DATABASE_URL is set) an embedded PostgreSQL + pgvector — until Ctrl-C."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service.config import EmbedderSettings
from facesearch.web.config import WebSettings
from search_service.config import AuthMode, SearchSettings

READY_TIMEOUT_S = 600.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the embedder, the search service and an embedded database locally",
        description=__doc__,
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where the services' logs go (default: beside the database data directory)",
    )
    parser.add_argument(
        "--demo-pack",
        action="store_true",
        help="use a small synthetic model pack (from a source checkout: tests/model_pack.py) instead of "
        "real models; it finds drawn test faces, not real ones",
    )
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for the services")
    parser.add_argument(
        "--web-port",
        type=int,
        default=None,
        help="port of the web page (default: $FACESEARCH_WEB_PORT, else 8080); 0 = no web page",
    )
    parser.set_defaults(func=run)


@dataclass
class Service:
    name: str
    module: str
    target: str
    metrics_port: int
    log_path: Path
    # Ready when this URL answers 200 (an HTTP service); otherwise when `target` says SERVING (gRPC).
    health_url: str | None = None
    process: subprocess.Popen | None = field(default=None)

    def is_ready(self) -> bool:
        if self.health_url is None:
            return is_serving(self.target)
        try:
            with urllib.request.urlopen(self.health_url, timeout=1.0) as reply:
                return reply.status == 200
        except OSError:
            return False

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def is_serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last log lines, with JSON log records shown as their message (and traceback)."""
    if not path.exists():
        return ""
    shown = []
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        try:
            record = json.loads(line)
        except ValueError:
            shown.append(line)
            continue
        shown.append(str(record.get("message", line)))
        if record.get("exc_info"):
            shown.append(str(record["exc_info"]))
    return "\n".join(shown)


def describe_database(search: SearchSettings) -> str:
    if not search.database_url:
        return f"embedded PostgreSQL + pgvector, data in {search.data_dir}"
    parts = urlsplit(search.database_url)
    host = parts.hostname or "local socket"
    return f"PostgreSQL at {host}:{parts.port or 5432}{parts.path} (SEARCH_DATABASE_URL)"


def describe_auth(search: SearchSettings) -> str:
    mode = search.auth.mode
    if mode is AuthMode.NONE:
        return (
            f"none: any client that reaches {search.grpc_host} acts for the tenant it names (x-tenant-id); "
            "SEARCH_AUTH__MODE=api_key for keys"
        )
    if mode is AuthMode.API_KEY:
        return "api_key: make one with `facesearch keys create --tenant T`, pass it with --api-key"
    return f"jwt: tokens of {search.auth.jwt.issuer}"


def demo_models_dir(data_root: Path) -> Path:
    try:
        from tests.model_pack import write_model_pack
    except ImportError as exc:
        raise SystemExit("--demo-pack needs a source checkout of facesearch (tests/model_pack.py)") from exc
    out = data_root / "demo-models"
    write_model_pack(out)
    return out


def run(args: argparse.Namespace) -> int:
    data_root = SearchSettings().data_dir.parent
    if args.demo_pack:
        os.environ["EMBEDDER_MODELS_DIR"] = str(demo_models_dir(data_root))
    # This machine only, unless told otherwise: auth mode `none` is refused beyond loopback.
    for name in ("EMBEDDER_GRPC_HOST", "SEARCH_GRPC_HOST", "EMBEDDER_METRICS_HOST", "SEARCH_METRICS_HOST"):
        os.environ.setdefault(name, "127.0.0.1")
    embedder = EmbedderSettings()
    embedder_target = f"localhost:{embedder.grpc_port}"
    os.environ.setdefault("SEARCH_EMBEDDER_TARGET", embedder_target)
    search = SearchSettings()
    web = web_settings(args, data_root, search)
    env = dict(os.environ)

    log_dir = args.log_dir or data_root / "logs"
    services = [
        Service("embedder", "embedder_service", embedder_target, embedder.metrics_port, log_dir / "embedder.log"),
        Service(
            "search", "search_service", f"localhost:{search.grpc_port}", search.metrics_port, log_dir / "search.log"
        ),
    ]
    if web is not None:
        web_url = f"http://localhost:{web.port}"
        services.append(Service("web", "facesearch.web", web_url, 0, log_dir / "web.log", f"{web_url}/healthz"))
    print(f"Starting FaceSearch (logs in {log_dir}) ...", flush=True)
    for service in services:
        service.start(env)
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if not wait_until_ready(services, args.ready_timeout, lambda: stopping):
            return 1
        print(
            "\nFaceSearch is up.\n"
            f"  search service  {services[1].target}  gRPC (facesearch.v1.FaceSearchService); "
            f"metrics http://localhost:{search.metrics_port}/metrics\n"
            f"  embedder        {services[0].target}  gRPC (facesearch.v1.EmbedderService); "
            f"metrics http://localhost:{embedder.metrics_port}/metrics\n"
            f"  model pack      {embedder.model_pack} in {embedder.models_dir}\n"
            f"{web_banner(web)}"
            f"  database        {describe_database(search)}\n"
            f"  auth            {describe_auth(search)}\n"
            f"  logs            {log_dir}\n"
            "Try: facesearch index my-event ./photos && facesearch search my-event selfie.jpg\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stopping:
            for service in services:
                code = service.exited()
                if code is not None:
                    print(f"\n{service.name} exited with code {code}:\n{log_tail(service.log_path)}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        print("Stopping ...", flush=True)
        return 0
    finally:
        for service in reversed(services):
            service.stop(timeout_s=max(embedder.shutdown_grace_s, search.shutdown_grace_s) + 10)


def web_settings(args: argparse.Namespace, data_root: Path, search: SearchSettings) -> WebSettings | None:
    """The web gateway's settings (through FACESEARCH_WEB_* in the environment its process gets), or
    None when it is switched off or its extra is not installed."""
    if args.web_port is not None:
        os.environ["FACESEARCH_WEB_PORT"] = str(args.web_port)
    os.environ.setdefault("FACESEARCH_WEB_SEARCH_TARGET", f"localhost:{search.grpc_port}")
    os.environ.setdefault("FACESEARCH_WEB_DATA_DIR", str(data_root / "web"))
    settings = WebSettings()
    if settings.port == 0:
        return None
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        print("  (no web page: the `web` extra is not installed; uv sync --extra web)", flush=True)
        return None
    return settings


def web_banner(web: WebSettings | None) -> str:
    if web is None:
        return ""
    return f"  web page        http://localhost:{web.port}  (photos kept in {web.data_dir})\n"


def wait_until_ready(services: list[Service], timeout_s: float, stopping: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        if stopping():
            return False
        for service in list(pending):
            code = service.exited()
            if code is not None:
                print(
                    f"\nThe {service.name} service stopped during start-up (exit code {code}):\n\n"
                    f"{log_tail(service.log_path)}\n\nFull log: {service.log_path}",
                    file=sys.stderr,
                )
                return False
            if service.is_ready():
                print(f"  {service.name} is serving on {service.target}", flush=True)
                pending.remove(service)
        if time.monotonic() > deadline:
            names = ", ".join(s.name for s in pending)
            print(
                f"\nTimed out after {timeout_s:.0f}s waiting for: {names}. See {log_dir_of(pending)}", file=sys.stderr
            )
            return False
        time.sleep(0.5)
    return True


def log_dir_of(services: list[Service]) -> str:
    return ", ".join(str(s.log_path) for s in services)
