"""`facesearch index` against a search service that rotates connections every 2 s (as Kubernetes'
max connection age does, much shorter): the CLI's stream is cut mid-import, it opens another, sends
again what had no answer, and finishes with a correct summary and every photo stored once."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from facesearch.cli import build_parser
from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.faces import FaceSpec, make_photo
from tests.fixtures.search import search_database_url, search_running

PHOTOS = 300
_names = itertools.count()


async def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return await asyncio.to_thread(args.func, args)


async def test_index_survives_its_stream_being_cut(
    pg_server: Any, embedder_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "event"
    photos.mkdir()
    for i in range(PHOTOS):
        image = make_photo([FaceSpec(160 + (i % 5) * 20, 200, 50, 20 + i)], size=(480, 360), seed=i)
        (photos / f"p{i:03d}.jpg").write_bytes(image)
    url = search_database_url(pg_server, f"resume_{os.getpid()}_{next(_names)}")
    # A connection lives 2 s (+-10 %), and a call still open then gets 0.5 s more before it is cut.
    # One photo at a time, 300 photos: about 4 s even on a quiet machine (150 photos were sometimes
    # done before the first cut), so the import outlasts a connection's life.
    settings = {
        "max_connection_age_s": 2.0,
        "max_connection_age_grace_s": 0.5,
        "embedder": {"timeout_s": 10.0, "max_in_flight": 1},
    }
    async with search_running(url, embedder_server.target, **settings) as running:
        code = await cli(["index", "rotating", str(photos), "--target", running.target, "--no-progress"])
        captured = capsys.readouterr()
        out = captured.out
        counts = {key: int(value) for key, value in re.findall(r"^(\w+): (\d+)", out, re.MULTILINE)}
        streams = int(re.search(r"streams: (\d+)", out).group(1))
        assert code == 0, out + captured.err
        assert streams >= 2, f"the stream was never cut, so this test tested nothing:\n{out}"
        assert "opening a new stream" in captured.err
        assert (counts["photos"], counts["faces"], counts["errors"]) == (PHOTOS, PHOTOS, 0), out
        # A photo stored just before the cut but not answered is UNCHANGED when sent again.
        new, unchanged = map(int, re.search(r"new (\d+), changed 0, unchanged (\d+)", out).groups())
        assert new + unchanged == PHOTOS and unchanged <= counts["resent"], out
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            info = (await stub.GetCollection(search_pb2.GetCollectionRequest(name="rotating"))).collection
        assert (info.photo_count, info.face_count) == (PHOTOS, PHOTOS)
