"""`facesearch detect IMAGE`: the faces the service finds in an image, largest first, with box,
detection score, quality and the gates each fails. Nothing is stored."""

from __future__ import annotations

import argparse
from pathlib import Path

from facesearch.commands import common
from facesearch.v1 import face_pb2, search_pb2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detect", help="detect the faces of an image", description=__doc__)
    parser.add_argument("image", type=Path)
    parser.add_argument("--max-faces", type=int, default=0, help="at most this many faces (default: the server's cap)")
    common.add_json_option(parser)
    common.add_connection_options(parser)
    parser.set_defaults(func=run)


def failures_text(quality: face_pb2.Quality) -> str:
    if quality.passed:
        return "ok"
    names = (face_pb2.QualityFailure.Name(f).removeprefix("QUALITY_FAILURE_").lower() for f in quality.failures)
    return ", ".join(names) or "failed"


def run(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.DetectFacesRequest(
            image=common.read_file(args.image), options=face_pb2.EmbedOptions(max_faces=args.max_faces)
        )
        reply = await session.stub.DetectFaces(request, **session.options)
        if args.json:
            common.print_json(reply)
        elif not reply.faces:
            print("no face detected")
        else:
            header = ("#", "box (x1,y1,x2,y2)", "det score", "quality", "size", "gates")
            rows = [
                (
                    str(i),
                    common.box_text(f.box),
                    f"{f.det_score:.2f}",
                    f"{f.quality.score:.2f}",
                    f"{f.quality.face_size:.0f}",
                    failures_text(f.quality),
                )
                for i, f in enumerate(reply.faces, 1)
            ]
            print(common.format_table(header, rows))
        return common.EXIT_OK

    return common.run(args, body)
