"""Settings of the web gateway, read once from FACESEARCH_WEB_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from facesearch.tls import ClientTlsSettings


class WebSettings(BaseSettings):
    """Everything the gateway can be told; `FACESEARCH_WEB_` prefix."""

    model_config = SettingsConfigDict(env_prefix="FACESEARCH_WEB_", env_nested_delimiter="__", extra="ignore")

    port: int = Field(default=8080, ge=0, le=65535)
    host: str = "127.0.0.1"
    # The search service (gRPC); `dns:///facesearch-search:50052` in Kubernetes.
    search_target: str = "localhost:50052"
    # FACESEARCH_WEB_TLS__CA_FILE (+ __CERT_FILE/__KEY_FILE, or __ENABLED for the system's roots):
    # reach a search service that serves TLS (the cert-manager component); renewals picked up.
    tls: ClientTlsSettings = ClientTlsSettings()
    # Sent as `authorization: Bearer <key>` when the page sends none (a single-tenant install).
    api_key: str = ""
    # Sent as `x-tenant-id` when set (installs without API keys).
    tenant: str = ""
    # Where the gateway keeps the photos it shows: the search service stores no pixels.
    data_dir: Path = Path("~/.local/share/facesearch/web").expanduser()
    # Largest image accepted from the page, bytes (the search service's own limit may be lower).
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # Longer side of the thumbnails shown in grids, pixels.
    thumbnail_size: int = Field(default=480, ge=64, le=4096)
    # Deadline of one gRPC call, seconds (an upload batch is one call).
    timeout_s: float = Field(default=120.0, gt=0)
    log_level: str = "INFO"
