"""`facesearch index COLLECTION DIR`: streams every image under DIR through IndexPhotos (external id
= path relative to DIR), with a progress bar and a summary of photos, faces, rejected and errors.
A stream that is cut (connection rotation, a search pod rolling) is opened again and what has no
answer yet is sent again: indexing is idempotent."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm

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


def default_target() -> str:
    return f"localhost:{os.environ.get('SEARCH_GRPC_PORT', '50052')}"


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """--target and --tenant, shared by the commands that call the search service."""
    parser.add_argument(
        "--target",
        default=default_target(),
        help="search service address (default: localhost:$SEARCH_GRPC_PORT, i.e. %(default)s)",
    )
    parser.add_argument("--tenant", default="", help="tenant sent as x-tenant-id (default: the server's)")


def call_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", args.tenant),) if args.tenant else ()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="index a directory of photos into a collection", description=__doc__)
    parser.add_argument("collection", help="collection name (created when missing)")
    parser.add_argument("directory", type=Path, help="directory searched recursively for .jpg/.png/.webp/.bmp")
    add_connection_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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


async def ensure_collection(stub: search_pb2_grpc.FaceSearchServiceStub, name: str, metadata: tuple) -> bool:
    """Creates the collection when missing; True when it was created."""
    try:
        await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=name), metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            return False
        raise
    return True


async def index_directory(args: argparse.Namespace, directory: Path, images: list[Path]) -> int:
    metadata = call_metadata(args)
    summary = Summary()
    # external id -> file, for every photo without an answer yet.
    unanswered = {path.relative_to(directory).as_posix(): path for path in images}
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        try:
            if await ensure_collection(stub, args.collection, metadata):
                print(f"created collection {args.collection}")
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        fruitless = 0
        with tqdm(total=len(images), unit="photo", disable=args.no_progress, file=sys.stderr) as bar:
            while unanswered:
                sent: set[str] = set()

                async def requests(
                    todo: list[str], sent: set[str] = sent
                ) -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                    for external_id in todo:
                        data = await asyncio.to_thread(unanswered[external_id].read_bytes)
                        sent.add(external_id)
                        yield search_pb2.IndexPhotosRequest(
                            collection=args.collection, external_id=external_id, image=data
                        )

                answered_before = len(unanswered)
                summary.streams += 1
                try:
                    async for response in stub.IndexPhotos(requests(list(unanswered)), metadata=metadata):
                        if unanswered.pop(response.external_id, None) is not None:
                            summary.add(response)
                            bar.update(1)
                    if not unanswered:
                        break
                    cause = "the stream ended without answering every photo"
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RESUMABLE:
                        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                        summary.print()
                        return 2
                    cause = f"the stream was cut ({exc.code().name}: {exc.details()})"
                fruitless = 0 if len(unanswered) < answered_before else fruitless + 1
                if fruitless >= MAX_FRUITLESS_STREAMS:
                    print(f"error: {cause}, {fruitless} times in a row without progress", file=sys.stderr)
                    summary.print()
                    return 2
                again = sent & unanswered.keys()
                summary.resent += len(again)
                bar.write(f"{cause}; opening a new stream ({len(again)} photos sent again)", file=sys.stderr)
                await asyncio.sleep(RESUME_BACKOFF_S * 2 ** max(0, fruitless - 1))
    summary.print()
    return 1 if summary.errors else 0


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2
    return asyncio.run(index_directory(args, directory, find_images(directory)))
