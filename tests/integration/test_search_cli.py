"""`facesearch index` and `facesearch search` against the real search and embedder servers: their
run() is called as the CLI calls it, with stdout captured."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from facesearch.cli import build_parser
from tests.faces import FaceSpec, make_photo, noise_photo, selfie
from tests.fixtures.search import RunningSearch

_names = itertools.count()


async def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    # run() starts its own event loop (asyncio.run), as at a terminal; the servers stay on this one.
    return await asyncio.to_thread(args.func, args)


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "event"
    (root / "day1").mkdir(parents=True)
    (root / "day1" / "a.jpg").write_bytes(make_photo([FaceSpec(200, 200, 70, 11)], size=(640, 480)))
    (root / "day1" / "b.png").write_bytes(
        make_photo([FaceSpec(180, 220, 60, 12), FaceSpec(470, 240, 50, 11)], size=(640, 480), fmt="png")
    )
    (root / "c.JPG").write_bytes(make_photo([FaceSpec(320, 240, 80, 13), FaceSpec(560, 60, 10, 14)], size=(640, 480)))
    (root / "empty.png").write_bytes(noise_photo())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (root / "notes.txt").write_text("not an image")
    return root


async def test_index_then_search(
    search_server: RunningSearch, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{next(_names)}"
    target = ["--target", search_server.target, "--tenant", "cli-tenant"]
    code = await cli(["index", name, str(photo_dir), *target, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out  # one broken file
    assert f"created collection {name}" in out
    assert "photos: 4 (new 4, changed 0, unchanged 0, without a stored face 1)" in out
    assert "faces: 4" in out
    assert "rejected: 1" in out  # the 10-px face is below the size gate
    assert "errors: 1" in out and "broken.jpg: INVALID_ARGUMENT" in out

    code = await cli(["index", name, str(photo_dir), *target, "--no-progress"])
    assert "photos: 4 (new 0, changed 0, unchanged 4" in capsys.readouterr().out

    me = tmp_path / "me.jpg"
    me.write_bytes(selfie(11))
    code = await cli(["search", name, str(me), *target, "--min-similarity", "0.8"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["#", "photo", "similarity", "box", "(x1,y1,x2,y2)", "face", "id", "taken", "metadata"]
    rows = [line.split() for line in lines[2:]]
    assert sorted(row[1] for row in rows) == ["day1/a.jpg", "day1/b.png"]
    assert all(float(row[2]) > 0.8 for row in rows)
    # b.png's matching face is the one on the right (centre 470, 240, radius 50).
    b_row = next(row for row in rows if row[1] == "day1/b.png")
    assert [round(float(v)) for v in b_row[3].split(",")] == pytest.approx([420, 190, 520, 290], abs=4)

    # Another tenant does not see the collection.
    code = await cli(["search", name, str(me), "--target", search_server.target, "--tenant", "someone-else"])
    assert code == 3  # not found
    assert "NOT_FOUND" in capsys.readouterr().err


async def test_search_reports_no_face(search_server: RunningSearch, tmp_path: Path, capsys) -> None:
    name = f"cli-{next(_names)}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert await cli(["index", name, str(empty), "--target", search_server.target, "--no-progress"]) == 0
    assert "photos: 0" in capsys.readouterr().out
    noise = tmp_path / "noise.png"
    noise.write_bytes(noise_photo())
    assert await cli(["search", name, str(noise), "--target", search_server.target]) == 0
    assert "nothing searched: no face detected" in capsys.readouterr().out
    assert await cli(["index", name, str(tmp_path / "missing"), "--target", search_server.target]) == 2
