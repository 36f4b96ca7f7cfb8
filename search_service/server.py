"""Wires the search service: database (migrations, pool), embedder client, core layer, servicer,
the shared gRPC server (interceptor, health, reflection), metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from facesearch.errors import FaceSearchError
from facesearch.observability import start_metrics_server
from facesearch.serving import GrpcServer, ServerOptions, run_until_signalled
from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.analysis import FaceAnalysis
from search_service.api_keys import ApiKeyStore
from search_service.auth import build_authenticator, check_exposure
from search_service.auth_interceptor import AuthInterceptor
from search_service.catalog import Catalog
from search_service.config import SearchSettings
from search_service.db import Database, open_database
from search_service.descriptor_cache import DescriptorCache, limit_blas_threads
from search_service.embedded import EmbeddedPostgres, start_embedded_postgres_async
from search_service.embedder_client import EmbedderClient
from search_service.indexing import Indexer
from search_service.management_repository import ManagementRepository
from search_service.migrations import EMBEDDING_DIM
from search_service.persons import PersonRegistry
from search_service.photos import PhotoLibrary
from search_service.public_ids import load_public_ids
from search_service.repository import Repository
from search_service.search import SearchEngine
from search_service.servicer import FaceSearchServicer
from search_service.thumbnails import ThumbnailCutter

log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["FaceSearchService"].full_name
# How long start-up waits for the embedder's GetModelInfo before going on without it.
MODEL_INFO_TIMEOUT_S = 5.0


@dataclass
class SearchApp:
    """A running search service."""

    settings: SearchSettings
    server: GrpcServer
    database: Database
    embedder: EmbedderClient
    indexer: Indexer
    metrics_port: int
    thumbnails: ThumbnailCutter
    descriptor_cache: DescriptorCache
    embedded_postgres: EmbeddedPostgres | None = None

    @property
    def port(self) -> int:
        return self.server.port

    async def close(self) -> None:
        """Releases what the server used; call after the gRPC server stopped."""
        await self.indexer.close()
        self.thumbnails.close()
        await self.descriptor_cache.close()
        await self.embedder.close()
        await self.database.close()
        if self.embedded_postgres is not None:
            await asyncio.to_thread(self.embedded_postgres.cleanup)

    async def stop(self, grace_s: float | None = None) -> None:
        await self.server.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        await self.close()


async def embedding_dim(embedder: EmbedderClient) -> int:
    """The schema's width, checked against the embedder's model when it answers. An embedder that
    is down at start-up does not stop the service (search by embedding still works)."""
    try:
        info = await embedder.model_info(timeout_s=MODEL_INFO_TIMEOUT_S)
    except FaceSearchError as exc:
        log.warning("embedder model info unavailable at start-up: %s", exc.message)
        return EMBEDDING_DIM
    if info.embedding_size != EMBEDDING_DIM:
        raise RuntimeError(
            f"the embedder's pack {info.pack_name!r} makes {info.embedding_size}-d embeddings; this schema stores "
            f"vector({EMBEDDING_DIM}). Use a pack with {EMBEDDING_DIM}-d embeddings (e.g. buffalo_l)."
        )
    return info.embedding_size


async def start(settings: SearchSettings, *, metrics: bool = True) -> SearchApp:
    """Starts everything and reports SERVING once the database is migrated and the pool is open."""
    check_exposure(settings)
    embedded = None
    url = settings.database_url
    if not url:
        embedded, url = await start_embedded_postgres_async(settings.data_dir)
    database = await open_database(url, settings.database)
    log.info("database ready (pgvector %s)", database.pgvector)
    embedder = EmbedderClient(settings.embedder_target, settings.embedder, settings.max_message_bytes)
    try:
        authenticator = build_authenticator(settings.auth, settings.default_tenant, ApiKeyStore(database.pool))
        ids = await load_public_ids(database.pool)
        dim = await embedding_dim(embedder)
    except Exception:
        await embedder.close()
        await database.close()
        raise
    repository = Repository(database)
    management = ManagementRepository(database)
    thumbnails = ThumbnailCutter(settings.thumbnails)
    indexer = Indexer(repository, embedder, settings, dim, thumbnails)
    limit_blas_threads(settings.descriptor_cache.blas_threads)
    cache = DescriptorCache(repository, settings.descriptor_cache.max_bytes)
    indexer.start_orphan_sweep()
    server = GrpcServer("search", ServerOptions.from_settings(settings), [AuthInterceptor(authenticator)])
    servicer = FaceSearchServicer(
        Catalog(repository),
        indexer,
        SearchEngine(repository, embedder, settings, dim, cache, ids),
        PersonRegistry(repository, embedder, settings, dim, management, cache, ids),
        PhotoLibrary(repository, management, settings, ids),
        FaceAnalysis(embedder, settings, dim),
        server.draining,
        settings.max_response_bytes,
    )
    server.add_service(SERVICE_NAME, search_pb2_grpc.add_FaceSearchServiceServicer_to_server, servicer)
    port = await server.start()
    metrics_port = start_metrics_server(settings.metrics_port, settings.metrics_host) if metrics else 0
    await server.set_serving()
    log.info("search service serving on port %d (metrics on %d)", port, metrics_port)
    return SearchApp(settings, server, database, embedder, indexer, metrics_port, thumbnails, cache, embedded)


async def serve(settings: SearchSettings) -> None:
    """Runs until SIGTERM/SIGINT: health NOT_SERVING, in-flight calls finish, then resources close.
    A signal during start-up stops it too, so the process exits normally and an embedded
    PostgreSQL it started is stopped with it (a default SIGTERM would orphan that server)."""
    loop = asyncio.get_running_loop()
    early_stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, early_stop.set)
    starting = asyncio.create_task(start(settings))
    stopping = asyncio.create_task(early_stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("stopped during start-up")
        return
    app = starting.result()
    if early_stop.is_set():
        await app.stop()
        return
    # No await between the check above and run_until_signalled installing its own handlers.
    await run_until_signalled([app.server], settings.shutdown_grace_s, on_stopped=app.close)
