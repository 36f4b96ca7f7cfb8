"""deploy/docker and deploy/compose.yaml: the images install exactly as the README says, stay
non-root and multi-stage, keep GPU wheels out of the search image, and compose's env vars and start
order match the services."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, REPO, env_field_error, settings_from_env
from tests.tools import uv

DOCKER = DEPLOY / "docker"
SERVICE_DOCKERFILES = {
    "search.Dockerfile": "search",
    "embedder-cpu.Dockerfile": "embedder",
    # The GPU image adds the `gpu` dependency group (nvImageCodec) to the embedder extra.
    "embedder-gpu.Dockerfile": "embedder --group gpu",
    "web.Dockerfile": "web",
}
# Extra -> (module the image runs, env prefix of its settings).
ENTRYPOINTS = {"search": "search_service", "embedder": "embedder_service", "web": "facesearch.web"}
ENV_PREFIXES = {"search": "SEARCH_", "embedder": "EMBEDDER_", "web": "FACESEARCH_WEB_"}


def _extra(name: str) -> str:
    """The extra a Dockerfile installs (its `uv sync` may add a dependency group)."""
    return SERVICE_DOCKERFILES[name].split()[0]


# Distributions that only make sense with a GPU; none may reach the search image.
GPU_DISTRIBUTIONS = re.compile(r"^(onnxruntime-gpu|nvidia-[a-z0-9-]+|tensorrt[a-z0-9-]*|cupy[a-z0-9-]*|torch)==")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def _uv_sync_commands(dockerfile: Path) -> list[str]:
    commands = []
    for keyword, args in _instructions(dockerfile):
        if keyword == "RUN":
            commands += [m.group(0).strip() for m in re.finditer(r"uv sync[^&;|]*", args)]
    return commands


@pytest.mark.parametrize(("name", "extra"), SERVICE_DOCKERFILES.items())
def test_dockerfile_installs_with_the_readme_command(name: str, extra: str) -> None:
    """One recipe: the image's `uv sync` is, verbatim, a command of the README's Production install."""
    commands = _uv_sync_commands(DOCKER / name)
    assert commands == [f"uv sync --locked --no-dev --no-editable --extra {extra}"]
    readme = (REPO / "README.md").read_text()
    assert commands[0] in readme, (
        f"README.md lacks `{commands[0]}` (its Production install section must hold the images' install step)"
    )


@pytest.mark.parametrize("name", SERVICE_DOCKERFILES)
def test_dockerfile_is_multi_stage_non_root_and_pins_uv(name: str) -> None:
    instructions = _instructions(DOCKER / name)
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert len([s for s in stages if " AS " in s.upper()]) >= 2, "build and runtime stages"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the runtime stage runs as a non-root user"
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    uv_version = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert uv_version, "the Makefile pins the uv version it bootstraps"
    assert f"uv=={uv_version[1]}" in runs, "the image pins the same uv version as the Makefile"
    entrypoint = next(args for keyword, args in reversed(instructions) if keyword == "ENTRYPOINT")
    assert entrypoint == f'["python", "-m", "{ENTRYPOINTS[_extra(name)]}"]'
    # The runtime stage gets the venv only (the project is installed into it, --no-editable).
    copies = [args for keyword, args in instructions if keyword == "COPY" and "--from=build" in args]
    assert copies and all("/opt/facesearch/venv" in c for c in copies)


@pytest.mark.parametrize("name", SERVICE_DOCKERFILES)
def test_dockerfile_env_vars_are_settings_fields(name: str) -> None:
    env: dict[str, str] = {}
    for keyword, args in _instructions(DOCKER / name):
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    service_vars = {k: v for k, v in env.items() if k.startswith(tuple(ENV_PREFIXES.values()))}
    prefix = ENV_PREFIXES[_extra(name)]
    assert service_vars and all(k.startswith(prefix) for k in service_vars)
    errors = [env_field_error(k) for k in service_vars]
    assert not [e for e in errors if e], errors


def test_gpu_image_matches_onnxruntime_gpu_cuda_major() -> None:
    """onnxruntime-gpu's CUDA provider links a given CUDA major; the base image must provide it."""
    info = pytest.importorskip("onnxruntime.capi.build_and_package_info")
    cuda_major = str(info.cuda_version).split(".")[0]
    args = dict(
        arg.split("=", 1)
        for keyword, arg in _instructions(DOCKER / "embedder-gpu.Dockerfile")
        if keyword == "ARG" and "=" in arg
    )
    image = args["CUDA_IMAGE"]
    assert image.startswith(f"nvidia/cuda:{cuda_major}."), f"{image} vs onnxruntime-gpu built for CUDA {cuda_major}"
    assert "cudnn" in image and "runtime" in image


