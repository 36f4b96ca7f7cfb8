"""Regenerates the load-test data files (deploy/loadtest/data/) that both ghz and
`python -m facesearch.loadgen` send: a group photo, a selfie, an embedding, and the request JSON
(proto3 JSON, bytes as base64) of each scenario.

    uv run python deploy/loadtest/make_data.py

The images are drawn by tests/faces.py, so the repository's generated test model pack finds their
faces; a real pack (buffalo_l) sees no faces in them, which still loads every stage but recognition.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
EMBEDDING_SIZE = 512
COLLECTION = "loadtest"
SELFIE_IDENTITY = 7


def _write_json(name: str, payload: object) -> None:
    (DATA / name).write_text(json.dumps(payload, indent=1) + "\n")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.faces import FaceSpec, make_photo, selfie

    DATA.mkdir(parents=True, exist_ok=True)
    # A group photo: four faces of different sizes, one of them the selfie's identity, so a search
    # by the selfie over photos indexed from it finds something. Faces are kept well apart: the test
    # pack's detector estimates a face's size from the bright mass around it and misses two faces
    # closer than about a radius to each other.
    photo = make_photo(
        [
            FaceSpec(160, 160, 60, SELFIE_IDENTITY),
            FaceSpec(470, 150, 50, 11),
            FaceSpec(480, 360, 40, 12),
            FaceSpec(180, 380, 45, 13),
        ],
        size=(640, 480),
        seed=3,
        quality=90,
    )
    face = selfie(SELFIE_IDENTITY, size=(480, 640), quality=90)
    (DATA / "photo.jpg").write_bytes(photo)
    (DATA / "selfie.jpg").write_bytes(face)

    rng = np.random.default_rng(20261123)
    vector = rng.standard_normal(EMBEDDING_SIZE)
    vector /= np.linalg.norm(vector)
    values = [round(float(v), 6) for v in vector]
    _write_json("embedding.json", values)

    photo_b64 = base64.b64encode(photo).decode("ascii")
    selfie_b64 = base64.b64encode(face).decode("ascii")
    _write_json("embed_request.json", {"input": {"encodedImage": photo_b64}})
    # ghz re-renders `{{newUUID}}` for every message with stream-dynamic-messages; the Python driver
    # does the same, so request ids stay unique within a stream.
    _write_json("embed_stream_request.json", {"requestId": "{{newUUID}}", "input": {"encodedImage": photo_b64}})
    _write_json(
        "search_embedding_request.json", {"collection": COLLECTION, "embedding": {"values": values}, "topK": 10}
    )
    _write_json("search_image_request.json", {"collection": COLLECTION, "image": {"image": selfie_b64}, "topK": 10})
    print(f"wrote {sorted(p.name for p in DATA.iterdir())} to {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
