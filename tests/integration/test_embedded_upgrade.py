"""The embedded database's upgrade: a data directory written by the previous release (the old
`pgserver` wheel: PostgreSQL 16 + pgvector 0.6) is upgraded in place to PostgreSQL 18 + pgvector 0.8
when the service starts on it, every photo still found; one it cannot upgrade is left untouched
with instructions."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service import embedded
from search_service.embedded import EmbeddedUpgradeError, start_embedded_postgres, upgraded_backup_dir
from tests.faces import selfie
from tests.fixtures.search import search_running
from tests.integration.test_search_service import EVENT, event_photo, index

pgserver = pytest.importorskip("pgserver", reason="the pgvector06 dependency group (old pgserver wheel)")


async def found(target: str, name: str) -> tuple[list[str], search_pb2.Collection]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        reply = await stub.Search(
            search_pb2.SearchRequest(collection=name, image=search_pb2.ImageQuery(image=selfie(1)), min_similarity=0.8)
        )
        collection = (await stub.GetCollection(search_pb2.GetCollectionRequest(name=name))).collection
    return sorted(m.photo_id for m in reply.matches), collection


async def test_a_postgresql_16_data_dir_is_upgraded_in_place(tmp_path: Path, embedder_server) -> None:
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir()  # pgserver 0.1.4 under root makes only an existing directory its user's
    # The previous release: its embedded server, written through the service.
    old = await asyncio.to_thread(pgserver.get_server, data_dir, cleanup_mode="stop")
    await asyncio.to_thread(old.psql, "CREATE EXTENSION IF NOT EXISTS vector;")
    async with search_running(old.get_uri(), embedder_server.target) as running:
        assert str(running.app.database.pgvector).startswith("0.6")
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            await stub.CreateCollection(search_pb2.CreateCollectionRequest(name="before"))
            await index(
                stub,
                [
                    search_pb2.IndexPhotosRequest(collection="before", external_id=p, image=event_photo(p))
                    for p in EVENT
                ],
            )
        before = await found(running.target, "before")
    await asyncio.to_thread(old.cleanup)
    assert (data_dir / "PG_VERSION").read_text().strip() == "16"

    # This release, without SEARCH_DATABASE_URL, on the same directory.
    async with search_running("", embedder_server.target, data_dir=data_dir) as running:
        assert running.app.database.pgvector.has_iterative_scan  # pgvector 0.8 now
        version = await running.app.database.pool.fetchval("SHOW server_version_num")
        assert int(version) >= 180000
        after = await found(running.target, "before")
    assert before[0] == after[0] == ["p0", "p2", "p4"]
    assert (before[1].photo_count, before[1].face_count) == (after[1].photo_count, after[1].face_count) == (5, 8)
    assert (data_dir / "PG_VERSION").read_text().strip() == "18"
    # The old directory is kept aside, whole, until the user deletes it.
    backup = upgraded_backup_dir(data_dir, 16)
    assert (backup / "PG_VERSION").read_text().strip() == "16"


def test_a_data_dir_it_cannot_upgrade_is_left_untouched(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("14\n")
    (data_dir / "precious").write_text("rows")
    with pytest.raises(EmbeddedUpgradeError) as err:
        start_embedded_postgres(data_dir)
    message = str(err.value)
    assert "PostgreSQL 14" in message and "pg_dump" in message and "was not changed" in message
    assert sorted(p.name for p in data_dir.iterdir()) == ["PG_VERSION", "precious"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pgdata"]


def test_an_upgrade_whose_program_crashed_is_tried_once_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL program killed by a signal (SIGBUS/SIGSEGV were seen here right after a fresh
    install) fails one attempt, not the start: the upgrade never touched the old directory, so it
    runs again. The first pg_checksums (or, without it, pg_upgrade) call is made to crash."""
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir()
    old = pgserver.get_server(data_dir, cleanup_mode="stop")
    old.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42);")
    old.cleanup()
    real = embedded.pgexec
    crashed: list[str] = []

    def crash_once(name: str, *args: object, **kwargs: object) -> str:
        if name in ("pg_checksums", "pg_upgrade") and not crashed:
            crashed.append(name)
            raise subprocess.CalledProcessError(-signal.SIGSEGV, (name,))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(embedded, "pgexec", crash_once)
    server, _ = start_embedded_postgres(data_dir)
    try:
        assert crashed
        assert "42" in server.psql("SELECT x FROM kept;")
        assert upgraded_backup_dir(data_dir, 16).is_dir()
    finally:
        server.cleanup()
