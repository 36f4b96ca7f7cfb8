"""`facesearch search COLLECTION SELFIE.jpg`: finds the photos of the selfie's person in a
collection and prints them best match first, as a table (with each photo's metadata) or JSON;
--page-token continues a search, --all follows every page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facesearch.commands import common
from facesearch.v1 import search_pb2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="find the photos a selfie's person appears in", description=__doc__)
    parser.add_argument("collection", help="collection name")
    parser.add_argument("selfie", type=Path, help="image with the face to look for (its best face is used)")
    parser.add_argument("--top-k", type=int, default=10, help="photos per page (default %(default)s)")
    parser.add_argument("--min-similarity", type=float, default=None, help="only matches at least this similar")
    parser.add_argument("--all-faces", action="store_true", help="search with every face of the image")
    parser.add_argument(
        "--filter",
        action="append",
        type=common.key_value,
        metavar="KEY=VALUE",
        help="only photos whose metadata has this value; repeatable; KEY:=JSON for non-strings",
    )
    common.add_paging_options(parser, "search")
    common.add_json_option(parser)
    common.add_connection_options(parser)
    parser.set_defaults(func=run)


def format_table(matches: list[search_pb2.PhotoMatch], first_rank: int = 1) -> str:
    header = ("#", "photo", "similarity", "box (x1,y1,x2,y2)", "face id", "taken", "metadata")
    rows = [
        (
            str(rank),
            m.photo_id,
            f"{m.similarity:.3f}",
            common.box_text(m.box),
            m.face_id,
            common.time_text(m.taken_time),
            common.struct_text(m.metadata),
        )
        for rank, m in enumerate(matches, first_rank)
    ]
    return common.format_table(header, rows)


def search_request(args: argparse.Namespace, image: bytes) -> search_pb2.SearchRequest:
    request = search_pb2.SearchRequest(
        collection=args.collection,
        image=search_pb2.ImageQuery(image=image, all_faces=args.all_faces),
        top_k=args.top_k,
    )
    if args.min_similarity is not None:
        request.min_similarity = args.min_similarity
    metadata = common.to_struct(args.filter)
    if metadata is not None:
        request.filter.metadata.CopyFrom(metadata)
    return request


async def search(session: common.Session, args: argparse.Namespace, image: bytes) -> int:
    request = search_request(args, image)

    async def fetch(token: str) -> search_pb2.SearchResponse:
        request.page_token = token
        return await session.stub.Search(request, **session.options)

    replies, token = await common.pages(fetch, args.page_token, args.all)
    matches = [m for reply in replies for m in reply.matches]
    first = replies[0]
    if args.json:
        combined = search_pb2.SearchResponse(
            matches=matches, next_page_token=token, query_faces=first.query_faces, no_face_reason=first.no_face_reason
        )
        common.print_json(combined)
        return common.EXIT_OK
    if first.no_face_reason:
        print(f"nothing searched: {first.no_face_reason}")
        return common.EXIT_OK
    if not matches:
        print("no matching photos")
        return common.EXIT_OK
    print(format_table(matches))
    if token:
        print(f"(more matches: --page-token {token})", file=sys.stderr)
    return common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    try:
        image = common.read_file(args.selfie)
    except common.CommandError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return common.run(args, lambda session: search(session, args, image))
