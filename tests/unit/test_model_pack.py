"""The generated model pack: buffalo_l's signatures, insightface loads it, and it finds and tells apart
the faces tests/faces.py draws (boxes, landmarks, identities)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from insightface.app import FaceAnalysis
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD

from tests import faces
from tests.faces import FaceSpec
from tests.model_pack import DET_ANCHORS, DET_OUTPUT_NAMES, ModelPack, write_model_pack

CPU = ["CPUExecutionProvider"]
BOX_TOLERANCE_PX = 2.0  # at the detector's input scale
LANDMARK_TOLERANCE_PX = 3.0


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=CPU)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def app(model_pack: ModelPack) -> Iterator[FaceAnalysis]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FaceAnalysis(
            name=model_pack.pack_name,
            root=str(model_pack.insightface_root),
            allowed_modules=["detection", "recognition"],
            providers=CPU,
        )
    analysis.prepare(ctx_id=-1, det_size=(640, 640))
    yield analysis


def _detect(app: FaceAnalysis, photo: bytes) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's SimilarityTransform.estimate deprecation, inside insightface
        return app.get(faces.decode(photo))


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_pack_is_deterministic_small_and_in_insightface_layout(model_pack: ModelPack, tmp_path: Path) -> None:
    again = write_model_pack(tmp_path / "models")
    for first, second in (
        (model_pack.detector_path, again.detector_path),
        (model_pack.recogniser_path, again.recogniser_path),
    ):
        assert first.read_bytes() == second.read_bytes()
        assert first.stat().st_size < 5 * 1024 * 1024
    assert model_pack.detector_path == model_pack.models_dir / "buffalo_l" / "det_10g.onnx"
    assert model_pack.recogniser_path == model_pack.models_dir / "buffalo_l" / "w600k_r50.onnx"
    assert model_pack.insightface_root / "models" == model_pack.models_dir


def test_detector_signature_matches_scrfd_10g(model_pack: ModelPack) -> None:
    model = onnx.load(str(model_pack.detector_path))
    assert [i.name for i in model.graph.input] == ["input.1"]
    assert _dims(model.graph.input[0]) == [1, 3, "?", "?"]
    assert tuple(o.name for o in model.graph.output) == DET_OUTPUT_NAMES
    assert [len(_dims(o)) for o in model.graph.output] == [2] * 9  # no batch axis, like the real file

    session = _session(model_pack.detector_path)
    for height, width in ((640, 640), (480, 640), (128, 128)):
        outputs = session.run(None, {"input.1": np.zeros((1, 3, height, width), np.float32)})
        expected = []
        for columns in (1, 4, 10):
            for stride in (8, 16, 32):
                expected.append(((height // stride) * (width // stride) * DET_ANCHORS, columns))
        assert [o.shape for o in outputs] == expected


def test_detector_rows_stack_batch_major_when_batch_dim_is_rewritten(model_pack: ModelPack) -> None:
    model = onnx.load(str(model_pack.detector_path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    batched = ort.InferenceSession(model.SerializeToString(), providers=CPU)
    single = _session(model_pack.detector_path)
    images = [
        faces.render([FaceSpec(96, 128, 30, 1)], (320, 256), seed=1),
        faces.render([FaceSpec(200, 100, 60, 2), FaceSpec(60, 200, 15, 3)], (320, 256), seed=2),
    ]
    blobs = [((img[:, :, ::-1].astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None] for img in images]
    together = batched.run(None, {"input.1": np.concatenate(blobs)})
    apart = [single.run(None, {"input.1": blob}) for blob in blobs]
    for index, output in enumerate(together):
        np.testing.assert_allclose(output, np.concatenate([a[index] for a in apart]), rtol=1e-5, atol=1e-4)
    assert (apart[0][1] > 0.5).sum() == 1  # on an anchor: only that one scores (stride 16)


def test_recogniser_signature_and_batch_independence(model_pack: ModelPack) -> None:
    model = onnx.load(str(model_pack.recogniser_path))
    assert [i.name for i in model.graph.input] == ["input.1"]
    assert _dims(model.graph.input[0]) == ["None", 3, 112, 112]
    assert len(model.graph.output) == 1
    assert _dims(model.graph.output[0]) == ["None", 512]

    session = _session(model_pack.recogniser_path)
    crops = np.random.default_rng(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    together = session.run(None, {"input.1": crops})[0]
    assert together.shape == (3, 512)
    for row, crop in enumerate(crops):
        np.testing.assert_allclose(
            together[row], session.run(None, {"input.1": crop[None]})[0][0], rtol=1e-4, atol=1e-4
        )


def test_insightface_routes_the_files_to_scrfd_and_arcface(model_pack: ModelPack) -> None:
    detector = get_model(str(model_pack.detector_path), providers=CPU)
    assert isinstance(detector, SCRFD)
    assert (detector.fmc, detector._num_anchors, detector.use_kps) == (3, 2, True)
    assert (detector.input_mean, detector.input_std) == (127.5, 128.0)
    recogniser = get_model(str(model_pack.recogniser_path), providers=CPU)
    assert isinstance(recogniser, ArcFaceONNX)
    assert (recogniser.input_mean, recogniser.input_std) == (127.5, 127.5)  # as for the real w600k_r50
    assert recogniser.input_size == (112, 112)


def _assert_found(found: list, expected: list[FaceSpec], scale: float = 1.0) -> None:
    """Each expected face matched by exactly one detection within tolerance (given at detector scale)."""
    assert len(found) == len(expected), [f.bbox for f in found]
    for spec in expected:
        centre_err = [np.abs((f.bbox[:2] + f.bbox[2:]) / 2 - (spec.cx, spec.cy)).max() for f in found]
        face = found[int(np.argmin(centre_err))]
        assert np.abs(face.bbox - spec.box).max() * scale <= BOX_TOLERANCE_PX, (spec, face.bbox)
        assert np.abs(face.kps - spec.landmarks).max() * scale <= LANDMARK_TOLERANCE_PX, (spec, face.kps)
        assert 0.5 < face.det_score <= 1.0
        assert face.embedding is None or face.embedding.shape == (512,)


@pytest.mark.parametrize("radius", [12.0, 19.5, 33.3, 64.0, 120.7, 200.0])
def test_finds_one_face_per_size_with_box_and_landmarks(app: FaceAnalysis, radius: float) -> None:
    spec = FaceSpec(320.4, 300.7, radius, identity=int(radius))
    _assert_found(_detect(app, faces.make_photo([spec], size=(640, 640), fmt="png")), [spec])


def test_finds_several_faces_near_edges_in_a_downscaled_jpeg(app: FaceAnalysis) -> None:
    # 1000x750 is letterboxed into 640x480: the detector sees everything at scale 0.64.
    specs = [
        FaceSpec(30, 30, 25, 1),  # top-left corner
        FaceSpec(955, 300, 40, 2),  # right edge
        FaceSpec(500, 700, 45, 3),  # bottom edge
        FaceSpec(400, 250, 110, 4),
        FaceSpec(760, 560, 70, 5),
    ]
    photo = faces.make_photo(specs, size=(1000, 750), fmt="jpg", quality=75, seed=3)
    _assert_found(_detect(app, photo), specs, scale=0.64)


@pytest.mark.parametrize(
    "photo",
    [
        faces.blank_photo(),
        faces.blank_photo(bgr=(255, 255, 255)),
        faces.blank_photo(bgr=(140, 170, 215)),  # skin colour all over
        faces.noise_photo(seed=1),
        faces.noise_photo(seed=2, fmt="jpg"),
        faces.make_photo([], seed=4),
    ],
    ids=["dark", "white", "skin", "noise-png", "noise-jpg", "background"],
)
def test_nothing_found_without_faces(app: FaceAnalysis, photo: bytes) -> None:
    assert _detect(app, photo) == []


def test_default_det_sizes_still_give_one_box_per_face(model_pack: ModelPack) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FaceAnalysis(name=str(model_pack.pack_dir), allowed_modules=["detection"], providers=CPU)
    analysis.prepare(ctx_id=-1)  # insightface 2.1 default: 128x128 and 640x640, merged by NMS
    specs = [FaceSpec(150, 150, 90, 1), FaceSpec(480, 330, 30, 2)]
    _assert_found(_detect(analysis, faces.make_photo(specs, size=(640, 480))), specs)


def test_selfie_has_its_one_face(app: FaceAnalysis) -> None:
    _assert_found(_detect(app, faces.selfie(identity=7)), [faces.selfie_face(7)])


def test_same_identity_embeds_close_and_different_identities_far(app: FaceAnalysis) -> None:
    identities = range(12)
    references = {
        i: _unit(_detect(app, faces.make_photo([FaceSpec(320, 240, 80, i)]))[0].embedding) for i in identities
    }
    for a, b in combinations(identities, 2):
        assert references[a] @ references[b] < 0.5, (a, b)

    variations = [  # (centre x, centre y, radius, size, format, quality)
        (100, 90, 40, (640, 480), "jpg", 60),
        (900, 500, 150, (1280, 720), "jpg", 90),
        (50, 50, 22, (640, 480), "png", 100),
        (300, 320, 100, (600, 800), "webp", 80),
    ]
    rng = np.random.default_rng(11)
    for identity in identities:
        cx, cy, radius, size, fmt, quality = variations[identity % len(variations)]
        photo = faces.make_photo(
            [FaceSpec(cx, cy, radius, identity)], size=size, fmt=fmt, quality=quality, seed=int(rng.integers(99))
        )
        found = _detect(app, photo)
        assert len(found) == 1
        similarity = _unit(found[0].embedding) @ references[identity]
        assert similarity > 0.9, (identity, similarity)
        assert max(_unit(found[0].embedding) @ references[o] for o in identities if o != identity) < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_photo_faces_are_all_found(app: FaceAnalysis, seed: int) -> None:
    photo, specs = faces.group_photo(range(8), size=(1024, 768), radius_range=(16.0, 90.0), seed=seed)
    _assert_found(_detect(app, photo), specs, scale=640 / 1024)


def test_separated_identities_embed_far_apart_when_aligned(model_pack: ModelPack) -> None:
    # Faces drawn straight into ArcFace's 112x112 frame (what alignment produces), one batch.
    crops = []
    for identity in range(faces.SEPARATED_IDENTITIES):
        crop = faces.draw_face(faces.background((112, 112), identity), 56.0, 64.0, 50.0, identity)
        crops.append((crop[:, :, ::-1].astype(np.float32) - 127.5) / 127.5)
    batch = np.stack(crops).transpose(0, 3, 1, 2)
    embeddings = _session(model_pack.recogniser_path).run(None, {"input.1": batch})[0]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1.0)
    assert similarity.max() < 0.5
