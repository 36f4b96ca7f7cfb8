"""`facesearch search COLLECTION SELFIE.jpg`: finds the photos of the selfie's person in a
collection and prints them as a table, best match first."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

from facesearch.commands.index import add_connection_options, call_metadata
from facesearch.commands.security import open_channel
from facesearch.v1 import search_pb2, search_pb2_grpc


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="find the photos a selfie's person appears in", description=__doc__)
    parser.add_argument("collection", help="collection name")
    parser.add_argument("selfie", type=Path, help="image with the face to look for (its best face is used)")
    add_connection_options(parser)
    parser.add_argument("--top-k", type=int, default=10, help="most photos to show (default %(default)s)")
    parser.add_argument("--min-similarity", type=float, default=None, help="only matches at least this similar")
    parser.add_argument("--all-faces", action="store_true", help="search with every face of the image")
    parser.set_defaults(func=run)


def format_table(matches: list[search_pb2.PhotoMatch]) -> str:
    header = ("#", "photo", "similarity", "box (x1,y1,x2,y2)", "face id")
    rows = [
        (
            str(rank),
            m.photo_id,
            f"{m.similarity:.3f}",
            f"{m.box.x1:.0f},{m.box.y1:.0f},{m.box.x2:.0f},{m.box.y2:.0f}",
            m.face_id,
        )
        for rank, m in enumerate(matches, 1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


async def search(args: argparse.Namespace, image: bytes) -> int:
    request = search_pb2.SearchRequest(
        collection=args.collection,
        image=search_pb2.ImageQuery(image=image, all_faces=args.all_faces),
        top_k=args.top_k,
    )
    if args.min_similarity is not None:
        request.min_similarity = args.min_similarity
    async with open_channel(args) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        try:
            reply = await stub.Search(request, metadata=call_metadata(args), timeout=60)
        except grpc.aio.AioRpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if reply.no_face_reason:
        print(f"nothing searched: {reply.no_face_reason}")
        return 0
    if not reply.matches:
        print("no matching photos")
        return 0
    print(format_table(list(reply.matches)))
    if reply.next_page_token:
        print(f"(more matches exist; showing the best {len(reply.matches)})")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        image = args.selfie.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.selfie}: {exc.strerror}", file=sys.stderr)
        return 2
    return asyncio.run(search(args, image))
