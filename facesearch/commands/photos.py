"""`facesearch photos list|get|update|delete|delete-face|thumbnail COLLECTION ...`: what is indexed
in a collection, photo by photo with its faces; change a photo's metadata or taken time; remove a
photo, or one face of it, with its embeddings; save a face's thumbnail."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import field_mask_pb2

from facesearch.commands import common
from facesearch.v1 import search_pb2

ORDERS = {"newest": search_pb2.PHOTO_ORDER_NEWEST, "id": search_pb2.PHOTO_ORDER_EXTERNAL_ID}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("photos", help="list, show, update or delete indexed photos", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="a collection's photos with their faces")
    listing.add_argument("collection")
    listing.add_argument("--order", choices=sorted(ORDERS), default="newest", help="(default %(default)s)")
    listing.add_argument("--page-size", type=int, default=0, help="photos per page (default: the server's, 100)")
    listing.add_argument(
        "--filter", action="append", type=common.key_value, metavar="KEY=VALUE", help="only photos with this metadata"
    )
    common.add_paging_options(listing, "list")
    listing.set_defaults(func=run_list)

    get = actions.add_parser("get", help="one photo with its faces")
    get.add_argument("collection")
    get.add_argument("id", help="the photo's external id")
    get.set_defaults(func=run_get)

    update = actions.add_parser("update", help="change a photo's metadata and/or taken time")
    update.add_argument("collection")
    update.add_argument("id", help="the photo's external id")
    update.add_argument(
        "--metadata",
        action="append",
        type=common.key_value,
        metavar="KEY=VALUE",
        help="the new metadata (replaces the old); repeatable; KEY:=JSON for non-strings",
    )
    update.add_argument("--clear-metadata", action="store_true", help="remove all metadata")
    update.add_argument("--taken-time", type=iso_time, help="ISO 8601, e.g. 2024-05-01T10:30:00+02:00 (UTC if no zone)")
    update.set_defaults(func=run_update)

    delete = actions.add_parser("delete", help="delete a photo and its face embeddings")
    delete.add_argument("collection")
    delete.add_argument("id", help="the photo's external id")
    delete.set_defaults(func=run_delete)

    delete_face = actions.add_parser("delete-face", help="delete one face of a photo (e.g. a bystander's)")
    delete_face.add_argument("collection")
    delete_face.add_argument("face_id", help="the face's id (from `photos get` or `search`)")
    delete_face.set_defaults(func=run_delete_face)

    thumbnail = actions.add_parser("thumbnail", help="save a face's stored thumbnail (JPEG)")
    thumbnail.add_argument("collection")
    thumbnail.add_argument("face_id")
    thumbnail.add_argument("-o", "--output", type=Path, required=True, help="where to write the JPEG")
    thumbnail.set_defaults(func=run_thumbnail)

    for action in (listing, get, update, delete, delete_face, thumbnail):
        common.add_json_option(action)
        common.add_connection_options(action)


def iso_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def photos_table(photos: list[search_pb2.Photo]) -> str:
    header = ("photo", "taken", "faces", "metadata")
    rows = [
        (p.external_id, common.time_text(p.taken_time), str(len(p.faces)), common.struct_text(p.metadata))
        for p in photos
    ]
    return common.format_table(header, rows)


def faces_table(faces: list[search_pb2.PhotoFace]) -> str:
    header = ("face id", "box (x1,y1,x2,y2)", "det score", "quality", "thumbnail")
    rows = [
        (
            f.face_id,
            common.box_text(f.box),
            f"{f.det_score:.2f}",
            f"{f.quality.score:.2f}",
            "yes" if f.has_thumbnail else "",
        )
        for f in faces
    ]
    return common.format_table(header, rows)


def print_photo(photo: search_pb2.Photo) -> None:
    print(f"photo:    {photo.external_id}")
    print(f"taken:    {common.time_text(photo.taken_time)}")
    print(f"indexed:  {common.time_text(photo.create_time)}")
    print(f"metadata: {common.struct_text(photo.metadata, limit=1000)}")
    print(f"faces:    {len(photo.faces)}")
    if photo.faces:
        print(faces_table(list(photo.faces)))


def run_list(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.ListPhotosRequest(
            collection=args.collection, page_size=args.page_size, order=ORDERS[args.order]
        )
        metadata = common.to_struct(args.filter)
        if metadata is not None:
            request.filter.metadata.CopyFrom(metadata)

        async def fetch(token: str) -> search_pb2.ListPhotosResponse:
            request.page_token = token
            return await session.stub.ListPhotos(request, **session.options)

        replies, token = await common.pages(fetch, args.page_token, args.all)
        photos = [p for reply in replies for p in reply.photos]
        page = search_pb2.ListPhotosResponse(photos=photos, next_page_token=token)
        common.print_page(args, page, photos, photos_table, "no photos")
        return common.EXIT_OK

    return common.run(args, body)


def run_get(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.GetPhotoRequest(collection=args.collection, external_id=args.id)
        photo = (await session.stub.GetPhoto(request, **session.options)).photo
        if args.json:
            common.print_json(photo)
        else:
            print_photo(photo)
        return common.EXIT_OK

    return common.run(args, body)


def run_update(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.UpdatePhotoRequest(collection=args.collection, external_id=args.id)
        paths = []
        if args.metadata or args.clear_metadata:
            paths.append("metadata")
            metadata = common.to_struct(args.metadata)
            if metadata is not None:
                request.metadata.CopyFrom(metadata)
        if args.taken_time is not None:
            paths.append("taken_time")
            request.taken_time.FromDatetime(args.taken_time)
        if not paths:
            raise common.CommandError("nothing to update: give --metadata, --clear-metadata or --taken-time")
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        photo = (await session.stub.UpdatePhoto(request, **session.options)).photo
        if args.json:
            common.print_json(photo)
        else:
            print_photo(photo)
        return common.EXIT_OK

    return common.run(args, body)


def run_delete(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.DeletePhotoRequest(collection=args.collection, external_id=args.id)
        reply = await session.stub.DeletePhoto(request, **session.options)
        if args.json:
            common.print_json(reply)
        else:
            print(f"deleted photo {args.id} and {reply.faces_deleted} face embeddings")
        return common.EXIT_OK

    return common.run(args, body)


def run_delete_face(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.DeleteFaceRequest(collection=args.collection, face_id=args.face_id)
        reply = await session.stub.DeleteFace(request, **session.options)
        if args.json:
            common.print_json(reply)
        else:
            print(f"deleted face {args.face_id} of photo {reply.photo_id} ({reply.faces_remaining} faces left)")
        return common.EXIT_OK

    return common.run(args, body)


def run_thumbnail(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.GetFaceThumbnailRequest(collection=args.collection, face_id=args.face_id)
        reply = await session.stub.GetFaceThumbnail(request, **session.options)
        try:
            args.output.write_bytes(reply.thumbnail)
        except OSError as exc:
            raise common.CommandError(f"cannot write {args.output}: {exc.strerror}", common.EXIT_FAILED) from None
        if args.json:
            common.print_json({"photo_id": reply.photo_id, "path": str(args.output), "bytes": len(reply.thumbnail)})
        else:
            print(f"wrote {args.output} ({len(reply.thumbnail)} bytes, face of photo {reply.photo_id})")
        return common.EXIT_OK

    return common.run(args, body)
