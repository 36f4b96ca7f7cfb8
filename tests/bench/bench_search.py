"""Search-service benchmark against a fresh pgserver: ingest through the repository's bulk path,
search by embedding through the real gRPC service (a `python -m search_service` subprocess), and
the same jobs done the naive way (one INSERT per face with the vector as text, `ORDER BY embedding
<=> '[...]'` through psycopg 3), side by side, with ratios.

    uv run python -m tests.bench.bench_search [--background-faces N] [--large-faces N] ...

Synthetic identity-structured embeddings: identities x several faces each (cosine between faces
of one identity ~0.5-0.8, like ArcFace's), photos of 1-3 faces, plus distractor collections that
make the table large. Numbers are from a machine shared with other work: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pgserver
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.config import DatabaseSettings, SearchSettings
from search_service.db import open_database
from search_service.domain import Box, DetectedFace, FaceQuality, PhotoWrite, SearchFilter
from search_service.repository import Repository

DIM = 512
TENANT = "bench"


@dataclass
class Collection:
    """Synthetic photos of one collection: faces[i] belongs to photo photo_of[i]."""

    faces: np.ndarray
    photo_of: np.ndarray
    centres: np.ndarray
    identity_of: np.ndarray

    @property
    def photos(self) -> int:
        return int(self.photo_of.max()) + 1


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def identity_faces(rng: np.random.Generator, n_faces: int, faces_per_identity: int = 5) -> Collection:
    """Faces of n_faces // faces_per_identity identities (plus distractor singletons to fill up):
    face = normalise(centre + s * noise) with s in [0.5, 1.0], so two faces of one identity have
    cosine ~ 1 / (1 + s^2) ~ 0.5-0.8."""
    n_ids = max(1, n_faces // faces_per_identity)
    centres = unit_rows(rng, n_ids)
    identity_of = rng.integers(0, n_ids, n_faces)
    scale = rng.uniform(0.5, 1.0, (n_faces, 1)).astype(np.float32)
    faces = centres[identity_of] + scale * unit_rows(rng, n_faces)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    # Photos of 1-3 faces.
    sizes = rng.integers(1, 4, n_faces)
    photo_of = np.repeat(np.arange(n_faces), sizes)[:n_faces]
    return Collection(faces.astype(np.float32), photo_of, centres, identity_of)


def photo_writes(col: Collection, prefix: str) -> list[PhotoWrite]:
    quality = FaceQuality(score=0.9)
    by_photo: dict[int, list[DetectedFace]] = {}
    for i, vector in enumerate(col.faces):
        by_photo.setdefault(int(col.photo_of[i]), []).append(DetectedFace(Box(0, 0, 100, 100), 0.9, quality, vector))
    return [
        PhotoWrite(f"{prefix}{p}", hashlib.sha256(f"{prefix}{p}".encode()).digest(), {"p": p % 7}, None, faces)
        for p, faces in by_photo.items()
    ]


def queries_for(rng: np.random.Generator, col: Collection, n: int) -> np.ndarray:
    """Selfie-like queries: a fresh face of an identity present in the collection."""
    ids = rng.choice(np.unique(col.identity_of), n)
    q = col.centres[ids] + rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32) * unit_rows(rng, n)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top_photos(col: Collection, query: np.ndarray, k: int, prefix: str) -> list[str]:
    sims = col.faces @ query
    best = np.full(col.photos, -np.inf, dtype=np.float32)
    np.maximum.at(best, col.photo_of, sims)
    return [f"{prefix}{p}" for p in np.argsort(-best, kind="stable")[:k]]


def strong_photos(col: Collection, query: np.ndarray, k: int, prefix: str, threshold: float) -> list[str]:
    sims = col.faces @ query
    best = np.full(col.photos, -np.inf, dtype=np.float32)
    np.maximum.at(best, col.photo_of, sims)
    top = np.argsort(-best, kind="stable")[:k]
    return [f"{prefix}{p}" for p in top if best[p] >= threshold]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    qps: float

    def row(self) -> str:
        return f"p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  {self.qps:8.1f} QPS"


async def run_concurrent(call: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> Latency:
    latencies: list[float] = []
    next_index = iter(range(n))

    async def worker() -> None:
        for i in next_index:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return Latency(percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3, n / wall)


def run_threads(call: Callable[[int, psycopg.Connection], object], n: int, concurrency: int, url: str) -> Latency:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                started = time.perf_counter()
                call(i, conn)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return Latency(percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3, n / wall)


def vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(str(float(x)) for x in v) + "]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(url: str, port: int, log_path: Path, ef_search: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": url,
        "SEARCH_GRPC_PORT": str(port),
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": "0",
        # No embedder in this benchmark: searches are by embedding.
        "SEARCH_EMBEDDER_TARGET": f"127.0.0.1:{free_port()}",
        "SEARCH_DATABASE__POOL_MAX_SIZE": "16",
        "SEARCH_LOG_LEVEL": "WARNING",
        "SEARCH_THRESHOLDS__HNSW_EF_SEARCH": str(ef_search),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "search_service"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"search service exited:\n{log_path.read_text()[-3000:]}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return process
        except grpc.RpcError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("search service did not become SERVING in 120 s")


async def bench(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench_search_"))
    print(
        f"sizes: session collection {args.session_faces} faces; large (HNSW) collection {args.large_faces} faces; "
        f"{args.background_faces} faces in {args.background_collections} other collections; "
        f"naive ingest {args.naive_faces} faces; {args.queries} queries per measurement; "
        f"hnsw.ef_search {args.ef_search}"
    )
    print(f"cpus: {os.cpu_count()} (shared with other work), load average {os.getloadavg()[0]:.2f}; data in {workdir}")
    server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    server.psql("ALTER SYSTEM SET maintenance_work_mem = '1GB';")
    server.psql("SELECT pg_reload_conf();")
    url = server.get_uri()
    database = await open_database(url, DatabaseSettings(pool_min_size=1, pool_max_size=4))
    repo = Repository(database)
    print(f"PostgreSQL {server.psql('SHOW server_version;').splitlines()[2].strip()}, pgvector {database.pgvector}")
    process = None
    try:
        # ---- load: distractor collections, the large collection, then the session collection ----
        started = time.perf_counter()
        loaded = 0
        per = args.background_faces // max(1, args.background_collections)
        for c in range(args.background_collections):
            col = identity_faces(rng, per)
            created = await repo.create_collection(TENANT, f"other{c}", "")
            writes = photo_writes(col, f"o{c}-")
            for i in range(0, len(writes), args.batch_photos):
                await repo.store_photos(created.id, writes[i : i + args.batch_photos])
            loaded += per
        large = identity_faces(rng, args.large_faces)
        large_row = await repo.create_collection(TENANT, "large", "")
        writes = photo_writes(large, "l")
        for i in range(0, len(writes), args.batch_photos):
            await repo.store_photos(large_row.id, writes[i : i + args.batch_photos])
        loaded += args.large_faces
        background_s = time.perf_counter() - started
        print(f"background load: {loaded} faces in {background_s:.1f} s ({loaded / background_s:,.0f} faces/s)")

        session = identity_faces(rng, args.session_faces)
        session_row = await repo.create_collection(TENANT, "session", "")
        writes = photo_writes(session, "s")
        for i in range(0, len(writes), args.batch_photos):
            await repo.store_photos(session_row.id, writes[i : i + args.batch_photos])
        total = await database.pool.fetchval("SELECT count(*) FROM faces")
        size = await database.pool.fetchval("SELECT pg_size_pretty(pg_total_relation_size('faces'))")
        print(f"faces table: {total} rows, {size}")

        started = time.perf_counter()
        await repo.build_hnsw_index(large_row.id, 16, 64)
        print(f"HNSW index of the large collection built in {time.perf_counter() - started:.1f} s")
        await database.pool.execute("VACUUM ANALYZE faces")
        await database.pool.execute("VACUUM ANALYZE photos")

        # ---- naive reference: its own table, loaded the tutorial way for the ingest figure ----
        naive = psycopg.connect(url, autocommit=False)
        with naive.cursor() as cur:
            cur.execute(
                "CREATE TABLE naive_faces (id bigserial PRIMARY KEY, collection_id bigint, photo text, "
                f"embedding vector({DIM}))"
            )
            cur.execute("CREATE INDEX ON naive_faces (collection_id)")
        naive.commit()
        # Ingest, ours and naive alternating, a few rounds (the machine is shared: medians).
        ours_rates: list[float] = []
        naive_rates: list[float] = []
        for r in range(args.ingest_rounds):
            batch = identity_faces(rng, args.session_faces)
            target = await repo.create_collection(TENANT, f"ingest{r}", "")
            writes = photo_writes(batch, f"i{r}-")
            started = time.perf_counter()
            for i in range(0, len(writes), args.batch_photos):
                await repo.store_photos(target.id, writes[i : i + args.batch_photos])
            ours_rates.append(args.session_faces / (time.perf_counter() - started))
            sample = batch.faces[: args.naive_faces]
            started = time.perf_counter()
            with naive.cursor() as cur:
                for i, v in enumerate(sample):
                    cur.execute(
                        "INSERT INTO naive_faces (collection_id, photo, embedding) VALUES (%s, %s, %s)",
                        (999, f"i{r}-{batch.photo_of[i]}", vector_text(v)),
                    )
            naive.commit()
            naive_rates.append(len(sample) / (time.perf_counter() - started))
        ingest_rate = statistics.median(ours_rates)
        naive_rate = statistics.median(naive_rates)
        print(
            "ingest rounds (faces/s): ours "
            + ", ".join(f"{x:,.0f}" for x in ours_rates)
            + "; naive "
            + ", ".join(f"{x:,.0f}" for x in naive_rates)
        )
        # The same rows as our table (copied server-side: not timed), so both searches see equal data.
        with naive.cursor() as cur:
            cur.execute("TRUNCATE naive_faces")
            cur.execute(
                "INSERT INTO naive_faces (collection_id, photo, embedding) "
                "SELECT f.collection_id, p.external_id, f.embedding FROM faces f "
                "JOIN photos p ON p.collection_id = f.collection_id AND p.id = f.photo_id"
            )
        naive.commit()
        naive.autocommit = True
        naive.execute("VACUUM ANALYZE naive_faces")
        naive.close()

        # ---- the service (a real process) ----
        port = free_port()
        process = start_service(url, port, workdir / "search.log", args.ef_search)
        queries = queries_for(rng, session, args.queries)
        large_queries = queries_for(rng, large, args.queries)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            md = (("x-tenant-id", TENANT),)

            def search_call(collection: str, vectors: np.ndarray, out: dict[int, list[str]] | None):
                async def call(i: int) -> None:
                    reply = await stub.Search(
                        search_pb2.SearchRequest(
                            collection=collection,
                            embedding=search_pb2.EmbeddingQuery(values=vectors[i].tolist()),
                            top_k=10,
                        ),
                        metadata=md,
                        timeout=30,
                    )
                    if out is not None:
                        out[i] = [m.photo_id for m in reply.matches]

                return call

            for _ in range(20):  # warm-up (connections, prepared statements, caches)
                await search_call("session", queries, None)(0)
            got: dict[int, list[str]] = {}
            ours_c1 = await run_concurrent(search_call("session", queries, got), args.queries, 1)
            ours_c16 = await run_concurrent(search_call("session", queries, None), args.queries, 16)
            recall = statistics.mean(
                len(set(got[i]) & set(exact_top_photos(session, queries[i], 10, "s"))) / 10 for i in got
            )
            for _ in range(10):
                await search_call("large", large_queries, None)(0)
            got_large: dict[int, list[str]] = {}
            large_c1 = await run_concurrent(search_call("large", large_queries, got_large), args.queries, 1)
            large_c16 = await run_concurrent(search_call("large", large_queries, None), args.queries, 16)
            large_recall = statistics.mean(
                len(set(got_large[i]) & set(exact_top_photos(large, large_queries[i], 10, "l"))) / 10 for i in got_large
            )
            # The part of the top 10 that matters to a person looking for themselves: photos whose
            # best face has similarity >= 0.3 (the identity's own faces; the rest of an exact top 10
            # are near-ties of strangers at ~0.1-0.2).
            strong_found, strong_total = 0, 0
            for i in got_large:
                strong = set(strong_photos(large, large_queries[i], 10, "l", 0.3))
                strong_found += len(strong & set(got_large[i]))
                strong_total += len(strong)
            strong_recall = strong_found / max(1, strong_total)
        # The naive search, on the same rows.
        naive_sql = (
            "SELECT photo, 1 - (embedding <=> %s::vector) AS similarity FROM naive_faces "
            "WHERE collection_id = %s ORDER BY embedding <=> %s::vector LIMIT 10"
        )

        def naive_call(collection_id: int, vectors: np.ndarray) -> Callable[[int, psycopg.Connection], object]:
            def call(i: int, conn: psycopg.Connection) -> object:
                text = vector_text(vectors[i])
                return conn.execute(naive_sql, (text, collection_id, text)).fetchall()

            return call

        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(10):
                naive_call(session_row.id, queries)(0, conn)
        naive_c1 = await asyncio.to_thread(run_threads, naive_call(session_row.id, queries), args.queries, 1, url)
        naive_c16 = await asyncio.to_thread(run_threads, naive_call(session_row.id, queries), args.queries, 16, url)
        naive_large_c1 = await asyncio.to_thread(
            run_threads, naive_call(large_row.id, large_queries), max(20, args.queries // 5), 1, url
        )

        sql_only: list[float] = []
        for i in range(args.queries):
            started = time.perf_counter()
            await repo.exact_candidates(session_row.id, [queries[i]], SearchFilter(), None, 64)
            sql_only.append(time.perf_counter() - started)
        plan = await database.pool.fetch(
            "EXPLAIN SELECT f.id FROM faces f WHERE f.collection_id = $1 AND f.photo_id IS NOT NULL "
            "ORDER BY f.embedding <=> $2 LIMIT 10",
            session_row.id,
            queries[0],
        )
        print()
        print("plan of the session collection's exact scan:")
        for row in plan:
            print("   ", re.sub(r"'\[[^']*\]'::vector", "$2", row[0]))
        print()
        print(f"{'':42s}{'this service':>44s}   {'naive reference':>44s}   ratio")
        print(
            f"ingest (faces/s)                          {ingest_rate:>44,.0f}   {naive_rate:>44,.0f}   "
            f"{ingest_rate / naive_rate:5.1f}x"
        )
        print(
            f"session search, concurrency 1             {ours_c1.row():>44s}   {naive_c1.row():>44s}   "
            f"{naive_c1.p50_ms / ours_c1.p50_ms:5.2f}x p50, {ours_c1.qps / naive_c1.qps:5.2f}x QPS"
        )
        print(
            f"session search, concurrency 16            {ours_c16.row():>44s}   {naive_c16.row():>44s}   "
            f"{naive_c16.p50_ms / ours_c16.p50_ms:5.2f}x p50, {ours_c16.qps / naive_c16.qps:5.2f}x QPS"
        )
        print(
            f"large collection (HNSW), concurrency 1    {large_c1.row():>44s}   {naive_large_c1.row():>44s}   "
            f"{naive_large_c1.p50_ms / large_c1.p50_ms:5.2f}x p50"
        )
        print(f"large collection (HNSW), concurrency 16   {large_c16.row():>44s}")
        print(
            "session exact scan alone (the SQL, from this process, no gRPC): "
            f"p50 {percentile(sql_only, 50) * 1e3:.2f} ms  p99 {percentile(sql_only, 99) * 1e3:.2f} ms"
        )
        print(f"session search recall@10 vs exact numpy (grouped by photo): {recall:.4f}  (must be 1.0)")
        print(
            f"large collection recall@10 vs exact numpy (grouped by photo): {large_recall:.4f}  (target >= 0.95); "
            f"of its matches with similarity >= 0.3: {strong_recall:.4f}"
        )
        print()
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        print(
            "targets: session p50 <= 10 ms -> "
            f"{'met' if ours_c1.p50_ms <= 10 else 'NOT met'} ({ours_c1.p50_ms:.2f} ms); ingest >= 10x naive -> "
            f"{'met' if ingest_rate >= 10 * naive_rate else 'NOT met'} ({ingest_rate / naive_rate:.1f}x)"
        )
        print(
            "notes: this service = gRPC Search by embedding through a `python -m search_service` process "
            "(photo-grouped results, each photo once); naive = psycopg 3 with the vector as text, one row per "
            "face (no grouping), its table given a B-tree on collection_id. Ingest: ours = the repository's bulk "
            f"path ({args.batch_photos} photos per transaction, binary COPY), {args.session_faces} faces a round; "
            f"naive = one INSERT per face, one commit at the end, {args.naive_faces} faces a round; medians of "
            f"{args.ingest_rounds} alternating rounds."
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        await database.close()
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session-faces", type=int, default=10_000)
    parser.add_argument("--large-faces", type=int, default=50_000, help="faces of the HNSW-searched collection")
    parser.add_argument("--background-faces", type=int, default=400_000, help="faces in other collections")
    parser.add_argument("--background-collections", type=int, default=20)
    parser.add_argument("--naive-faces", type=int, default=3_000, help="faces the naive ingest inserts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-photos", type=int, default=500)
    parser.add_argument("--ingest-rounds", type=int, default=3, help="alternating ingest rounds, ours and naive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ef-search", type=int, default=SearchSettings().thresholds.hnsw_ef_search)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
