"""Model packs: find or download (checksum, atomic unpack) a pack, recognise its detector and
recogniser by ONNX signature, pick execution providers, make the detector's batch axis dynamic and
open the onnxruntime sessions the batcher runs."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from insightface.utils.storage import model_zoo_download_url

from embedder_service.config import EmbedderSettings, ExecutionProvider

log = logging.getLogger(__name__)

# SHA-256 of the pack zips insightface publishes (v0.7 release assets, the same files its model-zoo
# release serves), as pinned independently by several public projects. A digest outside this table
# is refused unless EMBEDDER_MODEL_SHA256 names it.
KNOWN_PACK_SHA256: dict[str, str] = {
    "buffalo_l": "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
    "buffalo_m": "d98264bd8f2dc75cbc2ddce2a14e636e02bb857b3051c234b737bf3b614edca9",
    "buffalo_s": "d85a87f503f691807cd8bb97128bdf7a0660326cd9cd02657127fa978bab8b5e",
    "buffalo_sc": "57d31b56b6ffa911c8a73cfc1707c73cab76efe7f13b675a05223bf42de47c72",
    "antelopev2": "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5",
}

# SCRFD output layouts by output count, as insightface's SCRFD._init_vars reads them:
# (feature map count, strides, anchors per location, has keypoints).
_SCRFD_LAYOUTS: dict[int, tuple[int, tuple[int, ...], int, bool]] = {
    6: (3, (8, 16, 32), 2, False),
    9: (3, (8, 16, 32), 2, True),
    10: (5, (8, 16, 32, 64, 128), 1, False),
    15: (5, (8, 16, 32, 64, 128), 1, True),
}


class ModelPackError(RuntimeError):
    """The pack cannot be found, fetched, verified or loaded; the message says what to do."""


@dataclass(frozen=True)
class PackFiles:
    pack_dir: Path
    detector: Path
    recognizer: Path


def pack_dir_of(settings: EmbedderSettings) -> Path:
    return Path(settings.models_dir).expanduser() / settings.model_pack


def _onnx_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.onnx")) if directory.is_dir() else []


def ensure_pack(settings: EmbedderSettings) -> Path:
    """The pack directory, downloading and unpacking the pack first when it is missing."""
    pack_dir = pack_dir_of(settings)
    if _onnx_files(pack_dir):
        return pack_dir
    url = settings.model_url or model_zoo_download_url(f"{settings.model_pack}.zip")
    if not settings.allow_download:
        raise ModelPackError(_missing_message(pack_dir, settings, "downloading is switched off"))
    try:
        download_pack(url, pack_dir, settings)
    except ModelPackError:
        raise
    except OSError as exc:  # URLError, timeouts, refused connections, disk errors
        raise ModelPackError(_missing_message(pack_dir, settings, f"downloading {url} failed: {exc}")) from exc
    return pack_dir


def _missing_message(pack_dir: Path, settings: EmbedderSettings, why: str) -> str:
    return (
        f"Model pack {settings.model_pack!r} not found: looked for *.onnx files in {pack_dir} and {why}. "
        f"Provide the files by unpacking insightface's {settings.model_pack}.zip into that directory, or set "
        f"EMBEDDER_MODELS_DIR to a directory holding {settings.model_pack}/*.onnx (EMBEDDER_MODEL_PACK picks "
        "another pack). To try the stack without real weights, run `facesearch up --demo-pack` (or write a "
        "synthetic pack with `python -m tests.model_pack DIR` and set EMBEDDER_MODELS_DIR=DIR)."
    )


def expected_sha256(settings: EmbedderSettings) -> str:
    if settings.model_sha256:
        return settings.model_sha256.lower()
    known = KNOWN_PACK_SHA256.get(settings.model_pack)
    if known is None:
        raise ModelPackError(
            f"no known SHA-256 for pack {settings.model_pack!r}; set EMBEDDER_MODEL_SHA256 to the digest of "
            "the zip you trust, or provide the unpacked files in EMBEDDER_MODELS_DIR"
        )
    return known


def download_pack(url: str, pack_dir: Path, settings: EmbedderSettings) -> None:
    """Downloads the zip, checks its digest before opening it, unpacks into a temporary directory
    beside `pack_dir` and renames it into place, so a crash never leaves a half-written pack."""
    want = expected_sha256(settings)
    pack_dir.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading model pack", extra={"url": url, "pack_dir": str(pack_dir)})
    with tempfile.TemporaryDirectory(dir=pack_dir.parent, prefix=f".{pack_dir.name}.") as tmp:
        tmp_dir = Path(tmp)
        archive = tmp_dir / "pack.zip"
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=settings.download_timeout_s) as response, archive.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != want:
            raise ModelPackError(
                f"checksum mismatch for {url}: got SHA-256 {got}, expected {want}; refusing to unpack it "
                "(set EMBEDDER_MODEL_SHA256 only if you trust this file)"
            )
        unpacked = tmp_dir / "unpacked"
        _safe_extract(archive, unpacked)
        source = unpacked
        if not _onnx_files(source):
            # Some packs (antelopev2) nest their files in a folder named after the pack.
            nested = [p for p in source.iterdir() if p.is_dir() and _onnx_files(p)]
            if len(nested) != 1:
                raise ModelPackError(f"{url} holds no *.onnx files")
            source = nested[0]
        try:
            os.rename(source, pack_dir)
        except OSError:
            if _onnx_files(pack_dir):  # another process won the race: its copy is as good as ours
                return
            if pack_dir.is_dir() and not any(pack_dir.iterdir()):
                pack_dir.rmdir()
                os.rename(source, pack_dir)
            else:
                raise
    log.info("model pack ready", extra={"pack_dir": str(pack_dir), "sha256": want})


def _safe_extract(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = Path(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise ModelPackError(f"unsafe path in model archive: {member.filename!r}")
        zf.extractall(target)


def classify(path: Path) -> str | None:
    """'detection', 'recognition' or None, from the graph's signature as insightface's ModelRouter
    decides it (outputs >= 5: SCRFD; square input >= 112 divisible by 16 with one output: ArcFace)."""
    model = onnx.load(str(path), load_external_data=False)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not inputs:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    outputs = model.graph.output
    if len(outputs) >= 5:
        return "detection" if len(outputs) in _SCRFD_LAYOUTS else None
    if len(dims) == 4 and dims[2] in (192, 96, 128):
        return None  # landmark, attribute and swapper models of the same packs
    if len(dims) == 4 and dims[2] == dims[3] and dims[2] and dims[2] >= 112 and dims[2] % 16 == 0:
        return "recognition" if len(outputs) == 1 else None
    return None


def discover(pack_dir: Path) -> PackFiles:
    """The first detector and recogniser of the pack in file-name order (insightface's choice)."""
    found: dict[str, Path] = {}
    for path in _onnx_files(pack_dir):
        try:
            task = classify(path)
        except Exception as exc:  # a corrupt file must not hide the good ones; say which it is
            log.warning("cannot read %s: %s", path, exc)
            continue
        if task is not None and task not in found:
            found[task] = path
    missing = [task for task in ("detection", "recognition") if task not in found]
    if missing:
        raise ModelPackError(f"pack {pack_dir} has no {' and no '.join(missing)} model (recognised by ONNX signature)")
    return PackFiles(pack_dir=pack_dir, detector=found["detection"], recognizer=found["recognition"])


def _cuda_device_count() -> int:
    """CUDA devices the driver sees; 0 without a driver (onnxruntime-gpu lists CUDA regardless)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def provider_candidates(settings: EmbedderSettings) -> list[tuple[str, dict[str, str]]]:
    """Providers to ask onnxruntime for, best first, CPU always last as the fallback."""
    available = set(ort.get_available_providers())
    device = {"device_id": str(settings.device_id)}
    wanted = settings.execution_provider
    if wanted == "auto":
        gpu = _cuda_device_count() > settings.device_id
        names = [ExecutionProvider.TENSORRT, ExecutionProvider.CUDA] if gpu else []
    else:
        try:
            names = [ExecutionProvider(wanted)]
        except ValueError as exc:
            choices = ", ".join(["auto", *ExecutionProvider])
            raise ModelPackError(f"EMBEDDER_EXECUTION_PROVIDER={wanted!r} is not one of {choices}") from exc
        if names[0] not in available:
            raise ModelPackError(f"{wanted} is not available in this onnxruntime build ({sorted(available)})")
        if names[0] is ExecutionProvider.TENSORRT:
            names.append(ExecutionProvider.CUDA)
    chosen = [(str(n), dict(device)) for n in names if n in available and n is not ExecutionProvider.CPU]
    for name, options in chosen:
        if name == ExecutionProvider.TENSORRT:
            options.update(tensorrt_options(settings))
    chosen.append((str(ExecutionProvider.CPU), {}))
    return chosen


def tensorrt_options(settings: EmbedderSettings) -> dict[str, str]:
    """TensorRT EP options: FP16 kernels, and engines plus kernel timings cached on disk (a volume
    in Kubernetes) so that only the first start on a GPU model builds them (minutes), later ones
    load them (seconds)."""
    cache = str(Path(settings.tensorrt_cache_dir).expanduser())
    return {
        "trt_fp16_enable": str(settings.tensorrt_fp16),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_max_workspace_size": str(settings.tensorrt_workspace_mb * 1024 * 1024),
    }


@dataclass(frozen=True)
class BatchProfile:
    """One input's shapes for a TensorRT optimisation profile: the batch axis from 1 to `max_batch`,
    tuned for `max_batch` (what a busy server's batches are)."""

    input_name: str
    item_shape: tuple[int, ...]  # the input's shape without the batch axis
    max_batch: int

    def provider_options(self) -> dict[str, str]:
        def shape(batch: int) -> str:
            return f"{self.input_name}:" + "x".join(str(d) for d in (batch, *self.item_shape))

        return {
            "trt_profile_min_shapes": shape(1),
            "trt_profile_opt_shapes": shape(self.max_batch),
            "trt_profile_max_shapes": shape(self.max_batch),
        }


def _preload_tensorrt() -> None:
    """TensorRT from the `tensorrt-cu13-libs` wheel lives in site-packages, off the loader's path;
    loading it first (global symbols) lets onnxruntime's TensorRT EP find it by name."""
    try:
        import tensorrt_libs  # type: ignore[import-not-found]
    except ImportError:
        return
    libs = Path(tensorrt_libs.__file__).parent
    for pattern in ("libnvinfer.so.*", "libnvinfer_plugin.so.*", "libnvonnxparser.so.*"):
        for lib in sorted(libs.glob(pattern)):
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                log.warning("cannot load %s: %s", lib, exc)


@functools.cache
def _preload_gpu_libraries() -> None:
    """CUDA/cuDNN from NVIDIA's pip packages (where the image has no system copies) and TensorRT
    from its wheel, loaded once before the first GPU session so onnxruntime finds them by name."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # the libraries may be on the system path instead
            log.debug("onnxruntime.preload_dlls: %s", exc)
    _preload_tensorrt()


def make_session(
    model: bytes | str,
    settings: EmbedderSettings,
    providers: list[tuple[str, dict[str, str]]],
    profile: BatchProfile | None = None,
) -> ort.InferenceSession:
    if any(name in (ExecutionProvider.TENSORRT, ExecutionProvider.CUDA) for name, _ in providers):
        _preload_gpu_libraries()
    if any(name == ExecutionProvider.TENSORRT for name, _ in providers):
        Path(settings.tensorrt_cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
        if profile is not None:
            providers = [
                (name, {**opts, **profile.provider_options()} if name == ExecutionProvider.TENSORRT else opts)
                for name, opts in providers
            ]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = settings.cpu_memory_arena
    if not settings.intra_op_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(
        model,
        sess_options=options,
        providers=[name for name, _ in providers],
        provider_options=[opts for _, opts in providers],
    )


def make_detector_batchable(model: onnx.ModelProto, input_size: tuple[int, int]) -> onnx.ModelProto:
    """A copy of an SCRFD graph whose input batch axis is symbolic and whose height/width are fixed
    to `input_size` (w, h). SCRFD's outputs have no batch axis (rows = anchors), so with N images the
    rows stack image after image; stale intermediate shapes are dropped so nothing pins batch 1."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {t.name for t in graph.initializer}
    graph_input = next(i for i in graph.input if i.name not in initializers)
    dims = graph_input.type.tensor_type.shape.dim
    dims[0].ClearField("dim_value")
    dims[0].dim_param = "batch"
    for axis, value in ((2, input_size[1]), (3, input_size[0])):
        dims[axis].ClearField("dim_param")
        dims[axis].dim_value = value
    for index, output in enumerate(graph.output):
        for dim_index, dim in enumerate(output.type.tensor_type.shape.dim):
            dim.ClearField("dim_value")
            dim.dim_param = f"out{index}_{dim_index}"
    del graph.value_info[:]
    return rewritten


def run_session(
    session: ort.InferenceSession, input_name: str, blob: np.ndarray, output_names: list[str]
) -> list[np.ndarray]:
    """session.run, or on a GPU provider through IO binding: the input is copied to the device once
    and every output comes back in one copy, without onnxruntime's per-call staging."""
    provider = session.get_providers()[0]
    if provider not in (ExecutionProvider.CUDA, ExecutionProvider.TENSORRT):
        return session.run(output_names, {input_name: blob})
    binding = session.io_binding()
    binding.bind_cpu_input(input_name, blob)
    for name in output_names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


@dataclass(frozen=True)
class DetectorLayout:
    """How to read SCRFD's outputs (insightface's SCRFD._init_vars)."""

    fmc: int
    strides: tuple[int, ...]
    num_anchors: int
    use_kps: bool
    input_mean: float = 127.5
    input_std: float = 128.0


class Detector:
    """An SCRFD session that runs N letterboxed images at once and splits the rows per image."""

    def __init__(self, path: Path, settings: EmbedderSettings, providers: list[tuple[str, dict[str, str]]]) -> None:
        self.path = path
        model = onnx.load(str(path))
        n_outputs = len(model.graph.output)
        fmc, strides, anchors, use_kps = _SCRFD_LAYOUTS[n_outputs]
        self.layout = DetectorLayout(fmc=fmc, strides=strides, num_anchors=anchors, use_kps=use_kps)
        initializers = {t.name for t in model.graph.initializer}
        graph_input = next(i for i in model.graph.input if i.name not in initializers)
        dims = graph_input.type.tensor_type.shape.dim
        fixed_hw = (dims[3].dim_value, dims[2].dim_value)
        size = settings.detector_input_size
        self.input_size = fixed_hw if all(fixed_hw) else (size, size)
        if all(fixed_hw) and fixed_hw != (size, size):
            log.warning("detector input size is fixed by the model", extra={"size": list(fixed_hw)})
        self.batched_outputs = len(model.graph.output[0].type.tensor_type.shape.dim) == 3
        self.max_batch = settings.batching.max_detection_batch_size
        profile = BatchProfile(graph_input.name, (3, self.input_size[1], self.input_size[0]), self.max_batch)
        self.session = make_session(
            make_detector_batchable(model, self.input_size).SerializeToString(), settings, providers, profile
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.max_batch > 1 and not self._batching_works():
            log.warning("detector graph does not batch; detection runs one image at a time")
            self.max_batch = 1

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, images_bgr: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Per letterboxed BGR image, its outputs (scores..., boxes..., kps...) as 2-D arrays of its
        anchors' rows. The blob is made here, for the whole batch at once, with insightface's
        normalisation (cv2.dnn, RGB, (x - 127.5) / 128)."""
        if len(images_bgr) > 1 and self.max_batch == 1:
            return [self.run([image])[0] for image in images_bgr]
        mean = self.layout.input_mean
        blob = cv2.dnn.blobFromImages(
            list(images_bgr), 1.0 / self.layout.input_std, self.input_size, (mean, mean, mean), swapRB=True
        )
        outs = run_session(self.session, self.input_name, blob, self.output_names)
        n = len(images_bgr)
        per_image: list[list[np.ndarray]] = [[] for _ in range(n)]
        for out in outs:
            rows = out.reshape(n, -1, out.shape[-1])
            for i in range(n):
                per_image[i].append(rows[i])
        return per_image

    def _batching_works(self) -> bool:
        rng = np.random.default_rng(0)
        w, h = self.input_size
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
        try:
            together = self.run(images)
            single = [self.run([image])[0] for image in images]
        except Exception as exc:
            log.warning("batched detector run failed: %s", exc)
            return False
        return all(
            a.shape == b.shape and np.allclose(a, b, rtol=1e-3, atol=1e-4)
            for t, s in zip(together, single, strict=True)
            for a, b in zip(t, s, strict=True)
        )


class Recognizer:
    """An ArcFace session that embeds N aligned crops at once (insightface's ArcFaceONNX maths)."""

    def __init__(self, path: Path, settings: EmbedderSettings, providers: list[tuple[str, dict[str, str]]]) -> None:
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        self.path = path
        on_tensorrt = any(name == ExecutionProvider.TENSORRT for name, _ in providers)
        profile = _recogniser_profile(path, settings) if on_tensorrt else None
        self.session = make_session(str(path), settings, providers, profile)
        # insightface decides mean/std from the graph's first node names; reuse its decision.
        reference = ArcFaceONNX(model_file=str(path), session=self.session)
        self.input_mean = float(reference.input_mean)
        self.input_std = float(reference.input_std)
        width, height = (int(v) for v in reference.input_size)
        self.input_size: tuple[int, int] = (width, height)
        self.input_name = reference.input_name
        self.output_names = reference.output_names
        shape = self.session.get_outputs()[0].shape
        self.embedding_size = int(shape[-1]) if isinstance(shape[-1], int) else self._probe_size()

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def _probe_size(self) -> int:
        return int(self.run([np.zeros((*self.input_size[::-1], 3), np.uint8)]).shape[-1])

    def run(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """(N, embedding_size) raw embeddings (not normalised) of N aligned BGR crops."""
        mean = self.input_mean
        blob = cv2.dnn.blobFromImages(
            list(crops_bgr), 1.0 / self.input_std, self.input_size, (mean, mean, mean), swapRB=True
        )
        return run_session(self.session, self.input_name, blob, self.output_names)[0]


def _recogniser_profile(path: Path, settings: EmbedderSettings) -> BatchProfile | None:
    """A profile for a recogniser whose batch axis is dynamic; None when the graph fixes it."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    dims = graph_input.type.tensor_type.shape.dim
    if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return None
    return BatchProfile(graph_input.name, tuple(d.dim_value for d in dims[1:]), settings.batching.max_batch_size)


@dataclass
class LoadedModels:
    pack_name: str
    files: PackFiles
    detector: Detector
    recognizer: Recognizer

    @property
    def provider(self) -> str:
        return self.recognizer.provider


def load_models(settings: EmbedderSettings) -> LoadedModels:
    """Finds (or downloads) the pack and opens both sessions; logs the provider actually in use."""
    pack_dir = ensure_pack(settings)
    files = discover(pack_dir)
    providers = provider_candidates(settings)
    try:
        detector = Detector(files.detector, settings, providers)
        recognizer = Recognizer(files.recognizer, settings, providers)
    except ModelPackError:
        raise
    except Exception as exc:
        raise ModelPackError(f"cannot load model pack {pack_dir}: {exc}") from exc
    wanted = settings.execution_provider
    if wanted != "auto" and recognizer.provider != wanted:
        # onnxruntime falls back to CPU when a GPU provider cannot start (no driver, no CUDA libs).
        log.warning("execution provider %s was asked for but %s is in use", wanted, recognizer.provider)
    log.info(
        "models loaded",
        extra={
            "pack": settings.model_pack,
            "detector": files.detector.name,
            "recognizer": files.recognizer.name,
            "provider": recognizer.provider,
            "requested_providers": [name for name, _ in providers],
            "detector_batch": detector.max_batch,
        },
    )
    return LoadedModels(settings.model_pack, files, detector, recognizer)
