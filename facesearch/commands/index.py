"""`facesearch index COLLECTION DIR`: streams every image under DIR through IndexPhotos (external id
= path relative to DIR), with a progress bar and a summary of photos, faces, rejected and errors."""

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

from facesearch.commands.security import add_security_options, credential_metadata, open_channel
from facesearch.v1 import search_pb2, search_pb2_grpc

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# Errors listed one by one after the summary; the rest are counted.
SHOWN_ERRORS = 20


def default_target() -> str:
    return f"localhost:{os.environ.get('SEARCH_GRPC_PORT', '50052')}"


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """--target and --tenant, shared by the commands that call the search service."""
    parser.add_argument(
        "--target",
        default=default_target(),
        help="search service address (default: localhost:$SEARCH_GRPC_PORT, i.e. %(default)s)",
    )
    parser.add_argument(
        "--tenant", default="", help="tenant sent as x-tenant-id (SEARCH_AUTH__MODE=none; an API key names its own)"
    )
    add_security_options(parser)


def call_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return ((("x-tenant-id", args.tenant),) if args.tenant else ()) + credential_metadata(args)


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
    async with open_channel(args) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        try:
            if await ensure_collection(stub, args.collection, metadata):
                print(f"created collection {args.collection}")

            async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
                for path in images:
                    data = await asyncio.to_thread(path.read_bytes)
                    yield search_pb2.IndexPhotosRequest(
                        collection=args.collection, external_id=path.relative_to(directory).as_posix(), image=data
                    )

            with tqdm(total=len(images), unit="photo", disable=args.no_progress, file=sys.stderr) as bar:
                async for response in stub.IndexPhotos(requests(), metadata=metadata):
                    summary.add(response)
                    bar.update(1)
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            summary.print()
            return 2
    summary.print()
    return 1 if summary.errors else 0


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2
    return asyncio.run(index_directory(args, directory, find_images(directory)))
