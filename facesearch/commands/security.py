"""Credentials of the commands that call the search service: the API key (or JWT) sent as
`authorization: Bearer`, and TLS / mutual TLS for the channel."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import grpc

from facesearch.tls import ClientTlsSettings, aio_channel


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """--api-key and the TLS options; each defaults to a FACESEARCH_* variable."""
    env = os.environ.get
    parser.add_argument(
        "--api-key",
        default=env("FACESEARCH_API_KEY", ""),
        help="API key (or JWT) sent as `authorization: Bearer` (default: $FACESEARCH_API_KEY)",
    )
    parser.add_argument(
        "--tls", action="store_true", default=bool(env("FACESEARCH_TLS")), help="use TLS ($FACESEARCH_TLS)"
    )
    parser.add_argument(
        "--ca-file", type=Path, default=env("FACESEARCH_TLS_CA_FILE"), help="CA to trust ($FACESEARCH_TLS_CA_FILE)"
    )
    parser.add_argument(
        "--cert-file",
        type=Path,
        default=env("FACESEARCH_TLS_CERT_FILE"),
        help="client certificate for mutual TLS ($FACESEARCH_TLS_CERT_FILE)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=env("FACESEARCH_TLS_KEY_FILE"),
        help="its private key ($FACESEARCH_TLS_KEY_FILE)",
    )
    parser.add_argument(
        "--server-name", default=env("FACESEARCH_TLS_SERVER_NAME", ""), help="name to check the server certificate for"
    )


def credential_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()


def client_tls(args: argparse.Namespace) -> ClientTlsSettings:
    return ClientTlsSettings(
        enabled=args.tls,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        server_name=args.server_name,
    )


def open_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """The channel to `args.target`, TLS when any TLS option is given."""
    return aio_channel(args.target, client_tls(args))
