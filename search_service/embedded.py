"""A local PostgreSQL + pgvector for running without SEARCH_DATABASE_URL: pgserver's bundled
server with its data under `settings.data_dir`, the vector extension created."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pgserver

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> tuple[pgserver.PostgresServer, str]:
    """Starts (or reuses) the server whose data lives in `data_dir`; returns it and its URL.
    Blocking (initdb, pg_ctl): call it off the event loop."""
    data_dir = data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    url = server.get_uri()
    log.info("embedded PostgreSQL with pgvector, data in %s", data_dir)
    return server, url


async def start_embedded_postgres_async(data_dir: Path) -> tuple[pgserver.PostgresServer, str]:
    return await asyncio.to_thread(start_embedded_postgres, data_dir)
