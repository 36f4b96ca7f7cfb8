"""Benchmark model pack: buffalo_l's layout and signatures at the real models' compute cost.

The recogniser is an IResNet-50 (w600k_r50's architecture, ~6.3 GMAC per 112x112 face) and the detector
a ResNet backbone + PAFPN neck + 3-stride heads costing about SCRFD-10G at 640x640, all with seeded random
weights. Their results are folded into the test pack's answers at 1e-30 scale, so every layer must run
(onnxruntime cannot drop it) yet faces, boxes and embeddings stay those of tests/model_pack.py: faces/s
measured with this pack means the real models' work on faces that are really found.

`python -m tests.bench.arch_models OUT_DIR` writes the pack to OUT_DIR/buffalo_l/ and prints the
estimated cost and one inference's time of each model next to the test pack's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from tests.model_pack import (
    DET_INPUT_NAME,
    DET_OUTPUT_NAMES,
    DETECTOR_FILE,
    PACK_NAME,
    REC_INPUT_NAME,
    REC_OUTPUT_NAME,
    REC_SIZE,
    RECOGNISER_FILE,
    GraphBuilder,
    detector_head_maps,
    detector_io,
    flatten_heads,
    make_model,
    recogniser_embedding,
    recogniser_io,
    write_model_pack,
)

FOLD_SCALE = 1e-30  # heavy results join the answers at this scale: computed, never visible
BENCH_SEED = 50
IRESNET50_LAYERS = (3, 4, 14, 3)
IRESNET_CHANNELS = (64, 128, 256, 512)
# SCRFD-10G-like: stem widths, then (channels, basic blocks) per backbone stage at strides 4/8/16/32.
DET_STEM = (28, 28, 56)
DET_STAGES = ((56, 1), (88, 4), (88, 2), (224, 3))
DET_NECK_CHANNELS = 56
DET_HEAD_CHANNELS = 80
DET_HEAD_CONVS = 3


@dataclass
class Net:
    """Emits conv-net layers into a GraphBuilder with seeded He-initialised weights, tracking each
    tensor's (channels, height, width) at a reference input size so it can count multiply-adds."""

    g: GraphBuilder
    rng: np.random.Generator
    macs: int = 0
    shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def conv(self, x: str, out_channels: int, kernel: int = 3, stride: int = 1, bias: bool = True) -> str:
        channels, height, width = self.shapes[x]
        fan_in = channels * kernel * kernel
        weight = self.rng.standard_normal((out_channels, channels, kernel, kernel), dtype=np.float32)
        inputs = [x, self.g.const(weight * np.float32(math.sqrt(2.0 / fan_in)), "w")]
        if bias:  # a BatchNorm folded into the conv, as onnxruntime does at load time anyway
            inputs.append(self.g.const(np.zeros(out_channels, np.float32), "b"))
        pad = kernel // 2
        y = self.g.op("Conv", inputs, "conv", kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
        out_h, out_w = (height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1
        self.shapes[y] = (out_channels, out_h, out_w)
        self.macs += out_channels * out_h * out_w * fan_in
        return y

    def batch_norm(self, x: str, gamma: float = 1.0) -> str:
        channels = self.shapes[x][0]
        params = [np.full(channels, gamma, np.float32), np.zeros(channels, np.float32)]
        params += [np.zeros(channels, np.float32), np.ones(channels, np.float32)]
        y = self.g.op("BatchNormalization", [x, *(self.g.const(p, "bn") for p in params)], "bn", epsilon=1e-5)
        self.shapes[y] = self.shapes[x]
        return y

    def relu(self, x: str) -> str:
        return self._same(x, self.g.op("Relu", [x], "relu"))

    def prelu(self, x: str) -> str:
        slope = self.g.const(np.full((self.shapes[x][0], 1, 1), 0.25, np.float32), "slope")
        return self._same(x, self.g.op("PRelu", [x, slope], "prelu"))

    def add(self, x: str, y: str) -> str:
        return self._same(x, self.g.op("Add", [x, y], "add"))

    def _same(self, x: str, y: str) -> str:
        self.shapes[y] = self.shapes[x]
        return y


# ----------------------------------------------------------------------------------------------
# Recogniser: IResNet-50 (insightface arcface_torch iresnet50, the architecture of w600k_r50)


def _iresnet_block(net: Net, x: str, planes: int, stride: int) -> str:
    """IBasicBlock: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) input."""
    out = net.conv(net.batch_norm(x), planes, 3, 1, bias=False)
    out = net.prelu(net.batch_norm(out))
    out = net.batch_norm(net.conv(out, planes, 3, stride, bias=False), gamma=0.5)
    shortcut = x
    if stride != 1 or net.shapes[x][0] != planes:
        shortcut = net.batch_norm(net.conv(x, planes, 1, stride, bias=False))
    return net.add(out, shortcut)


def iresnet50(net: Net, crops: str) -> str:
    """[N, 512] IResNet-50 features of [N, 3, 112, 112] crops."""
    x = net.prelu(net.batch_norm(net.conv(crops, IRESNET_CHANNELS[0], 3, 1, bias=False)))
    for planes, blocks in zip(IRESNET_CHANNELS, IRESNET50_LAYERS, strict=True):
        for index in range(blocks):
            x = _iresnet_block(net, x, planes, 2 if index == 0 else 1)
    x = net.batch_norm(x)  # then dropout(p=0): nothing at inference
    channels, height, width = net.shapes[x]
    flat = net.g.op("Flatten", [x], "flat", axis=1)
    features = channels * height * width
    weight = net.rng.standard_normal((features, 512), dtype=np.float32) * np.float32(math.sqrt(1.0 / features))
    fc = net.g.op("Gemm", [flat, net.g.const(weight, "fc"), net.g.const(np.zeros(512, np.float32), "fcb")], "fc")
    net.macs += features * 512
    bn_params = [
        np.ones(512, np.float32),
        np.zeros(512, np.float32),
        np.zeros(512, np.float32),
        np.ones(512, np.float32),
    ]
    return net.g.op("BatchNormalization", [fc, *(net.g.const(p, "bn1d") for p in bn_params)], "features")


def build_bench_recogniser() -> tuple[onnx.ModelProto, int]:
    """(model, multiply-adds per face): the test recogniser's embedding + 1e-30 x IResNet-50's."""
    g = GraphBuilder("bench_rec")
    net = Net(g, np.random.default_rng(BENCH_SEED))
    net.shapes[REC_INPUT_NAME] = (3, REC_SIZE, REC_SIZE)
    heavy = iresnet50(net, REC_INPUT_NAME)
    embedding = recogniser_embedding(g, REC_INPUT_NAME)
    folded = g.op("Add", [embedding, g.op("Mul", [heavy, g.const(FOLD_SCALE)], "fold")], "embedding")
    g.rename_output(folded, REC_OUTPUT_NAME)
    inputs, outputs = recogniser_io()
    return make_model(g, "bench_iresnet50", inputs, outputs), net.macs


# ----------------------------------------------------------------------------------------------
# Detector: SCRFD-10G-like backbone, neck and heads


def _basic_block(net: Net, x: str, channels: int, stride: int) -> str:
    out = net.conv(net.relu(net.conv(x, channels, 3, stride)), channels, 3, 1)
    shortcut = x
    if stride != 1 or net.shapes[x][0] != channels:
        shortcut = net.conv(x, channels, 1, stride)
    return net.relu(net.add(out, shortcut))


def scrfd_like(net: Net, image: str) -> list[tuple[str, str, str]]:
    """Per stride 8/16/32: heavy (scores [N,2,h,w], boxes [N,8,h,w], keypoints [N,20,h,w])."""
    x = image
    for index, width in enumerate(DET_STEM):
        x = net.relu(net.conv(x, width, 3, 2 if index == 0 else 1))
    channels, height, width = net.shapes[x]
    x = net.g.op("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    net.shapes[x] = (channels, (height - 1) // 2 + 1, (width - 1) // 2 + 1)
    features = []
    for index, (channels, blocks) in enumerate(DET_STAGES):
        for block in range(blocks):
            x = _basic_block(net, x, channels, 2 if block == 0 and index > 0 else 1)
        if index > 0:
            features.append(x)
    # PAFPN: lateral 1x1, top-down upsample-add, 3x3 smoothing, bottom-up stride-2 path.
    laterals = [net.conv(f, DET_NECK_CHANNELS, 1) for f in features]
    for level in (1, 0):
        up = net.g.op("Resize", [laterals[level + 1], "", net.g.const([1.0, 1.0, 2.0, 2.0])], "up", mode="nearest")
        net.shapes[up] = net.shapes[laterals[level]]
        laterals[level] = net.add(laterals[level], _crop_like(net, up, laterals[level]))
    outs = [net.conv(lateral, DET_NECK_CHANNELS, 3) for lateral in laterals]
    for level in (1, 2):
        down = net.conv(outs[level - 1], DET_NECK_CHANNELS, 3, 2)
        outs[level] = net.conv(net.add(outs[level], _crop_like(net, down, outs[level])), DET_NECK_CHANNELS, 3)
    heads = []
    for feature in outs:  # (the real heads share weights across strides; the cost is the same)
        y = feature
        for _ in range(DET_HEAD_CONVS):
            y = net.relu(net.conv(y, DET_HEAD_CHANNELS, 3))
        heads.append(tuple(net.conv(y, width, 3) for width in (2, 8, 20)))
    return heads


def _crop_like(net: Net, x: str, like: str) -> str:
    """x cut to like's spatial size (stride-2 paths round up, so x may be one row/column bigger)."""
    size = net.g.op(
        "Slice", [net.g.op("Shape", [like]), net.g.const([2], dtype=np.int64), net.g.const([4], dtype=np.int64)]
    )
    y = net.g.op("Slice", [x, net.g.const([0, 0], dtype=np.int64), size, net.g.const([2, 3], dtype=np.int64)], "crop")
    if like in net.shapes:
        net.shapes[y] = net.shapes[like]
    return y


def build_bench_detector(reference_size: tuple[int, int] = (640, 640)) -> tuple[onnx.ModelProto, int]:
    """(model, multiply-adds at reference_size (w, h)): the test detector + 1e-30 x the heavy heads."""
    g = GraphBuilder("bench_det")
    net = Net(g, np.random.default_rng(BENCH_SEED + 1))
    net.shapes[DET_INPUT_NAME] = (3, reference_size[1], reference_size[0])
    heavy = scrfd_like(net, DET_INPUT_NAME)
    light = detector_head_maps(g, DET_INPUT_NAME)
    folded = []
    for light_maps, heavy_maps in zip(light, heavy, strict=True):
        folded.append(
            tuple(
                g.op("Add", [lm, g.op("Mul", [_crop_like(net, hm, lm), g.const(FOLD_SCALE)], "fold")], "folded")
                for lm, hm in zip(light_maps, heavy_maps, strict=True)
            )
        )
    for tensor, name in zip(flatten_heads(g, folded), DET_OUTPUT_NAMES, strict=True):
        g.rename_output(tensor, name)
    inputs, outputs = detector_io()
    return make_model(g, "bench_scrfd_10g", inputs, outputs), net.macs


# ----------------------------------------------------------------------------------------------


def write_bench_pack(out_dir: Path | str, pack_name: str = PACK_NAME) -> Path:
    """Write out_dir/pack_name/{det_10g,w600k_r50}.onnx (seeded, same bytes every run); returns the
    models_dir (out_dir) to hand to the embedder like the test pack's."""
    return _write_bench_pack(Path(out_dir), pack_name)[0]


def _write_bench_pack(models_dir: Path, pack_name: str) -> tuple[Path, int, int]:
    """(models_dir, detector multiply-adds at 640x640, recogniser multiply-adds per face)."""
    pack_dir = models_dir / pack_name
    pack_dir.mkdir(parents=True, exist_ok=True)
    detector, det_macs = build_bench_detector()
    (pack_dir / DETECTOR_FILE).write_bytes(detector.SerializeToString())
    del detector
    recogniser, rec_macs = build_bench_recogniser()
    (pack_dir / RECOGNISER_FILE).write_bytes(recogniser.SerializeToString())
    return models_dir, det_macs, rec_macs


def _median_ms(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    session.run(None, feed)  # warm-up: allocations, kernel selection
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _check_with_insightface(bench_models: Path, test_models: Path, providers: list[str]) -> str:
    """Both packs through FaceAnalysis on one group photo: the bench pack must give the same faces."""
    from insightface.app import FaceAnalysis

    from tests import faces

    photo, specs = faces.group_photo(range(4), size=(1024, 768), seed=1)
    image = faces.decode(photo)
    results = []
    for models in (bench_models, test_models):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            app = FaceAnalysis(
                name=str(models / PACK_NAME), allowed_modules=["detection", "recognition"], providers=providers
            )
            app.prepare(ctx_id=-1 if providers == ["CPUExecutionProvider"] else 0, det_size=(640, 640))
            results.append(sorted(app.get(image), key=lambda f: float(f.bbox[0])))
    bench, test = results
    assert len(bench) == len(test) == len(specs), (len(bench), len(test), len(specs))
    box_diff = max(float(np.abs(b.bbox - t.bbox).max()) for b, t in zip(bench, test, strict=True))
    cosine = min(
        float(b.embedding @ t.embedding / np.linalg.norm(b.embedding) / np.linalg.norm(t.embedding))
        for b, t in zip(bench, test, strict=True)
    )
    assert box_diff < 0.01 and cosine > 0.9999, (box_diff, cosine)
    return (
        f"FaceAnalysis on both packs: {len(bench)}/{len(specs)} faces found, "
        f"max box difference {box_diff:.2g} px, min embedding cosine {cosine:.6f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the benchmark model pack and time it against the test pack.")
    parser.add_argument("out_dir", type=Path, help="models_dir to write <pack>/*.onnx into")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model (median reported)")
    parser.add_argument("--batch", type=int, default=8, help="recogniser batch size to time as well")
    parser.add_argument("--provider", default="CPUExecutionProvider", help="onnxruntime execution provider")
    args = parser.parse_args()
    providers = [args.provider] if args.provider == "CPUExecutionProvider" else [args.provider, "CPUExecutionProvider"]

    start = time.perf_counter()
    bench_models, det_macs, rec_macs = _write_bench_pack(args.out_dir, PACK_NAME)
    written = time.perf_counter() - start
    reference = Path(tempfile.mkdtemp(prefix="test-pack-")) / "models"
    test_pack = write_model_pack(reference)
    bench_dir = bench_models / PACK_NAME
    print(f"bench pack: {bench_dir} (written in {written:.1f} s)")
    for file in (DETECTOR_FILE, RECOGNISER_FILE):
        bench_mb = (bench_dir / file).stat().st_size / 1e6
        test_mb = (test_pack.pack_dir / file).stat().st_size / 1e6
        print(f"  {file}: {bench_mb:.1f} MB (test pack {test_mb:.2f} MB)")
    print("estimated cost (multiply-adds, which the SCRFD/ArcFace papers call FLOPs):")
    print(f"  detector   at 640x640: {det_macs / 1e9:.2f} GMAC (SCRFD-10G: ~10)")
    print(f"  recogniser per face:   {rec_macs / 1e9:.2f} GMAC (IResNet-50: ~6.3)")

    det_feed = {DET_INPUT_NAME: np.random.default_rng(0).uniform(-1, 1, (1, 3, 640, 640)).astype(np.float32)}
    rec_feeds = {
        n: {REC_INPUT_NAME: np.random.default_rng(n).uniform(-1, 1, (n, 3, REC_SIZE, REC_SIZE)).astype(np.float32)}
        for n in sorted({1, args.batch})
    }
    print(f"one inference on {providers[0]} (median of {args.runs}), bench pack vs test pack:")
    rows = [("detector 1x3x640x640", DETECTOR_FILE, det_feed)]
    rows += [(f"recogniser batch {n}", RECOGNISER_FILE, feed) for n, feed in rec_feeds.items()]
    sessions = {}
    for label, file, feed in rows:
        for which, directory in (("bench", bench_dir), ("test", test_pack.pack_dir)):
            if (which, file) not in sessions:
                sessions[which, file] = ort.InferenceSession(str(directory / file), providers=providers)
        bench_ms = _median_ms(sessions["bench", file], feed, args.runs)
        test_ms = _median_ms(sessions["test", file], feed, args.runs)
        print(f"  {label:<22} bench {bench_ms:9.2f} ms   test {test_ms:7.2f} ms   ratio {bench_ms / test_ms:8.1f}x")
    bench_out = sessions["bench", DETECTOR_FILE].run(None, det_feed)
    test_out = sessions["test", DETECTOR_FILE].run(None, det_feed)
    diff = max(float(np.abs(b - t).max()) for b, t in zip(bench_out, test_out, strict=True))
    finite = all(np.isfinite(b).all() for b in bench_out)
    print(f"detector outputs vs the test pack's on a noise input: max abs diff {diff:.2g}, all finite: {finite}")
    print(_check_with_insightface(bench_models, reference, providers))


if __name__ == "__main__":
    main()
