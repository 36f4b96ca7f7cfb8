"""The `facesearch` command for people at a terminal and shell scripts: `up` runs the stack locally;
`keys` manages the search service's API keys; the other commands talk to a running search service
(tables by default, --json for scripts)."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

COMMANDS = ("up", "collections", "index", "search", "photos", "persons", "compare", "detect", "keys")
EPILOG = """exit codes: 0 done; 1 the call failed or some photos did not index; 2 bad usage or invalid
input; 3 not found; 4 service unavailable or too slow; 5 compare/verify found no match; 130 interrupted.
Connection: --target/--tenant/--api-key, or FACESEARCH_TARGET/FACESEARCH_TENANT/FACESEARCH_API_KEY;
TLS: --tls/--ca-file/--cert-file/--key-file, or FACESEARCH_TLS*."""


def version() -> str:
    try:
        return metadata.version("facesearch")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facesearch", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"facesearch {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"facesearch.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
