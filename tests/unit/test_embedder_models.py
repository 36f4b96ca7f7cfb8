"""Unit tests of model-pack handling: recognition by ONNX signature (not file name), the detector's
batch-axis rewrite, execution-provider choice, and the download path (checksum pass/fail, atomic
unpack, a clear message when offline) against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedder_service.config import EmbedderSettings
from embedder_service.models import (
    KNOWN_PACK_SHA256,
    ModelPackError,
    classify,
    discover,
    ensure_pack,
    load_models,
    make_detector_batchable,
    provider_candidates,
)
from tests import faces


def test_files_are_recognised_by_signature_not_name(model_pack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert classify(model_pack.detector_path) == "detection"
    assert classify(model_pack.recogniser_path) == "recognition"
    renamed = tmp_path / "pack"
    renamed.mkdir()
    shutil.copy(model_pack.detector_path, renamed / "zz_recognition_looking_name.onnx")
    shutil.copy(model_pack.recogniser_path, renamed / "aa_det_looking_name.onnx")
    (renamed / "broken.onnx").write_bytes(b"not onnx")
    files = discover(renamed)
    assert files.detector.name == "zz_recognition_looking_name.onnx"
    assert files.recognizer.name == "aa_det_looking_name.onnx"


def test_pack_without_recogniser_is_refused(model_pack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(model_pack.detector_path, tmp_path / "det.onnx")
    with pytest.raises(ModelPackError, match="no recognition model"):
        discover(tmp_path)


def test_detector_rewrite_makes_the_batch_axis_symbolic(model_pack) -> None:  # type: ignore[no-untyped-def]
    import onnx

    original = onnx.load(str(model_pack.detector_path))
    assert original.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    rewritten = make_detector_batchable(original, (640, 640))
    dims = rewritten.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and (dims[2].dim_value, dims[3].dim_value) == (640, 640)
    assert original.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # copy, not in place


def test_loaded_detector_batches_like_single_runs(model_pack) -> None:  # type: ignore[no-untyped-def]
    settings = EmbedderSettings(models_dir=model_pack.models_dir, allow_download=False)
    models = load_models(settings)
    assert models.detector.max_batch == settings.batching.max_detection_batch_size
    images = [faces.render([faces.FaceSpec(100 + 50 * i, 200, 40 + 10 * i, i)], (640, 640), seed=i) for i in range(3)]
    together = models.detector.run(images)
    for image, outputs in zip(images, together, strict=True):
        (alone,) = models.detector.run([image])
        for a, b in zip(outputs, alone, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert models.provider == "CPUExecutionProvider"


def test_providers_auto_without_gpu_is_cpu_and_bad_names_are_refused() -> None:
    assert [name for name, _ in provider_candidates(EmbedderSettings(execution_provider="auto"))][-1] == (
        "CPUExecutionProvider"
    )
    assert provider_candidates(EmbedderSettings(execution_provider="CPUExecutionProvider")) == [
        ("CPUExecutionProvider", {})
    ]
    cuda = provider_candidates(EmbedderSettings(execution_provider="CUDAExecutionProvider", device_id=1))
    assert cuda[0] == ("CUDAExecutionProvider", {"device_id": "1"}) and cuda[-1][0] == "CPUExecutionProvider"
    with pytest.raises(ModelPackError, match="not one of"):
        provider_candidates(EmbedderSettings(execution_provider="QuantumExecutionProvider"))


# --- download -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pack_zip(model_pack) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(model_pack.pack_dir.glob("*.onnx")):
            zf.write(path, path.name)
    return buf.getvalue()


@pytest.fixture
def http_server(pack_zip: bytes) -> Iterator[tuple[str, list[str]]]:
    """Serves /buffalo_l.zip (the generated pack) and /evil.zip (a path-traversal member)."""
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.onnx", b"x")
    files = {"/buffalo_l.zip": pack_zip, "/evil.zip": evil.getvalue()}
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_checksum_and_unpacks_atomically(
    http_server: tuple[str, list[str]], pack_zip: bytes, tmp_path: Path
) -> None:
    base, requested = http_server
    settings = EmbedderSettings(
        models_dir=tmp_path,
        model_url=f"{base}/buffalo_l.zip",
        model_sha256=hashlib.sha256(pack_zip).hexdigest(),
    )
    pack_dir = ensure_pack(settings)
    assert pack_dir == tmp_path / "buffalo_l"
    assert sorted(p.name for p in pack_dir.iterdir()) == ["det_10g.onnx", "w600k_r50.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["buffalo_l"]  # no temporary leftovers
    files = discover(pack_dir)
    assert files.detector.name == "det_10g.onnx"
    ensure_pack(settings)  # present now: no second download
    assert requested == ["/buffalo_l.zip"]


def test_download_with_wrong_checksum_is_refused_and_leaves_nothing(
    http_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, _ = http_server
    # Without EMBEDDER_MODEL_SHA256 the pinned digest of the real buffalo_l.zip applies: ours differs.
    settings = EmbedderSettings(models_dir=tmp_path, model_url=f"{base}/buffalo_l.zip")
    with pytest.raises(ModelPackError, match=f"checksum mismatch.*expected {KNOWN_PACK_SHA256['buffalo_l']}"):
        ensure_pack(settings)
    assert list(tmp_path.iterdir()) == []
    wrong = EmbedderSettings(models_dir=tmp_path, model_url=f"{base}/buffalo_l.zip", model_sha256="0" * 64)
    with pytest.raises(ModelPackError, match="checksum mismatch"):
        ensure_pack(wrong)
    assert list(tmp_path.iterdir()) == []


def test_unknown_pack_without_digest_is_refused(http_server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, requested = http_server
    settings = EmbedderSettings(models_dir=tmp_path, model_pack="mystery", model_url=f"{base}/buffalo_l.zip")
    with pytest.raises(ModelPackError, match="no known SHA-256 for pack 'mystery'"):
        ensure_pack(settings)
    assert requested == []


def test_archive_with_unsafe_paths_is_refused(http_server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = http_server
    import urllib.request

    digest = hashlib.sha256(urllib.request.urlopen(f"{base}/evil.zip").read()).hexdigest()
    settings = EmbedderSettings(models_dir=tmp_path / "m", model_url=f"{base}/evil.zip", model_sha256=digest)
    with pytest.raises(ModelPackError, match="unsafe path"):
        ensure_pack(settings)
    assert not (tmp_path / "escape.onnx").exists() and not (tmp_path / "m" / "buffalo_l").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("allow_download", [True, False])
def test_offline_start_fails_with_a_message_saying_what_to_do(allow_download: bool, tmp_path: Path) -> None:
    settings = EmbedderSettings(
        models_dir=tmp_path,
        allow_download=allow_download,
        model_url=f"http://127.0.0.1:{_closed_port()}/buffalo_l.zip",
        download_timeout_s=5,
    )
    with pytest.raises(ModelPackError) as caught:
        load_models(settings)
    message = str(caught.value)
    assert str(tmp_path / "buffalo_l") in message
    assert "EMBEDDER_MODELS_DIR" in message and "python -m tests.model_pack" in message


def test_tensorrt_gets_fp16_an_engine_cache_and_cuda_behind_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = EmbedderSettings(execution_provider="TensorrtExecutionProvider", tensorrt_cache_dir=tmp_path / "trt")
    (trt, trt_options), (cuda, _), (cpu, _) = provider_candidates(settings)
    assert (trt, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt_options["trt_fp16_enable"] == "True" and trt_options["trt_engine_cache_enable"] == "True"
    assert trt_options["trt_engine_cache_path"] == trt_options["trt_timing_cache_path"] == str(tmp_path / "trt")
    off = provider_candidates(settings.model_copy(update={"tensorrt_fp16": False}))
    assert off[0][1]["trt_fp16_enable"] == "False"


def test_tensorrt_profiles_cover_batch_one_to_the_largest_batch(model_pack) -> None:  # type: ignore[no-untyped-def]
    from embedder_service.models import BatchProfile, _recogniser_profile

    profile = _recogniser_profile(model_pack.recogniser_path, EmbedderSettings(batching={"max_batch_size": 64}))
    assert profile is not None and profile.max_batch == 64
    options = profile.provider_options()
    assert options["trt_profile_min_shapes"] == f"{profile.input_name}:1x3x112x112"
    assert (
        options["trt_profile_opt_shapes"] == options["trt_profile_max_shapes"] == f"{profile.input_name}:64x3x112x112"
    )
    assert (
        BatchProfile("input.1", (3, 640, 640), 8).provider_options()["trt_profile_max_shapes"] == "input.1:8x3x640x640"
    )
