"""`facesearch persons enroll|identify|verify|list|get|update|delete COLLECTION ...`: a registry of
people: enrol from photos (the best face becomes the template), find who a face is (1:N), check a
face against one person (1:1; exit code 5 when it is not them), manage the enrolled."""

from __future__ import annotations

import argparse
from pathlib import Path

from google.protobuf import field_mask_pb2

from facesearch.commands import common
from facesearch.v1 import search_pb2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("persons", help="enrol, identify, verify and manage persons", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    enroll = actions.add_parser("enroll", help="enrol a person (or add photos to one)")
    enroll.add_argument("collection")
    enroll.add_argument("id", help="the person's external id")
    enroll.add_argument("images", type=Path, nargs="+", help="1-10 photos of the person")
    enroll.add_argument(
        "--metadata", action="append", type=common.key_value, metavar="KEY=VALUE", help="replaces the person's metadata"
    )
    enroll.set_defaults(func=run_enroll)

    identify = actions.add_parser("identify", help="who is the face in IMAGE (1:N)")
    identify.add_argument("collection")
    identify.add_argument("image", type=Path)
    identify.add_argument("--top-k", type=int, default=1, help="candidates to show (default %(default)s)")
    identify.add_argument("--threshold", type=float, default=None, help="minimum similarity (default: the server's)")
    identify.set_defaults(func=run_identify)

    verify = actions.add_parser("verify", help="is the face in IMAGE this person (1:1)")
    verify.add_argument("collection")
    verify.add_argument("id", help="the person's external id")
    verify.add_argument("image", type=Path)
    verify.add_argument("--threshold", type=float, default=None, help="minimum similarity (default: the server's)")
    verify.set_defaults(func=run_verify)

    listing = actions.add_parser("list", help="a collection's persons, by id")
    listing.add_argument("collection")
    listing.add_argument("--page-size", type=int, default=0, help="persons per page (default: the server's, 100)")
    common.add_paging_options(listing, "list")
    listing.set_defaults(func=run_list)

    get = actions.add_parser("get", help="one person with their template's quality and source")
    get.add_argument("collection")
    get.add_argument("id")
    get.set_defaults(func=run_get)

    update = actions.add_parser("update", help="replace a person's metadata")
    update.add_argument("collection")
    update.add_argument("id")
    update.add_argument("--metadata", action="append", type=common.key_value, metavar="KEY=VALUE", default=[])
    update.set_defaults(func=run_update)

    delete = actions.add_parser("delete", help="delete a person and their template")
    delete.add_argument("collection")
    delete.add_argument("id")
    delete.set_defaults(func=run_delete)

    for action in (enroll, identify, verify, listing, get, update, delete):
        common.add_json_option(action)
        common.add_connection_options(action)


def persons_table(persons: list[search_pb2.Person]) -> str:
    header = ("person", "template quality", "template box", "enrolled", "metadata")
    rows = [
        (
            p.external_id,
            f"{p.template_quality:.2f}",
            common.box_text(p.template_face.box) if p.HasField("template_face") else "",
            common.time_text(p.create_time),
            common.struct_text(p.metadata),
        )
        for p in persons
    ]
    return common.format_table(header, rows)


def run_enroll(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.EnrollPersonRequest(
            collection=args.collection, external_id=args.id, images=[common.read_file(p) for p in args.images]
        )
        metadata = common.to_struct(args.metadata)
        if metadata is not None:
            request.metadata.CopyFrom(metadata)
        reply = await session.stub.EnrollPerson(request, **session.options)
        if args.json:
            common.print_json(reply)
            return common.EXIT_OK
        verb = "enrolled" if reply.created else "updated"
        template = "new template" if reply.template_replaced else "template kept"
        print(f"{verb} {reply.person.external_id} ({template}, quality {reply.person.template_quality:.2f})")
        for path, result in zip(args.images, reply.images, strict=False):
            if result.status.code != 0:
                print(f"  {path}: {result.status.message}")
        return common.EXIT_OK

    return common.run(args, body)


def run_identify(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.IdentifyPersonRequest(
            collection=args.collection, face=search_pb2.FaceQuery(image=common.read_file(args.image)), top_k=args.top_k
        )
        if args.threshold is not None:
            request.threshold = args.threshold
        reply = await session.stub.IdentifyPerson(request, **session.options)
        if args.json:
            common.print_json(reply)
        elif reply.no_face_reason:
            print(f"nothing identified: {reply.no_face_reason}")
        elif not reply.candidates:
            print(f"nobody matched (threshold {reply.threshold:.2f})")
        else:
            rows = [(c.person.external_id, f"{c.similarity:.3f}") for c in reply.candidates]
            print(common.format_table(("person", "similarity"), rows))
        return common.EXIT_OK

    return common.run(args, body)


def run_verify(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.VerifyPersonRequest(
            collection=args.collection, person_id=args.id, face=search_pb2.FaceQuery(image=common.read_file(args.image))
        )
        if args.threshold is not None:
            request.threshold = args.threshold
        reply = await session.stub.VerifyPerson(request, **session.options)
        if args.json:
            common.print_json(reply)
        elif reply.no_face_reason:
            print(f"not verified: {reply.no_face_reason}")
        else:
            verdict = "match" if reply.match else "no match"
            print(f"{verdict}: similarity {reply.similarity:.3f}, threshold {reply.threshold:.2f}")
        return common.EXIT_OK if reply.match else common.EXIT_NO_MATCH

    return common.run(args, body)


def run_list(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        async def fetch(token: str) -> search_pb2.ListPersonsResponse:
            request = search_pb2.ListPersonsRequest(
                collection=args.collection, page_size=args.page_size, page_token=token
            )
            return await session.stub.ListPersons(request, **session.options)

        replies, token = await common.pages(fetch, args.page_token, args.all)
        persons = [p for reply in replies for p in reply.persons]
        page = search_pb2.ListPersonsResponse(persons=persons, next_page_token=token)
        common.print_page(args, page, persons, persons_table, "no persons")
        return common.EXIT_OK

    return common.run(args, body)


def run_get(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.GetPersonRequest(collection=args.collection, external_id=args.id)
        person = (await session.stub.GetPerson(request, **session.options)).person
        if args.json:
            common.print_json(person)
        else:
            print(persons_table([person]))
        return common.EXIT_OK

    return common.run(args, body)


def run_update(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.UpdatePersonRequest(
            collection=args.collection,
            external_id=args.id,
            update_mask=field_mask_pb2.FieldMask(paths=["metadata"]),
        )
        metadata = common.to_struct(args.metadata)
        if metadata is not None:
            request.metadata.CopyFrom(metadata)
        person = (await session.stub.UpdatePerson(request, **session.options)).person
        if args.json:
            common.print_json(person)
        else:
            print(persons_table([person]))
        return common.EXIT_OK

    return common.run(args, body)


def run_delete(args: argparse.Namespace) -> int:
    async def body(session: common.Session) -> int:
        request = search_pb2.DeletePersonRequest(collection=args.collection, external_id=args.id)
        reply = await session.stub.DeletePerson(request, **session.options)
        if args.json:
            common.print_json(reply)
        else:
            print(f"deleted person {args.id} and {reply.faces_deleted} face embeddings")
        return common.EXIT_OK

    return common.run(args, body)
