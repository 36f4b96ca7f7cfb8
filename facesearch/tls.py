"""TLS for both services and their clients: server credentials that pick up certificates renewed
on disk (cert-manager) at the next handshake, mutual TLS when a client CA is set, and channel
credentials (CA, client certificate) for the search service's embedder channel and the CLI."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Self

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, model_validator

log = logging.getLogger(__name__)


class ServerTlsSettings(BaseModel):
    """`<PREFIX>_TLS__CERT_FILE` / `__KEY_FILE` turn TLS on; `__CLIENT_CA_FILE` also requires and
    verifies a client certificate signed by that CA (mutual TLS)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS needs both cert_file and key_file")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file (mutual TLS) needs cert_file and key_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class ClientTlsSettings(BaseModel):
    """How a client reaches a TLS server: `enabled` with the system's roots, or `ca_file` to trust a
    private CA; `cert_file` + `key_file` present a client certificate (mutual TLS)."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Name the server's certificate is checked against, when it differs from the target's host.
    server_name: str = ""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        return self

    @property
    def active(self) -> bool:
        return self.enabled or self.ca_file is not None or self.cert_file is not None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc


def _check_pair(cert_pem: bytes, key_pem: bytes, cert_path: Path) -> None:
    """Refuses a key that does not belong to the certificate: during a non-atomic renewal the two
    files can briefly disagree, and serving such a pair fails every handshake."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ValueError(f"{cert_path} or its key is not a PEM certificate/key: {exc}") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(encoding, public):
        raise ValueError(f"the key file does not belong to {cert_path}")


class _ServerCertificates:
    """Hands gRPC a new certificate configuration whenever the files changed (new inode, size or
    mtime: kubelet swaps a Secret volume's files by renaming a symlink)."""

    def __init__(self, tls: ServerTlsSettings) -> None:
        assert tls.cert_file is not None and tls.key_file is not None
        self._paths = [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None]
        self._tls = tls
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.initial = self._load()

    def _stat(self) -> tuple[Any, ...]:
        stamps = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        tls = self._tls
        assert tls.cert_file is not None and tls.key_file is not None
        cert, key = _read(tls.cert_file), _read(tls.key_file)
        _check_pair(cert, key, tls.cert_file)
        client_ca = _read(tls.client_ca_file) if tls.client_ca_file is not None else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before every new connection's handshake; None keeps the current one."""
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            try:
                config = self._load()
            except ValueError as exc:
                # Half-renewed files: keep serving the previous certificate, try again next time.
                log.warning("TLS certificate files changed but cannot be loaded yet: %s", exc)
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded from %s", self._tls.cert_file)
            return config


def server_credentials(tls: ServerTlsSettings) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port`; a bad file stops start-up with a clear error."""
    certificates = _ServerCertificates(tls)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,
        require_client_authentication=tls.client_ca_file is not None,
    )


def channel_credentials(tls: ClientTlsSettings) -> grpc.ChannelCredentials:
    root = _read(tls.ca_file) if tls.ca_file is not None else None
    key = _read(tls.key_file) if tls.key_file is not None else None
    chain = _read(tls.cert_file) if tls.cert_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


def aio_channel(
    target: str, tls: ClientTlsSettings | None, options: list[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """A grpc.aio channel: TLS (and mTLS) as `tls` says, plaintext when it says nothing."""
    options = list(options or [])
    if tls is None or not tls.active:
        return grpc.aio.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


def sync_channel(target: str, tls: ClientTlsSettings | None) -> grpc.Channel:
    """The blocking twin of `aio_channel` (health checks of `facesearch up`)."""
    if tls is None or not tls.active:
        return grpc.insecure_channel(target)
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(target, channel_credentials(tls), options=options)
