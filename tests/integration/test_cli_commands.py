"""Every `facesearch` command against the real search and embedder servers and PostgreSQL, run as
at a terminal (parse the arguments, call run()): tables, --json, paging, metadata and EXIF at
indexing, tenancy from flags and FACESEARCH_* variables, and the documented exit codes."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from facesearch.cli import build_parser
from facesearch.commands import common
from tests.faces import FaceSpec, make_photo, noise_photo, selfie
from tests.fixtures.search import RunningSearch
from tests.integration.test_search_service import _closed_port

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


async def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    # run() starts its own event loop (asyncio.run), as at a terminal; the servers stay on this one.
    return await asyncio.to_thread(args.func, args)


async def cli_json(argv: list[str], capsys: pytest.CaptureFixture[str], expected_code: int = 0) -> dict:
    code = await cli([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == expected_code, captured.err
    return json.loads(captured.out)


def with_exif(jpeg: bytes, taken: str, offset: str | None = None) -> bytes:
    """The JPEG re-saved with EXIF DateTimeOriginal (and OffsetTimeOriginal)."""
    exif = Image.Exif()
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[0x9003] = taken
    if offset is not None:
        ifd[0x9011] = offset
    out = io.BytesIO()
    with Image.open(io.BytesIO(jpeg)) as image:
        image.save(out, format="JPEG", quality=95, exif=exif)
    return out.getvalue()


@pytest.fixture
def target(search_server: RunningSearch) -> list[str]:
    return ["--target", search_server.target]


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("facesearch 0.")
    for argv in (["photos"], ["photos", "list"], ["compare", "a.jpg"], ["index", "c", "d", "--metadata", "novalue"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == common.EXIT_USAGE
    assert "exit codes:" in build_parser().format_help()


async def test_collections_commands(target, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(unique("coll") for _ in range(3))
    tenant = ["--tenant", unique("cli-coll")]
    created = await cli_json(
        ["collections", "create", names[0], "--display-name", "Gala 2024", *target, *tenant], capsys
    )
    assert created["name"] == names[0] and created["display_name"] == "Gala 2024" and created["photo_count"] == "0"
    for name in names[1:]:
        assert await cli(["collections", "create", name, *target, *tenant]) == 0
        assert f"created collection {name}" in capsys.readouterr().out

    # One page at a time, or all of them.
    page = await cli_json(["collections", "list", "--page-size", "2", *target, *tenant], capsys)
    assert [c["name"] for c in page["collections"]] == names[:2] and page["next_page_token"]
    rest = await cli_json(
        ["collections", "list", "--page-size", "2", "--page-token", page["next_page_token"], *target, *tenant], capsys
    )
    assert [c["name"] for c in rest["collections"]] == names[2:] and not rest["next_page_token"]
    everything = await cli_json(["collections", "list", "--page-size", "1", "--all", *target, *tenant], capsys)
    assert [c["name"] for c in everything["collections"]] == names

    assert await cli(["collections", "list", *target, *tenant]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "display"] and [line.split()[0] for line in lines[2:]] == names
    assert await cli(["collections", "get", names[0], *target, *tenant]) == 0
    assert "Gala 2024" in capsys.readouterr().out

    # The tenant and target from FACESEARCH_* variables (read when the parser is built).
    monkeypatch.setenv("FACESEARCH_TENANT", tenant[1])
    monkeypatch.setenv("FACESEARCH_TARGET", target[1])
    got = await cli_json(["collections", "get", names[1]], capsys)
    assert got["name"] == names[1]
    monkeypatch.setenv("FACESEARCH_TENANT", "someone-else")
    assert await cli(["collections", "get", names[1]]) == common.EXIT_NOT_FOUND
    assert "NOT_FOUND" in capsys.readouterr().err
    monkeypatch.delenv("FACESEARCH_TENANT")
    monkeypatch.delenv("FACESEARCH_TARGET")

    assert await cli(["collections", "create", names[0], *target, *tenant]) == common.EXIT_FAILED
    assert "ALREADY_EXISTS" in capsys.readouterr().err
    assert await cli(["collections", "create", "bad name!", *target, *tenant]) == common.EXIT_USAGE
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    deleted = await cli_json(["collections", "delete", names[2], *target, *tenant], capsys)
    assert deleted == {"photos_deleted": "0", "faces_deleted": "0", "persons_deleted": "0"}
    assert await cli(["collections", "delete", names[2], *target, *tenant]) == common.EXIT_NOT_FOUND


async def test_unreachable_service_exits_unavailable(capsys) -> None:
    dead = ["--target", f"127.0.0.1:{_closed_port()}", "--timeout", "10"]
    for argv in (["collections", "list"], ["photos", "get", "c", "p"], ["search", "c", __file__]):
        assert await cli([*argv, *dead]) == common.EXIT_UNAVAILABLE, argv
        assert "UNAVAILABLE" in capsys.readouterr().err


@pytest.fixture
def event_dir(tmp_path: Path) -> Path:
    root = tmp_path / "gala"
    root.mkdir()
    (root / "a.jpg").write_bytes(
        with_exif(make_photo([FaceSpec(200, 200, 70, 21)], size=(640, 480)), "2024:05:01 21:30:00", "+02:00")
    )
    (root / "b.jpg").write_bytes(
        with_exif(
            make_photo([FaceSpec(180, 220, 60, 22), FaceSpec(470, 240, 50, 21)], size=(640, 480)),
            "2024:05:01 22:00:00",
        )
    )
    (root / "c.png").write_bytes(make_photo([FaceSpec(320, 240, 80, 23)], size=(640, 480), fmt="png"))
    return root


async def test_index_with_metadata_and_exif_then_photos_commands(target, event_dir, tmp_path, capsys) -> None:
    name = unique("gala")
    tenant = ["--tenant", unique("cli-photos")]
    summary = await cli_json(
        [
            "index", name, str(event_dir), "--metadata", "event=gala", "--metadata", "year:=2024",
            "--thumbnails", "--no-progress", *target, *tenant,
        ],
        capsys,
    )  # fmt: skip
    assert (summary["photos"], summary["created"], summary["faces"], summary["errors"]) == (3, 3, 4, [])

    a = await cli_json(["photos", "get", name, "a.jpg", *target, *tenant], capsys)
    assert a["metadata"] == {"event": "gala", "year": 2024}
    # EXIF DateTimeOriginal with its OffsetTimeOriginal; without an offset it is read as UTC.
    assert datetime.fromisoformat(a["taken_time"].replace("Z", "+00:00")) == datetime(2024, 5, 1, 19, 30, tzinfo=UTC)
    b = await cli_json(["photos", "get", name, "b.jpg", *target, *tenant], capsys)
    assert b["taken_time"] == "2024-05-01T22:00:00Z" and len(b["faces"]) == 2
    assert all(f["has_thumbnail"] for f in b["faces"])
    c = await cli_json(["photos", "get", name, "c.png", *target, *tenant], capsys)
    assert c["taken_time"] == c["create_time"]  # no EXIF: the index time

    # Newest first (c was indexed now, after 2024), a page at a time or all.
    listed = await cli_json(["photos", "list", name, "--page-size", "2", *target, *tenant], capsys)
    assert [p["external_id"] for p in listed["photos"]] == ["c.png", "b.jpg"] and listed["next_page_token"]
    rest = await cli_json(
        ["photos", "list", name, "--page-size", "2", "--page-token", listed["next_page_token"], *target, *tenant],
        capsys,
    )
    assert [p["external_id"] for p in rest["photos"]] == ["a.jpg"]
    by_id = await cli_json(
        ["photos", "list", name, "--order", "id", "--page-size", "1", "--all", *target, *tenant], capsys
    )
    assert [p["external_id"] for p in by_id["photos"]] == ["a.jpg", "b.jpg", "c.png"]
    assert await cli(["photos", "list", name, *target, *tenant]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["photo", "taken", "faces", "metadata"]
    assert table[2].split()[0] == "c.png" and '{"event":"gala","year":2024}' in table[2]

    # Update, thumbnail, delete one face, delete the photo.
    assert await cli(["photos", "update", name, "a.jpg", "--taken-time", "2023-12-31T23:00:00", *target, *tenant]) == 0
    assert "2023-12-31 23:00:00" in capsys.readouterr().out
    updated = await cli_json(["photos", "update", name, "a.jpg", "--metadata", "vip:=true", *target, *tenant], capsys)
    assert updated["metadata"] == {"vip": True} and updated["taken_time"] == "2023-12-31T23:00:00Z"
    assert await cli(["photos", "update", name, "a.jpg", *target, *tenant]) == common.EXIT_USAGE

    face_id = b["faces"][0]["face_id"]
    out = tmp_path / "face.jpg"
    assert await cli(["photos", "thumbnail", name, face_id, "-o", str(out), *target, *tenant]) == 0
    with Image.open(out) as thumbnail:
        assert thumbnail.format == "JPEG" and max(thumbnail.size) == 112
    capsys.readouterr()
    gone = await cli_json(["photos", "delete-face", name, face_id, *target, *tenant], capsys)
    assert gone == {"photo_id": "b.jpg", "faces_remaining": 1}
    assert await cli(["photos", "delete-face", name, face_id, *target, *tenant]) == common.EXIT_NOT_FOUND
    assert await cli(["photos", "delete-face", name, "nope", *target, *tenant]) == common.EXIT_USAGE
    assert await cli(["photos", "delete", name, "b.jpg", *target, *tenant]) == 0
    assert "deleted photo b.jpg and 1 face embeddings" in capsys.readouterr().out
    assert await cli(["photos", "get", name, "b.jpg", *target, *tenant]) == common.EXIT_NOT_FOUND
    # Another tenant sees nothing.
    assert await cli(["photos", "list", name, *target, "--tenant", "other"]) == common.EXIT_NOT_FOUND
    assert await cli(["photos", "get", name, "a.jpg", *target]) == common.EXIT_NOT_FOUND


async def test_search_json_paging_and_metadata(target, tmp_path, capsys) -> None:
    name = unique("crowd")
    tenant = ["--tenant", unique("cli-search")]
    photos = tmp_path / "crowd"
    photos.mkdir()
    for i in range(5):
        (photos / f"p{i}.jpg").write_bytes(make_photo([FaceSpec(160 + 60 * i, 240, 60, 31)], size=(640, 480), seed=i))
    code = await cli(["index", name, str(photos), "--metadata", "table:=7", "--no-progress", *target, *tenant])
    assert code == 0
    capsys.readouterr()
    me = tmp_path / "me.jpg"
    me.write_bytes(selfie(31))

    first = await cli_json(["search", name, str(me), "--top-k", "2", *target, *tenant], capsys)
    assert len(first["matches"]) == 2 and first["next_page_token"]
    assert first["matches"][0]["metadata"] == {"table": 7} and first["query_faces"]
    second = await cli_json(
        ["search", name, str(me), "--top-k", "2", "--page-token", first["next_page_token"], *target, *tenant], capsys
    )
    everything = await cli_json(["search", name, str(me), "--top-k", "2", "--all", *target, *tenant], capsys)
    ids = [m["photo_id"] for m in everything["matches"]]
    assert sorted(ids) == [f"p{i}.jpg" for i in range(5)] and not everything["next_page_token"]
    assert ids[:4] == [m["photo_id"] for m in first["matches"] + second["matches"]]
    none = await cli_json(["search", name, str(me), "--filter", "table:=8", *target, *tenant], capsys)
    assert none["matches"] == []

    assert await cli(["search", name, str(me), "--top-k", "2", *target, *tenant]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[-2:] == ["taken", "metadata"]
    assert '{"table":7}' in captured.out and "--page-token" in captured.err
    assert await cli(["search", name, str(me), "--page-token", "junk", *target, *tenant]) == common.EXIT_USAGE
    assert await cli(["search", name, str(tmp_path / "missing.jpg"), *target, *tenant]) == common.EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


async def test_persons_commands(target, tmp_path, capsys) -> None:
    name = unique("staff")
    tenant = ["--tenant", unique("cli-persons")]
    assert await cli(["collections", "create", name, *target, *tenant]) == 0
    capsys.readouterr()
    images = {}
    for identity in (41, 42, 43):
        images[identity] = tmp_path / f"{identity}.jpg"
        images[identity].write_bytes(selfie(identity))
    enrolled = await cli_json(
        ["persons", "enroll", name, "ann", str(images[41]), "--metadata", "team=red", *target, *tenant], capsys
    )
    assert enrolled["created"] and enrolled["person"]["metadata"] == {"team": "red"}
    assert await cli(["persons", "enroll", name, "bob", str(images[42]), *target, *tenant]) == 0
    assert "enrolled bob (new template" in capsys.readouterr().out

    listed = await cli_json(["persons", "list", name, "--page-size", "1", "--all", *target, *tenant], capsys)
    assert [p["external_id"] for p in listed["persons"]] == ["ann", "bob"]
    assert listed["persons"][0]["template_face"]["quality"]["score"] > 0
    assert await cli(["persons", "list", name, *target, *tenant]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[0] == "ann"
    got = await cli_json(["persons", "get", name, "bob", *target, *tenant], capsys)
    assert got["template_face"]["box"]["x1"] == pytest.approx(72, abs=6)
    updated = await cli_json(["persons", "update", name, "bob", "--metadata", "team=blue", *target, *tenant], capsys)
    assert updated["metadata"] == {"team": "blue"}

    who = await cli_json(["persons", "identify", name, str(images[42]), *target, *tenant], capsys)
    assert who["candidates"][0]["person"]["external_id"] == "bob"
    assert await cli(["persons", "identify", name, str(images[43]), *target, *tenant]) == 0
    assert "nobody matched" in capsys.readouterr().out
    assert await cli(["persons", "verify", name, "ann", str(images[41]), *target, *tenant]) == common.EXIT_OK
    assert capsys.readouterr().out.startswith("match: similarity")
    assert await cli(["persons", "verify", name, "ann", str(images[42]), *target, *tenant]) == common.EXIT_NO_MATCH
    assert capsys.readouterr().out.startswith("no match")
    assert await cli(["persons", "verify", name, "zed", str(images[42]), *target, *tenant]) == common.EXIT_NOT_FOUND
    assert await cli(["persons", "get", name, "ann", *target, "--tenant", "other"]) == common.EXIT_NOT_FOUND

    deleted = await cli_json(["persons", "delete", name, "ann", *target, *tenant], capsys)
    assert deleted == {"faces_deleted": "1"}
    assert await cli(["persons", "delete", name, "ann", *target, *tenant]) == common.EXIT_NOT_FOUND


async def test_compare_and_detect(target, tmp_path, capsys) -> None:
    one_a, one_b, two, group, noise, broken = (
        tmp_path / n for n in ("1a.jpg", "1b.jpg", "2.jpg", "g.jpg", "n.png", "x.jpg")
    )
    one_a.write_bytes(selfie(51))
    one_b.write_bytes(make_photo([FaceSpec(400, 260, 90, 51)], size=(800, 600), seed=5))
    two.write_bytes(selfie(52))
    group.write_bytes(make_photo([FaceSpec(180, 220, 60, 2), FaceSpec(470, 240, 50, 5)], size=(640, 480)))
    noise.write_bytes(noise_photo())
    broken.write_bytes(b"\xff\xd8\xff truncated")

    assert await cli(["compare", str(one_a), str(one_b), *target]) == common.EXIT_OK
    assert capsys.readouterr().out.startswith("same person: similarity")
    assert await cli(["compare", str(one_a), str(two), *target]) == common.EXIT_NO_MATCH
    assert capsys.readouterr().out.startswith("different people")
    result = await cli_json(["compare", str(one_a), str(two), "--threshold", "-1", *target], capsys)
    assert result["match"] is True and result["threshold"] == -1
    result = await cli_json(["compare", str(one_a), str(noise), *target], capsys, expected_code=common.EXIT_NO_MATCH)
    assert result["no_face_reason"] == "no face detected in image 1"
    assert await cli(["compare", str(one_a), str(broken), *target]) == common.EXIT_USAGE
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    assert await cli(["compare", str(one_a), str(tmp_path / "none.jpg"), *target]) == common.EXIT_USAGE

    assert await cli(["detect", str(group), *target]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:2] == ["#", "box"] and len(rows) == 4 and all(r.endswith("ok") for r in rows[2:])
    detected = await cli_json(["detect", str(group), "--max-faces", "1", *target], capsys)
    assert len(detected["faces"]) == 1 and len(detected["faces"][0]["landmarks"]) == 5
    assert await cli(["detect", str(noise), *target]) == 0
    assert "no face detected" in capsys.readouterr().out
    assert await cli(["detect", str(broken), *target]) == common.EXIT_USAGE
