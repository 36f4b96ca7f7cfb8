"""What every command that calls the search service shares: the connection options (flags or
FACESEARCH_* variables), the channel and call metadata, the exit codes, and output as a table for
people or JSON for scripts. Connection and credential options belong here, nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from facesearch.commands import security
from facesearch.v1 import search_pb2_grpc

# Exit codes, documented in README.md ("Exit codes"); scripts branch on them.
EXIT_OK = 0
# The server refused or failed the call (a status not listed below), or some items of a batch failed.
EXIT_FAILED = 1
# Bad usage: wrong arguments, an unreadable file, or the server said INVALID_ARGUMENT.
EXIT_USAGE = 2
# The collection, photo, person or face does not exist (for this tenant).
EXIT_NOT_FOUND = 3
# The search service (or what it needs) cannot be reached, or did not answer in time.
EXIT_UNAVAILABLE = 4
# `compare`, `persons verify`: the faces are not the same person.
EXIT_NO_MATCH = 5

_EXIT_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
}

# Environment variables the connection options default to.
TARGET_ENV = "FACESEARCH_TARGET"
TENANT_ENV = "FACESEARCH_TENANT"
TENANT_METADATA_KEY = "x-tenant-id"
# Deadline of one call, seconds.
DEFAULT_TIMEOUT_S = 60.0


class CommandError(Exception):
    """A failure the command reports in one line and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def exit_code_for(code: grpc.StatusCode) -> int:
    return _EXIT_BY_STATUS.get(code, EXIT_FAILED)


def default_target() -> str:
    return os.environ.get(TARGET_ENV) or f"localhost:{os.environ.get('SEARCH_GRPC_PORT', '50052')}"


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """--target, --tenant, --timeout, the API key and the TLS options of every command that calls
    the search service."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=default_target(),
        help=f"search service address (default: ${TARGET_ENV}, else localhost:$SEARCH_GRPC_PORT; now %(default)s)",
    )
    group.add_argument(
        "--tenant",
        default=os.environ.get(TENANT_ENV, ""),
        help=f"tenant sent as {TENANT_METADATA_KEY} (default: ${TENANT_ENV}, else the server's default; "
        "SEARCH_AUTH__MODE=none only: an API key names its own)",
    )
    group.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of each call, seconds (default %(default)s)"
    )
    security.add_security_options(group)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def add_paging_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--page-token", default="", help=f"continue from the `next_page_token` of an earlier {what}")
    parser.add_argument("--all", action="store_true", help="follow page tokens to the end")


def call_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    tenant = ((TENANT_METADATA_KEY, args.tenant),) if args.tenant else ()
    return tenant + security.credential_metadata(args)


def open_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """The channel to `args.target`, TLS when any TLS option is given."""
    return security.open_channel(args)


@dataclass(frozen=True)
class Session:
    """A stub with what every call sends along."""

    stub: search_pb2_grpc.FaceSearchServiceStub
    metadata: tuple[tuple[str, str], ...]
    timeout: float

    @property
    def options(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "timeout": self.timeout}


def run(args: argparse.Namespace, body: Callable[[Session], Awaitable[int]]) -> int:
    """Runs `body` with a session on a fresh channel; a failed call becomes one line on stderr and
    its exit code."""

    async def main() -> int:
        async with open_channel(args) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            return await body(Session(stub, call_metadata(args), args.timeout))

    try:
        return asyncio.run(main())
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return exit_code_for(exc.code())
    except CommandError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def key_value(text: str) -> tuple[str, Any]:
    """argparse type of KEY=VALUE (a string) and KEY:=JSON (any JSON value)."""
    if ":=" in text and text.find("=") == text.find(":=") + 1:  # the first "=" belongs to ":="
        key, raw = text.split(":=", 1)
        try:
            value = json.loads(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: the value after := is not JSON") from None
    elif "=" in text:
        key, value = text.split("=", 1)
    else:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE or KEY:=JSON")
    if not key:
        raise argparse.ArgumentTypeError(f"{text!r} has no key")
    return key, value


def to_struct(pairs: Sequence[tuple[str, Any]] | None) -> struct_pb2.Struct | None:
    if not pairs:
        return None
    message = struct_pb2.Struct()
    message.update(dict(pairs))
    return message


def message_dict(message: Message) -> dict[str, Any]:
    """A response as JSON-ready data: proto field names, defaults included (scripts test `match`
    without guessing), bytes as base64."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_page(
    args: argparse.Namespace, page: Any, items: Sequence[Any], table: Callable[[Sequence[Any]], str], empty: str
) -> None:
    """A list command's output: the page (a List*Response) as JSON, or a table of `items` and where
    the next page starts."""
    if args.json:
        print_json(page)
        return
    print(table(items) if items else empty)
    if page.next_page_token:
        print(f"(more: --page-token {page.next_page_token})", file=sys.stderr)


def print_json(value: Message | dict[str, Any]) -> None:
    data = message_dict(value) if isinstance(value, Message) else value
    print(json.dumps(data, indent=2, ensure_ascii=False))


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _whole_numbers(value: Any) -> Any:
    """Struct numbers are doubles: 2024.0 reads better as 2024."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def struct_text(message: struct_pb2.Struct, limit: int = 60) -> str:
    """Metadata as one short line for a table."""
    if not message.fields:
        return ""
    text = compact_json(_whole_numbers(json_format.MessageToDict(message)))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def box_text(box: Any) -> str:
    return f"{box.x1:.0f},{box.y1:.0f},{box.x2:.0f},{box.y2:.0f}"


def time_text(message: Any) -> str:
    return message.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if message.seconds or message.nanos else ""


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


async def pages(fetch: Callable[[str], Awaitable[Any]], first_token: str, follow: bool) -> tuple[list[Any], str]:
    """The replies of one page (or, when `follow`, of every page from `first_token` on) and the
    token to continue with ("" after the last page)."""
    replies = []
    token = first_token
    while True:
        reply = await fetch(token)
        replies.append(reply)
        token = reply.next_page_token
        if not follow or not token:
            return replies, token
