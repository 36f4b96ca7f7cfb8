"""`facesearch index COLLECTION DIR`: streams every image under DIR through IndexPhotos (external id
= path relative to DIR, taken time from EXIF DateTimeOriginal, --metadata on every photo), with a
progress bar and a summary of photos, faces, rejected and errors. A stream that is cut (connection
rotation, a search pod rolling) is opened again and what has no answer yet is sent again: indexing
is idempotent."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm

from facesearch import exif
from facesearch.commands import common
from facesearch.v1 import search_pb2, search_pb2_grpc

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# Errors listed one by one after the summary; the rest are counted.
SHOWN_ERRORS = 20
# Codes of a stream cut by the connection (max connection age, a search pod going away), not refused
# by the service: open another and go on.
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# Streams in a row that may end without one answer before the command gives up.
MAX_FRUITLESS_STREAMS = 4
RESUME_BACKOFF_S = 0.5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="index a directory of photos into a collection", description=__doc__)
    parser.add_argument("collection", help="collection name (created when missing)")
    parser.add_argument("directory", type=Path, help="directory searched recursively for .jpg/.png/.webp/.bmp")
    parser.add_argument(
        "--metadata",
        action="append",
        type=common.key_value,
        metavar="KEY=VALUE",
        help="metadata stored with every photo; repeatable; KEY:=JSON for a number, boolean, list or object",
    )
    parser.add_argument("--no-exif", action="store_true", help="do not read the capture time from EXIF")
    parser.add_argument(
        "--thumbnails",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store face thumbnails (default: the server's setting)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_json_option(parser)
    common.add_connection_options(parser)
    parser.set_defaults(func=run)


def find_images(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class Summary:
    photos: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    faces: int = 0
    rejected: int = 0
    no_face: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    # Photos sent again on a new stream because the one they were sent on was cut unanswered.
    resent: int = 0
    streams: int = 0

    def add(self, response: search_pb2.IndexPhotosResponse) -> None:
        if response.status.code != 0:
            code = next((c.name for c in grpc.StatusCode if c.value[0] == response.status.code), response.status.code)
            self.errors.append((response.external_id, f"{code}: {response.status.message}"))
            return
        self.photos += 1
        self.faces += response.faces_indexed
        self.rejected += len(response.rejected_faces)
        self.no_face += response.faces_indexed == 0 and response.outcome != search_pb2.INDEX_OUTCOME_UNCHANGED
        if response.outcome == search_pb2.INDEX_OUTCOME_CREATED:
            self.created += 1
        elif response.outcome == search_pb2.INDEX_OUTCOME_UPDATED:
            self.updated += 1
        elif response.outcome == search_pb2.INDEX_OUTCOME_UNCHANGED:
            self.unchanged += 1

    def as_dict(self) -> dict:
        return {
            "photos": self.photos,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "without_face": self.no_face,
            "faces": self.faces,
            "rejected": self.rejected,
            "resent": self.resent,
            "streams": self.streams,
            "errors": [{"external_id": e, "error": message} for e, message in self.errors],
        }

    def print(self) -> None:
        print(
            f"photos: {self.photos} (new {self.created}, changed {self.updated}, unchanged {self.unchanged}, "
            f"without a stored face {self.no_face})"
        )
        print(f"faces: {self.faces}")
        print(f"rejected: {self.rejected}")
        print(f"resent: {self.resent} (streams: {self.streams})")
        print(f"errors: {len(self.errors)}")
        for external_id, message in self.errors[:SHOWN_ERRORS]:
            print(f"  {external_id}: {message}")
        if len(self.errors) > SHOWN_ERRORS:
            print(f"  ... and {len(self.errors) - SHOWN_ERRORS} more")


async def ensure_collection(stub: search_pb2_grpc.FaceSearchServiceStub, name: str, options: dict) -> bool:
    """Creates the collection when missing; True when it was created."""
    try:
        await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), **options)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            return False
        raise
    return True


def index_request(args: argparse.Namespace, directory: Path, path: Path, data: bytes) -> search_pb2.IndexPhotosRequest:
    request = search_pb2.IndexPhotosRequest(
        collection=args.collection, external_id=path.relative_to(directory).as_posix(), image=data
    )
    metadata = common.to_struct(args.metadata)
    if metadata is not None:
        request.metadata.CopyFrom(metadata)
    taken = None if args.no_exif else exif.taken_time(data)
    if taken is not None:
        request.taken_time.FromDatetime(taken)
    if args.thumbnails is not None:
        request.store_thumbnails = args.thumbnails
    return request


async def index_directory(
    session: common.Session, args: argparse.Namespace, directory: Path, images: list[Path]
) -> int:
    summary = Summary()
    report = (lambda: common.print_json(summary.as_dict())) if args.json else summary.print
    # external id -> file, for every photo without an answer yet.
    unanswered = {path.relative_to(directory).as_posix(): path for path in images}
    try:
        if await ensure_collection(session.stub, args.collection, session.options):
            print(f"created collection {args.collection}", file=sys.stderr if args.json else sys.stdout)
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return common.exit_code_for(exc.code())
    fruitless = 0
    with tqdm(total=len(images), unit="photo", disable=args.no_progress, file=sys.stderr) as bar:
        while unanswered:
            sent: set[str] = set()

            async def requests(todo: list[str], sent: set[str] = sent) -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                for external_id in todo:
                    path = unanswered[external_id]
                    data = await asyncio.to_thread(path.read_bytes)
                    sent.add(external_id)
                    yield await asyncio.to_thread(index_request, args, directory, path, data)

            answered_before = len(unanswered)
            summary.streams += 1
            try:
                # A stream has no overall deadline: a large import takes as long as it takes.
                async for response in session.stub.IndexPhotos(requests(list(unanswered)), metadata=session.metadata):
                    if unanswered.pop(response.external_id, None) is not None:
                        summary.add(response)
                        bar.update(1)
                if not unanswered:
                    break
                cause = "the stream ended without answering every photo"
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RESUMABLE:
                    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                    report()
                    return common.exit_code_for(exc.code())
                cause = f"the stream was cut ({exc.code().name}: {exc.details()})"
            fruitless = 0 if len(unanswered) < answered_before else fruitless + 1
            if fruitless >= MAX_FRUITLESS_STREAMS:
                print(f"error: {cause}, {fruitless} times in a row without progress", file=sys.stderr)
                report()
                return common.EXIT_UNAVAILABLE
            again = sent & unanswered.keys()
            summary.resent += len(again)
            bar.write(f"{cause}; opening a new stream ({len(again)} photos sent again)", file=sys.stderr)
            await asyncio.sleep(RESUME_BACKOFF_S * 2 ** max(0, fruitless - 1))
    report()
    return common.EXIT_FAILED if summary.errors else common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return common.EXIT_USAGE
    images = find_images(directory)
    return common.run(args, lambda session: index_directory(session, args, directory, images))
