"""Pure logic of the management calls and the CLI: KEY=VALUE parsing, EXIF times, list page tokens,
thumbnail crop boxes and the response budget."""

from __future__ import annotations

import argparse
import base64
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from PIL import ExifTags, Image

from facesearch import exif
from facesearch.commands.common import key_value
from facesearch.errors import InvalidArgument
from search_service import paging
from search_service.domain import Box, FaceQuality, Photo, StoredFace
from search_service.photos import ResponseBudget, fit_photo
from search_service.public_ids import PublicIds
from search_service.thumbnails import crop_box


def test_key_value() -> None:
    assert key_value("event=gala") == ("event", "gala")
    assert key_value("url=http://x/?a=b") == ("url", "http://x/?a=b")
    assert key_value("table:=7") == ("table", 7)
    assert key_value('tags:=[1, "a"]') == ("tags", [1, "a"])
    assert key_value("x=a:=b") == ("x", "a:=b")
    for bad in ("novalue", "=v", "n:=not json", ":=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            key_value(bad)


def jpeg_with(taken: str | None, offset: str | None = None) -> bytes:
    exif_data = Image.Exif()
    ifd = exif_data.get_ifd(ExifTags.IFD.Exif)
    if taken is not None:
        ifd[exif.DATE_TIME_ORIGINAL] = taken
    if offset is not None:
        ifd[exif.OFFSET_TIME_ORIGINAL] = offset
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG", exif=exif_data)
    return out.getvalue()


def test_exif_taken_time() -> None:
    assert exif.taken_time(jpeg_with("2024:05:01 21:30:00", "+02:00")) == datetime(
        2024, 5, 1, 21, 30, tzinfo=timezone(timedelta(hours=2))
    )
    assert exif.taken_time(jpeg_with("2024:05:01 21:30:00", "-03:30")) == datetime(2024, 5, 2, 1, 0, tzinfo=UTC)
    assert exif.taken_time(jpeg_with("2024:05:01 21:30:00")) == datetime(2024, 5, 1, 21, 30, tzinfo=UTC)
    assert exif.taken_time(jpeg_with("2024:05:01 21:30:00", "bogus")) == datetime(2024, 5, 1, 21, 30, tzinfo=UTC)
    assert exif.taken_time(jpeg_with("0000:00:00 00:00:00")) is None  # cameras without a clock write this
    assert exif.taken_time(jpeg_with(None)) is None
    assert exif.taken_time(b"not an image") is None


def test_page_tokens_are_sealed_and_bound_to_their_query() -> None:
    ids = PublicIds.ephemeral()
    bound = paging.bind(1, "newest", {"a": 1}, None)
    now = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    token = paging.encode({"t": paging.microseconds(now), "i": 5}, bound, ids)
    position = paging.decode(token, bound, {"t": int, "i": int}, ids)
    assert paging.from_microseconds(position["t"]) == now and position["i"] == 5
    # Sealed: the internal row id and the time are not readable in the token.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert str(paging.microseconds(now)).encode() not in raw and b'"i"' not in raw
    with pytest.raises(InvalidArgument, match="another query"):
        paging.decode(token, paging.bind(1, "newest", {"a": 2}, None), {"t": int, "i": int}, ids)
    with pytest.raises(InvalidArgument, match="not a token"):
        paging.decode(token, bound, {"e": str}, ids)
    with pytest.raises(InvalidArgument, match="not a token"):
        paging.decode(token, bound, {"t": int, "i": int}, PublicIds.ephemeral())  # another database's key
    forged = paging.encode({"t": True, "i": 5}, bound, ids)  # a bool is no int
    with pytest.raises(InvalidArgument, match="not a token"):
        paging.decode(forged, bound, {"t": int, "i": int}, ids)
    unsealed = base64.urlsafe_b64encode(json.dumps({"p": {"t": 0, "i": 5}, "q": bound}).encode()).decode()
    for junk in ("", "!!", "e30=", token[:-3], unsealed, "A" * 5000):
        with pytest.raises(InvalidArgument):
            paging.decode(junk, bound, {"t": int, "i": int}, ids)


def test_crop_box_adds_the_margin_and_stays_in_the_image() -> None:
    assert crop_box(Box(100, 100, 200, 150), 640, 480, 0.2) == (80, 80, 220, 170)
    assert crop_box(Box(-5, -5, 30, 30), 640, 480, 0.5) == (0, 0, 48, 48)
    assert crop_box(Box(630, 470, 650, 490), 640, 480, 0.0) == (630, 470, 640, 480)
    left, top, right, bottom = crop_box(Box(700, 500, 700, 500), 640, 480, 0.2)  # a degenerate box
    assert right > left and bottom > top


def photo(metadata_bytes: int, thumbnails: list[int]) -> Photo:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    faces = tuple(
        StoredFace(
            id=i, box=Box(0, 0, 1, 1), det_score=0.9, quality=FaceQuality(), has_thumbnail=True, thumbnail=b"j" * n
        )
        for i, n in enumerate(thumbnails)
    )
    return Photo("p", {"m": "x" * metadata_bytes}, now, now, now, faces)


def test_response_budget() -> None:
    budget = ResponseBudget(limit=10_000)
    first = fit_photo(photo(8_000, [1_000, 1_000]), budget, first=True)
    assert first is not None
    # The first photo is kept; a thumbnail that no longer fits is left out, still marked as stored.
    assert [len(f.thumbnail) for f in first.faces] == [1_000, 0]
    assert all(f.has_thumbnail for f in first.faces)
    assert fit_photo(photo(5_000, []), budget, first=False) is None
    huge = fit_photo(photo(50_000, [10]), ResponseBudget(limit=1_000), first=True)
    assert huge is not None and huge.faces[0].thumbnail == b""
