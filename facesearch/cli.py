"""The `facesearch` command for people at a terminal: `up` runs the stack locally, `index` and
`search` talk to a running search service, `keys` manages its API keys."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("up", "index", "search", "keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesearch", description=__doc__)
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
