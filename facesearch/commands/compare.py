"""`facesearch compare A.jpg B.jpg`: are the best faces of two images the same person? Prints the
similarity and the verdict at the threshold; exit code 0 for a match, 5 for none. Nothing is stored."""

from __future__ import annotations

import argparse
from pathlib import Path

from facesearch.commands import common
from facesearch.v1 import search_pb2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="compare the faces of two images (1:1)", description=__doc__)
    parser.add_argument("first", type=Path, help="first image")
    parser.add_argument("second", type=Path, help="second image")
    parser.add_argument("--threshold", type=float, default=None, help="minimum similarity (default: the server's)")
    common.add_json_option(parser)
    common.add_connection_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.CompareFacesRequest(
            first=search_pb2.FaceQuery(image=common.read_file(args.first)),
            second=search_pb2.FaceQuery(image=common.read_file(args.second)),
        )
        if args.threshold is not None:
            request.threshold = args.threshold
        reply = await session.stub.CompareFaces(request, **session.options)
        if args.json:
            common.print_json(reply)
        elif reply.no_face_reason:
            print(f"not compared: {reply.no_face_reason}")
        else:
            verdict = "same person" if reply.match else "different people"
            print(f"{verdict}: similarity {reply.similarity:.3f}, threshold {reply.threshold:.2f}")
        return common.EXIT_OK if reply.match else common.EXIT_NO_MATCH

    return common.run(args, body)
