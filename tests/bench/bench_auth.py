"""What authentication costs per call: the same cheap RPC (GetCollection, one indexed query) against
two search services on one fresh pgserver, one with SEARCH_AUTH__MODE=none and one with api_key,
called in alternating rounds from one client so both see the same machine load.

    uv run python -m tests.bench.bench_auth [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import pgserver

from facesearch.v1 import search_pb2, search_pb2_grpc
from search_service.api_keys import ApiKeyStore
from search_service.config import SearchSettings
from search_service.server import start


def settings(url: str, mode: str) -> SearchSettings:
    return SearchSettings(
        database_url=url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        embedder_target="127.0.0.1:1",  # not called by GetCollection
        auth={"mode": mode},
    )


async def timed_calls(stub: search_pb2_grpc.FaceSearchServiceStub, md: tuple, calls: int) -> list[float]:
    request = search_pb2.GetCollectionRequest(name="bench")
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        await stub.GetCollection(request, metadata=md)
        seconds.append(time.perf_counter() - started)
    return seconds


async def main(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        url = server.get_uri()
        plain = await start(settings(url, "none"), metrics=False)
        keyed = await start(settings(url, "api_key"), metrics=False)
        try:
            key = (await ApiKeyStore(keyed.database.pool).create("bench")).key
            none_md = (("x-tenant-id", "bench"),)
            key_md = (("authorization", f"Bearer {key}"),)
            results: dict[str, list[float]] = {"none": [], "api_key": []}
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{plain.port}") as c1,
                grpc.aio.insecure_channel(f"127.0.0.1:{keyed.port}") as c2,
            ):
                stubs = {
                    "none": search_pb2_grpc.FaceSearchServiceStub(c1),
                    "api_key": search_pb2_grpc.FaceSearchServiceStub(c2),
                }
                await stubs["none"].CreateCollection(search_pb2.CreateCollectionRequest(name="bench"), metadata=none_md)
                mds = {"none": none_md, "api_key": key_md}
                for mode in results:  # warm-up
                    await timed_calls(stubs[mode], mds[mode], 100)
                for _ in range(rounds):
                    for mode in results:
                        results[mode] += await timed_calls(stubs[mode], mds[mode], calls // rounds)
        finally:
            await plain.stop(0.5)
            await keyed.stop(0.5)
            server.cleanup()
    p50 = {mode: statistics.median(values) * 1000 for mode, values in results.items()}
    p99 = {mode: statistics.quantiles(values, n=100)[98] * 1000 for mode, values in results.items()}
    print(f"GetCollection, {calls} calls per mode in {rounds} alternating rounds, one client, sequential")
    for mode in results:
        print(f"  {mode:8s} p50 {p50[mode]:.3f} ms  p99 {p99[mode]:.3f} ms")
    print(f"  api_key / none: p50 {p50['api_key'] / p50['none']:.2f}x, p99 {p99['api_key'] / p99['none']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.rounds))
