"""`facesearch collections list|create|get|delete`: the tenant's collections, their counts, and
deleting one with every photo, person and embedding in it."""

from __future__ import annotations

import argparse

from facesearch.commands import common
from facesearch.v1 import search_pb2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collections", help="list, create, show or delete collections", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the tenant's collections, by name")
    listing.add_argument("--page-size", type=int, default=0, help="collections per page (default: the server's, 100)")
    common.add_paging_options(listing, "list")
    listing.set_defaults(func=run_list)

    create = actions.add_parser("create", help="create a collection")
    create.add_argument("name", help="1-128 characters of [A-Za-z0-9._-]")
    create.add_argument("--display-name", default="", help="free text shown to people")
    create.set_defaults(func=run_create)

    get = actions.add_parser("get", help="a collection with its counts")
    get.add_argument("name")
    get.set_defaults(func=run_get)

    delete = actions.add_parser("delete", help="delete a collection and everything in it")
    delete.add_argument("name")
    delete.set_defaults(func=run_delete)

    for action in (listing, create, get, delete):
        common.add_json_option(action)
        common.add_connection_options(action)


def table(collections: list[search_pb2.Collection]) -> str:
    header = ("name", "display name", "photos", "faces", "persons", "created")
    rows = [
        (
            c.name,
            c.display_name,
            str(c.photo_count),
            str(c.face_count),
            str(c.person_count),
            common.time_text(c.create_time),
        )
        for c in collections
    ]
    return common.format_table(header, rows)


def run_list(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        async def fetch(token: str) -> search_pb2.ListCollectionsResponse:
            request = search_pb2.ListCollectionsRequest(page_size=args.page_size, page_token=token)
            return await session.stub.ListCollections(request, **session.options)

        replies, token = await common.pages(fetch, args.page_token, args.all)
        collections = [c for reply in replies for c in reply.collections]
        page = search_pb2.ListCollectionsResponse(collections=collections, next_page_token=token)
        common.print_page(args, page, collections, table, "no collections")
        return common.EXIT_OK

    return common.run(args, body)


def run_create(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.CreateCollectionRequest(name=args.name, display_name=args.display_name)
        reply = await session.stub.CreateCollection(request, **session.options)
        if args.json:
            common.print_json(reply.collection)
        else:
            print(f"created collection {reply.collection.name}")
        return common.EXIT_OK

    return common.run(args, body)


def run_get(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        reply = await session.stub.GetCollection(search_pb2.GetCollectionRequest(name=args.name), **session.options)
        if args.json:
            common.print_json(reply.collection)
        else:
            print(table([reply.collection]))
        return common.EXIT_OK

    return common.run(args, body)


def run_delete(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        reply = await session.stub.DeleteCollection(
            search_pb2.DeleteCollectionRequest(name=args.name), **session.options
        )
        if args.json:
            common.print_json(reply)
        else:
            print(
                f"deleted collection {args.name}: {reply.photos_deleted} photos, {reply.faces_deleted} faces, "
                f"{reply.persons_deleted} persons"
            )
        return common.EXIT_OK

    return common.run(args, body)