def test_cpu_images_use_a_slim_python_base() -> None:
    for name in ("search.Dockerfile", "embedder-cpu.Dockerfile", "web.Dockerfile"):
        args = dict(a.split("=", 1) for keyword, a in _instructions(DOCKER / name) if keyword == "ARG" and "=" in a)
        assert re.fullmatch(r"python:3\.1[1-3]-slim(-\w+)?", args["PYTHON_IMAGE"]), name


def _locked_packages(extra: str) -> list[str]:
    """`name==version` of what `uv sync --no-dev --extra EXTRA` installs, read from the lock."""
    proc = subprocess.run(
        [uv(), "export", "--locked", "--offline", "--no-dev", "--no-hashes", "--no-emit-project", "--extra", extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split(";")[0].strip() for line in proc.stdout.splitlines() if "==" in line]


def test_search_install_has_no_gpu_wheels() -> None:
    """What `uv sync --extra search` installs, read from the lock: no GPU runtime in it."""
    packages = _locked_packages("search")
    assert any(p.startswith("asyncpg==") for p in packages)
    assert not [p for p in packages if GPU_DISTRIBUTIONS.match(p)]
    # The check can fail: the embedder extra does carry a GPU wheel.
    assert any(GPU_DISTRIBUTIONS.match(p) for p in _locked_packages("embedder"))


@pytest.mark.parametrize("name", SERVICE_DOCKERFILES)
def test_dockerignore_sends_what_the_dockerfile_copies_and_no_models(name: str) -> None:
    """The context is the repository root: ignore everything but what COPY needs (never weights)."""
    ignore = [line.strip() for line in (DOCKER / f"{name}.dockerignore").read_text().splitlines()]
    assert "*" in ignore and "**/*.onnx" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, args in _instructions(DOCKER / name):
        if keyword == "COPY" and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert source.rstrip("/") in allowed, f"{name} copies {source}, which its .dockerignore leaves out"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_env_vars_are_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedder_service.config import EmbedderSettings
    from search_service.config import SearchSettings

    services = _compose()["services"]
    for service, cls in (("embedder", EmbedderSettings), ("search", SearchSettings)):
        env = {k: str(v) for k, v in services[service]["environment"].items()}
        errors = [env_field_error(name) for name in env]
        assert not [e for e in errors if e], errors
        # ${VAR:-default} is compose's interpolation; pydantic sees the default.
        resolved = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
        settings = settings_from_env(cls, resolved, monkeypatch)
        published = {p.split(":")[-1] for p in services[service]["ports"]}
        assert {str(settings.grpc_port), str(settings.metrics_port)} <= published
        assert services[service]["read_only"] is True
        assert services[service]["healthcheck"]["test"][-1].endswith(f":{settings.grpc_port}")


def test_compose_starts_in_health_order() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert services["search"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "embedder": {"condition": "service_healthy"},
    }
    for name in ("postgres", "embedder", "search"):
        assert services[name]["healthcheck"]["test"], name
    database_url = services["search"]["environment"]["SEARCH_DATABASE_URL"]
    assert "@postgres:5432/" in database_url
    assert services["search"]["environment"]["SEARCH_EMBEDDER_TARGET"] == "dns:///embedder:50051"
    models_mount = next(v for v in services["embedder"]["volumes"] if "/opt/facesearch/models" in v)
    assert models_mount.endswith(":ro")


def test_health_check_script_reports_serving_state(tmp_path: Path) -> None:
    """The images' HEALTHCHECK script against a real gRPC server: NOT_SERVING -> 1, SERVING -> 0."""
    import sys
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        script = str(DOCKER / "grpc_health_check.py")

        def check() -> int:
            return subprocess.run(
                [sys.executable, script, f"127.0.0.1:{port}"], capture_output=True, timeout=30, check=False
            ).returncode

        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert check() == 1
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert check() == 0
    finally:
        server.stop(None)
