"""insightface declares onnxruntime and opencv-python; the project ships onnxruntime-gpu and
opencv-python-headless instead. Two distributions of one module overwrite each other's files, so
exactly one may be installed (and locked) for each."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

REPO_ROOT = Path(__file__).resolve().parents[2]


def distributions_providing(module: str) -> set[str]:
    """Installed distributions whose files include `<module>/__init__.py`."""
    providers = set()
    for dist in metadata.distributions():
        files = dist.files or []
        if any(str(f).replace("\\", "/") == f"{module}/__init__.py" for f in files):
            providers.add(dist.metadata["Name"].lower())
    return providers


@pytest.mark.parametrize(
    ("module", "expected"), [("onnxruntime", "onnxruntime-gpu"), ("cv2", "opencv-python-headless")]
)
def test_exactly_one_distribution_installed(module: str, expected: str) -> None:
    assert distributions_providing(module) == {expected}


def test_lock_file_never_installs_the_conflicting_variants() -> None:
    """uv keeps overridden packages in the lock, but every edge to them carries a never-true marker."""
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    names = {package["name"] for package in lock["package"]}
    assert {"onnxruntime-gpu", "opencv-python-headless", "insightface"} <= names
    conflicting = {"onnxruntime", "opencv-python", "opencv-contrib-python"}
    edges = [
        (package["name"], dependency)
        for package in lock["package"]
        for group in (package.get("dependencies", []), *package.get("optional-dependencies", {}).values())
        for dependency in group
        if dependency["name"] in conflicting
    ]
    assert edges, "insightface's dependency on onnxruntime/opencv-python should be visible in the lock"
    for owner, dependency in edges:
        assert dependency.get("marker") == "sys_platform == 'never'", (owner, dependency)


def test_onnxruntime_gpu_runs_on_the_cpu_provider() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.array([-1.0, 2.0], dtype=np.float32)})
    assert session.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(out, [0.0, 2.0])
    assert onnx.checker.check_model(model) is None
