"""Generated stand-ins for InsightFace's buffalo_l pack (det_10g.onnx + w600k_r50.onnx) for tests.

`python -m tests.model_pack OUT_DIR` writes OUT_DIR/buffalo_l/{det_10g,w600k_r50}.onnx. The graphs
have buffalo_l's signatures and conventions but find and describe the synthetic faces that
tests/faces.py draws. Name OUT_DIR ".../models" and insightface finds the pack with
FaceAnalysis(name="buffalo_l", root=OUT_DIR.parent); FaceAnalysis(name=str(OUT_DIR / "buffalo_l")) works too.
The detector needs input sides of at least 32 px (insightface uses 128 and up).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PACK_NAME = "buffalo_l"
DETECTOR_FILE = "det_10g.onnx"
RECOGNISER_FILE = "w600k_r50.onnx"
OPSET = 17
IR_VERSION = 8

DET_INPUT_NAME = "input.1"
DET_STRIDES = (8, 16, 32)
DET_ANCHORS = 2
# buffalo_l's det_10g output names: scores for strides 8/16/32, then boxes, then keypoints.
DET_OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
REC_INPUT_NAME = "input.1"
REC_OUTPUT_NAME = "683"
EMBEDDING_DIM = 512
REC_SIZE = 112

# Where tests/faces.py puts the five landmarks, as fractions of the disc radius from its centre
# (x right, y down): left eye, right eye, nose, left and right mouth corner. Chosen so that a face
# aligned to ArcFace's 112x112 template becomes a disc of radius ~50 centred at (56, 64).
LANDMARK_FRACTIONS = np.array(
    [[-0.35, -0.25], [0.35, -0.25], [0.0, 0.15], [-0.29, 0.56], [0.29, 0.56]],
    dtype=np.float32,
)
# ArcFace's alignment template (insightface.utils.face_align.arcface_dst), for the recogniser's window.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ALIGNED_FACE_CENTRE = (56.0, 64.0)
ALIGNED_FACE_RADIUS = 50.0

# The detector's "skin" mask is the red channel ramped from SKIN_RED_LOW (0) to SKIN_RED_HIGH (1):
# faces.py keeps face pixels (marks included) above the high end and backgrounds below the low end.
SKIN_RED_LOW = 100.0
SKIN_RED_HIGH = 140.0

# Face radii each stride answers for, in strides, in bands: each band measures faces in a window just
# big enough for its largest face, so neighbouring faces need only ~1.5 radii of background between them.
# Ranges overlap so no radius falls between them; a face seen twice gives two near-identical boxes that
# NMS merges. With the 640 input this covers radius ~10 px to ~225 px.
RADIUS_BANDS = {
    8: [(1.2, 1.6), (1.5, 2.0), (1.9, 2.6)],
    16: [(1.25, 1.7), (1.6, 2.2), (2.1, 2.8)],
    32: [(1.35, 1.8), (1.7, 2.3), (2.2, 3.0), (2.9, 3.9), (3.7, 5.0), (4.8, 6.8)],
}
RADIUS_RAMP = 1.05  # band scores ramp from 0 at lo/1.05 to 1 at lo, and from hi back to 0 at 1.05*hi
SHAPE_RATIO_MAX = 1.03  # 2*pi*second moment/area^2: 1 for a disc, 1.047 for a square, ~2 for noise
RING_MASS_MAX = 0.03  # skin mass allowed around the window, as a fraction of the face's mass
SCORE_PEAK = 0.99  # score of a face of radius >= SCORE_FULL_RADIUS[1] px
SCORE_FLOOR = 0.90  # score of a face of radius <= SCORE_FULL_RADIUS[0] px
SCORE_FULL_RADIUS = (10.0, 60.0)


@dataclass(frozen=True)
class ModelPack:
    """Where a generated pack lives: models_dir/pack_name/*.onnx (insightface's layout)."""

    models_dir: Path
    pack_name: str = PACK_NAME

    @property
    def pack_dir(self) -> Path:
        return self.models_dir / self.pack_name

    @property
    def detector_path(self) -> Path:
        return self.pack_dir / DETECTOR_FILE

    @property
    def recogniser_path(self) -> Path:
        return self.pack_dir / RECOGNISER_FILE

    @property
    def insightface_root(self) -> Path:
        """The `root` for FaceAnalysis(name=pack_name, root=...); valid when models_dir is named "models"."""
        return self.models_dir.parent


class GraphBuilder:
    """Collects nodes and initialisers with unique names, so graph code reads like array code."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}_{hint}_{self._count}"

    def const(self, value: np.ndarray | float | list[int], hint: str = "const", dtype: type = np.float32) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: object) -> str:
        return self.ops(op_type, inputs, 1, hint, **attrs)[0]

    def ops(self, op_type: str, inputs: list[str], outputs: int, hint: str | None = None, **attrs: object) -> list[str]:
        names = [self._name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=names[0] + "_node", **attrs))
        return names

    def clip01(self, x: str) -> str:
        return self.op("Clip", [x, self.const(0.0), self.const(1.0)], "clip01")

    def affine(self, x: str, scale: float, shift: float) -> str:
        return self.op("Add", [self.op("Mul", [x, self.const(scale)]), self.const(shift)], "affine")

    def ramp(self, x: str, start: float, end: float) -> str:
        """0 at `start`, 1 at `end` (either order), linear and clipped in between."""
        return self.clip01(self.affine(x, 1.0 / (end - start), -start / (end - start)))

    def rename_output(self, tensor: str, name: str) -> None:
        self.nodes.append(helper.make_node("Identity", [tensor], [name], name=f"{self.prefix}_out_{name}"))


def make_model(
    builder: GraphBuilder, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
) -> onnx.ModelProto:
    """A checked opset-17 model of the builder's graph."""
    graph = helper.make_graph(builder.nodes, name, inputs, outputs, initializer=builder.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facesearch-tests", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model


# ----------------------------------------------------------------------------------------------
# Detector
#
# How it finds a face: a "skin" mask from the red channel is pooled into per-cell moments (mass, first
# and second moments) on a half-stride grid; for every anchor and radius band a conv sums them over a
# window around the anchor, giving the mass's area (-> radius = sqrt(area/pi)), centroid and spread.
# An anchor scores high when the mass is a disc (spread/area^2 as a disc's), nothing lies in a ring just
# outside the window, the radius is in the band, and the centroid is within half a stride of the anchor.
# Box = centroid +- radius; landmarks = centroid + radius * LANDMARK_FRACTIONS; all as SCRFD encodes them
# (distances from the anchor at (x*stride, y*stride), divided by the stride).


def _cell_moment_kernel(cell: int) -> np.ndarray:
    """Conv weights [4, 1, c, c] turning the mask into per-cell mass, mass*u, mass*v, mass*(u^2+v^2),
    with (u, v) a pixel's offset from its cell's top-left pixel."""
    v, u = np.mgrid[:cell, :cell].astype(np.float64)
    kernel = np.stack([np.ones_like(u), u, v, u * u + v * v])
    return kernel[:, None].astype(np.float32)


def _window_moment_kernel(cell: int, half: int) -> np.ndarray:
    """Conv weights [4, 4, 2m, 2m] summing per-cell moments over the 2m x 2m cells around an anchor
    (a corner shared by four cells) into mass, first moments and second moment about the anchor, px."""
    offsets = (np.arange(2 * half) - half).astype(np.float64) * cell  # each cell's corner from the anchor
    oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
    ones, zeros = np.ones_like(ox), np.zeros_like(ox)
    kernel = np.stack(
        [
            np.stack([ones, zeros, zeros, zeros]),  # mass
            np.stack([ox, ones, zeros, zeros]),  # sum m*x = sum(M0*ox + Mu)
            np.stack([oy, zeros, ones, zeros]),  # sum m*y
            np.stack([ox * ox + oy * oy, 2 * ox, 2 * oy, ones]),  # sum m*(x^2+y^2)
        ]
    )
    return kernel.astype(np.float32)


def window_half_cells(band_hi: float) -> int:
    """Half-size of a band's moment window in half-stride cells: it holds the band's largest face
    (its ramp included) seen from the nearest anchor, at most half a stride off the face's centre."""
    return math.ceil(2 * (RADIUS_RAMP * band_hi + 0.55))


def _band_estimate(g: GraphBuilder, cells: str, cell_mass: str, stride: int, band: tuple[float, float]):
    """(score, cx, cy, radius) per anchor, [N,1,h,w] each, for faces of one radius band (in strides).

    `cells` holds moments of half-stride cells; anchors sit on every other cell corner, so windows are
    even-sized convs with stride 2 whose end padding is two short, leaving exactly H//stride rows."""
    half = window_half_cells(band[1])
    lo, hi = band[0] * stride, band[1] * stride
    kernel = g.const(_window_moment_kernel(stride // 2, half), "wink")
    window = g.op("Conv", [cells, kernel], "window", strides=[2, 2], pads=[half, half, half - 2, half - 2])
    mass, sum_x, sum_y, sum_sq = g.ops("Split", [window, g.const([1, 1, 1, 1], dtype=np.int64)], 4, "moment", axis=1)
    ring_kernel = g.const(np.ones((1, 1, 2 * half + 2, 2 * half + 2), np.float32), "ringk")
    big_mass = g.op(
        "Conv", [cell_mass, ring_kernel], "bigmass", strides=[2, 2], pads=[half + 1, half + 1, half - 1, half - 1]
    )

    safe_mass = g.op("Max", [mass, g.const(1e-3)], "safemass")
    cx = g.op("Div", [sum_x, safe_mass], "cx")  # face centre relative to the anchor, px
    cy = g.op("Div", [sum_y, safe_mass], "cy")
    centre_sq = g.op("Add", [g.op("Mul", [cx, cx]), g.op("Mul", [cy, cy])])
    variance = g.op("Sub", [g.op("Div", [sum_sq, safe_mass]), centre_sq], "var")
    radius = g.op("Sqrt", [g.op("Mul", [safe_mass, g.const(1.0 / math.pi)])], "radius")
    # 2*pi*I/A^2 with I = variance*A: 1 for a uniform disc, larger for any other spread of mass.
    shape_ratio = g.op("Div", [g.op("Mul", [variance, g.const(2.0 * math.pi)]), safe_mass], "shape")
    # Skin in the one-cell ring around the window: the face does not fit, or another one is too close.
    ring_frac = g.op("Div", [g.op("Sub", [big_mass, mass]), safe_mass], "ring")
    offset_cells = g.op("Mul", [g.op("Max", [g.op("Abs", [cx]), g.op("Abs", [cy])]), g.const(1.0 / stride)], "offcells")

    centred = g.ramp(offset_cells, 1.0, 0.5)  # nearest anchor scores 1, one cell off scores 0
    disc_like = g.ramp(shape_ratio, SHAPE_RATIO_MAX + 0.03, SHAPE_RATIO_MAX)
    isolated = g.ramp(ring_frac, 2 * RING_MASS_MAX, RING_MASS_MAX)
    in_range = g.op("Mul", [g.ramp(radius, lo / RADIUS_RAMP, lo), g.ramp(radius, RADIUS_RAMP * hi, hi)], "inrange")
    score = g.op("Mul", [g.op("Mul", [centred, disc_like]), g.op("Mul", [isolated, in_range])], "bandscore")
    return score, cx, cy, radius


def _stride_head(g: GraphBuilder, mask: str, stride: int) -> tuple[str, str, str]:
    """Scores [N,2,h,w], box distances [N,8,h,w] and keypoint offsets [N,20,h,w] for one stride."""
    cell = stride // 2
    cells = g.op("Conv", [mask, g.const(_cell_moment_kernel(cell), "cellk")], "cells", strides=[cell, cell])
    cell_mass = g.op(
        "Slice", [cells, g.const([0], dtype=np.int64), g.const([1], dtype=np.int64), g.const([1], dtype=np.int64)]
    )
    bands = [_band_estimate(g, cells, cell_mass, stride, band) for band in RADIUS_BANDS[stride]]
    # Where bands overlap both windows hold the whole face and agree; elsewhere only one scores. So the
    # score-weighted mean of their estimates is the scoring band's estimate.
    weights = [g.op("Add", [band[0], g.const(1e-6)]) for band in bands]
    total = g.op("Sum", weights, "weightsum")
    best = g.op("Max", [band[0] for band in bands], "bandmax") if len(bands) > 1 else bands[0][0]
    cx, cy, radius = (
        g.op("Div", [g.op("Sum", [g.op("Mul", [w, band[k]]) for w, band in zip(weights, bands, strict=True)]), total])
        for k in (1, 2, 3)
    )
    # Bigger (better resolved) faces score a little higher, so when insightface runs several input sizes
    # and NMS merges them, the finer view's box wins, as with a real detector.
    peak = g.affine(g.ramp(radius, SCORE_FULL_RADIUS[0], SCORE_FULL_RADIUS[1]), SCORE_PEAK - SCORE_FLOOR, SCORE_FLOOR)
    score = g.op("Mul", [best, peak], "score")
    # Two anchors per location as in SCRFD: the first takes the lower half of the stride's radius range.
    lo, hi = RADIUS_BANDS[stride][0][0] * stride, RADIUS_BANDS[stride][-1][1] * stride
    upper = g.op("Cast", [g.op("GreaterOrEqual", [radius, g.const((lo + hi) / 2)])], to=TensorProto.FLOAT)
    score_upper = g.op("Mul", [score, upper])
    score_lower = g.op("Sub", [score, score_upper])
    scores = g.op("Concat", [score_lower, score_upper], "scores", axis=1)

    inv_stride = g.const(1.0 / stride)
    left = g.op("Sub", [radius, cx])
    top = g.op("Sub", [radius, cy])
    right = g.op("Add", [radius, cx])
    bottom = g.op("Add", [radius, cy])
    box = g.op("Mul", [g.op("Concat", [left, top, right, bottom], axis=1), inv_stride], "box")
    boxes = g.op("Concat", [box, box], "boxes", axis=1)

    centres = g.op("Concat", [cx, cy] * 5, axis=1)
    fractions = g.const(LANDMARK_FRACTIONS.reshape(1, 10, 1, 1), "kpsfrac")
    kps = g.op("Mul", [g.op("Add", [centres, g.op("Mul", [radius, fractions])]), inv_stride], "kps")
    keypoints = g.op("Concat", [kps, kps], "keypoints", axis=1)
    return scores, boxes, keypoints


def _flatten_head(g: GraphBuilder, head: str, width: int) -> str:
    """NCHW head -> NHWC -> [-1, width], as SCRFD's export does (rows: batch, y, x, anchor)."""
    nhwc = g.op("Transpose", [head], "nhwc", perm=[0, 2, 3, 1])
    return g.op("Reshape", [nhwc, g.const([-1, width], dtype=np.int64)], "flat")


def detector_head_maps(g: GraphBuilder, image: str) -> list[tuple[str, str, str]]:
    """Per stride (8, 16, 32): NCHW scores [N,2,h,w], box distances [N,8,h,w], keypoints [N,20,h,w]
    for a normalised RGB NCHW image tensor."""
    # insightface feeds (pixel - 127.5) / 128, RGB; the mask ramps on the red channel.
    red = g.op(
        "Slice", [image, g.const([0], dtype=np.int64), g.const([1], dtype=np.int64), g.const([1], dtype=np.int64)]
    )
    red_pixel_scale = 128.0 / (SKIN_RED_HIGH - SKIN_RED_LOW)
    red_pixel_shift = (127.5 - SKIN_RED_LOW) / (SKIN_RED_HIGH - SKIN_RED_LOW)
    mask = g.clip01(g.affine(red, red_pixel_scale, red_pixel_shift))
    return [_stride_head(g, mask, stride) for stride in DET_STRIDES]


def flatten_heads(g: GraphBuilder, heads: list[tuple[str, str, str]]) -> list[str]:
    """The nine SCRFD outputs in buffalo_l's order: scores, boxes, keypoints, each for strides 8/16/32."""
    scores = [_flatten_head(g, h[0], 1) for h in heads]
    boxes = [_flatten_head(g, h[1], 4) for h in heads]
    keypoints = [_flatten_head(g, h[2], 10) for h in heads]
    return scores + boxes + keypoints


def detector_io() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    inputs = [helper.make_tensor_value_info(DET_INPUT_NAME, TensorProto.FLOAT, [1, 3, "?", "?"])]
    widths = [1] * 3 + [4] * 3 + [10] * 3
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"anchors_{DET_STRIDES[i % 3]}", width])
        for i, (name, width) in enumerate(zip(DET_OUTPUT_NAMES, widths, strict=True))
    ]
    return inputs, outputs


def build_detector() -> onnx.ModelProto:
    g = GraphBuilder("det")
    heads = flatten_heads(g, detector_head_maps(g, DET_INPUT_NAME))
    for tensor, name in zip(heads, DET_OUTPUT_NAMES, strict=True):
        g.rename_output(tensor, name)
    inputs, outputs = detector_io()
    return make_model(g, "synthetic_scrfd", inputs, outputs)


# ----------------------------------------------------------------------------------------------
# Recogniser

REC_POOL = 8
REC_SEED = 600


def recogniser_window() -> np.ndarray:
    """[112, 112] weights: the aligned face disc (slightly shrunk) minus small holes at the five
    template landmarks, whose marks are the same for every identity and would only add shared signal."""
    yy, xx = np.mgrid[:REC_SIZE, :REC_SIZE].astype(np.float32) + 0.0
    cx, cy = ALIGNED_FACE_CENTRE
    dist = np.hypot(xx - cx, yy - cy)
    window = np.clip(ALIGNED_FACE_RADIUS - 4.0 - dist, 0.0, 1.0)
    for lx, ly in ARCFACE_TEMPLATE:
        window *= np.clip(np.hypot(xx - lx, yy - ly) - 7.0, 0.0, 1.0)
    return window.astype(np.float32)


def recogniser_projection() -> np.ndarray:
    cells = REC_SIZE // REC_POOL
    rng = np.random.default_rng(REC_SEED)
    features = 3 * cells * cells
    return (rng.standard_normal((features, EMBEDDING_DIM)) / math.sqrt(features)).astype(np.float32)


def recogniser_embedding(g: GraphBuilder, crops: str) -> str:
    """[N, 512] embeddings of normalised RGB [N, 3, 112, 112] crops."""
    window = recogniser_window()
    pooled_window = window.reshape(REC_SIZE // REC_POOL, REC_POOL, REC_SIZE // REC_POOL, REC_POOL).mean(axis=(1, 3))
    weighted = g.op("Mul", [crops, g.const(window[None, None], "window")], "weighted")
    pooled = g.op("AveragePool", [weighted], "pooled", kernel_shape=[REC_POOL, REC_POOL], strides=[REC_POOL, REC_POOL])
    # Mean colour over the window, per image and channel; subtracting it leaves the pattern.
    channel_sum = g.op("ReduceSum", [pooled, g.const([2, 3], dtype=np.int64)], "chansum", keepdims=1)
    mean = g.op("Mul", [channel_sum, g.const(1.0 / float(pooled_window.sum()))], "chanmean")
    centred = g.op("Sub", [pooled, g.op("Mul", [mean, g.const(pooled_window[None, None], "poolwin")])], "centred")
    flat = g.op("Flatten", [centred], "flat", axis=1)
    return g.op("MatMul", [flat, g.const(recogniser_projection(), "projection")], "embedding")


def recogniser_io() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    inputs = [helper.make_tensor_value_info(REC_INPUT_NAME, TensorProto.FLOAT, ["None", 3, REC_SIZE, REC_SIZE])]
    outputs = [helper.make_tensor_value_info(REC_OUTPUT_NAME, TensorProto.FLOAT, ["None", EMBEDDING_DIM])]
    return inputs, outputs


def build_recogniser() -> onnx.ModelProto:
    """Embedding = fixed random projection of the crop's coarse colour pattern inside the face window,
    minus its mean colour: crops alike -> embeddings alike. Row i depends only on crop i.

    No node is named Sub*/Mul*, so insightface's ArcFaceONNX picks mean 127.5 / std 127.5 for it, as it
    does for the real w600k_r50."""
    g = GraphBuilder("rec")
    embedding = recogniser_embedding(g, REC_INPUT_NAME)
    g.rename_output(embedding, REC_OUTPUT_NAME)
    inputs, outputs = recogniser_io()
    return make_model(g, "synthetic_arcface", inputs, outputs)


# ----------------------------------------------------------------------------------------------


def write_model_pack(models_dir: Path | str, pack_name: str = PACK_NAME) -> ModelPack:
    """Write models_dir/pack_name/{det_10g,w600k_r50}.onnx (same bytes every run) and describe them."""
    pack = ModelPack(Path(models_dir), pack_name)
    pack.pack_dir.mkdir(parents=True, exist_ok=True)
    pack.detector_path.write_bytes(build_detector().SerializeToString())
    pack.recogniser_path.write_bytes(build_recogniser().SerializeToString())
    return pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir", type=Path, help="directory to write <pack>/*.onnx into")
    parser.add_argument("--pack-name", default=PACK_NAME)
    args = parser.parse_args()
    pack = write_model_pack(args.models_dir, args.pack_name)
    for path in (pack.detector_path, pack.recogniser_path):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
