"""TLS for both services and their clients: server credentials that pick up certificates renewed
on disk (cert-manager) at the next handshake, mutual TLS when a client CA is set, and channel
credentials (CA, client certificate) for the search service's embedder channel and the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Self

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, Field, model_validator

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
    # How often the files are checked for a renewal, seconds.
    reload_interval_s: float = Field(default=10.0, gt=0)

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
        return _file_stamps(self._paths)

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


def _file_stamps(paths: list[Path]) -> tuple[Any, ...]:
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class _PerCall:
    """A multicallable that resolves the current channel at each call, so a stub made once keeps
    working across credential reloads."""

    def __init__(self, owner: ReloadingChannel, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._owner, self._kind, self._args, self._kwargs = owner, kind, args, kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        return getattr(channel, self._kind)(*self._args, **self._kwargs)(*args, **kwargs)


class ReloadingChannel:
    """A TLS channel that re-reads its CA and client certificate when the files change (checked at
    most every `reload_interval_s`): new calls go through a channel with the new credentials, calls
    in flight finish on the old one, which closes after `drain_s`. Renewed client certificates are
    used without a restart, as renewed server certificates are (see server_credentials)."""

    def __init__(self, target: str, tls: ClientTlsSettings, options: list[tuple[str, Any]], drain_s: float) -> None:
        self._target, self._tls, self._options, self._drain_s = target, tls, options, drain_s
        self._paths = [p for p in (tls.ca_file, tls.cert_file, tls.key_file) if p is not None]
        self._stamp = _file_stamps(self._paths)
        self._channel = self._open()
        self._checked = time.monotonic()
        self._closing: set[asyncio.Task[None]] = set()

    def _open(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self._target, channel_credentials(self._tls), options=self._options)

    def current(self) -> grpc.aio.Channel:
        now = time.monotonic()
        if now - self._checked >= self._tls.reload_interval_s:
            self._checked = now
            stamp = _file_stamps(self._paths)
            if stamp != self._stamp:
                self._reload(stamp)
        return self._channel

    def _reload(self, stamp: tuple[Any, ...]) -> None:
        try:
            tls = self._tls
            if tls.cert_file is not None and tls.key_file is not None:
                _check_pair(_read(tls.cert_file), _read(tls.key_file), tls.cert_file)
            fresh = self._open()
        except ValueError as exc:
            log.warning("TLS client files changed but cannot be loaded yet: %s", exc)
            return
        old, self._channel, self._stamp = self._channel, fresh, stamp
        task = asyncio.get_running_loop().create_task(old.close(grace=self._drain_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("TLS client credentials reloaded for %s", self._target)

    def unary_unary(self, *args: Any, **kwargs: Any) -> _PerCall:
        return _PerCall(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> _PerCall:
        return _PerCall(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> _PerCall:
        return _PerCall(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> _PerCall:
        return _PerCall(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def aio_channel(
    target: str,
    tls: ClientTlsSettings | None,
    options: list[tuple[str, Any]] | None = None,
    drain_s: float = 600.0,
) -> grpc.aio.Channel | ReloadingChannel:
    """A grpc.aio channel: TLS (and mTLS) as `tls` says, plaintext when it says nothing. With TLS
    files it is a ReloadingChannel (`drain_s`: how long calls in flight keep an old channel)."""
    options = list(options or [])
    if tls is None or not tls.active:
        return grpc.aio.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    if tls.ca_file is None and tls.cert_file is None:
        return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)
    return ReloadingChannel(target, tls, options, drain_s)


def sync_channel(target: str, tls: ClientTlsSettings | None) -> grpc.Channel:
    """The blocking twin of `aio_channel` (health checks of `facesearch up`)."""
    if tls is None or not tls.active:
        return grpc.insecure_channel(target)
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(target, channel_credentials(tls), options=options)
