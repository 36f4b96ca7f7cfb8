"""Subcommands of the `facesearch` terminal command, one module each; every module exposes
`add_parser(subparsers)`, which registers the subcommand with `func=run`, `run(args) -> exit code`."""
