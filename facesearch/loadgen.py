"""Load driver for the FaceSearch gRPC APIs: the scenarios of deploy/loadtest's ghz configs, run from
Python (for machines without ghz, and for the benchmarks), printing throughput and latency percentiles.

    python -m facesearch.loadgen SCENARIO --target HOST:PORT [--concurrency N] [--requests M | --duration S]
    python -m facesearch.loadgen setup --target HOST:PORT     # collection + photos for the search scenarios

It reads the ghz config of the scenario (deploy/loadtest/SCENARIO.json) and the data file it names, so
both tools send identical requests. Targets must be loopback addresses (port-forward a cluster's
Service first), and every run is bounded by a request count or a duration. From code (benchmarks):

    result = await run_load(load_scenario(Scenario.EMBED_STREAM), target, concurrency=4, requests=20)
    result.summary()  # calls, codes, calls/s, messages/s, p50/p90/p99 ms
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

# Importing the generated modules registers the facesearch.v1 services in the default descriptor pool.
from facesearch.v1 import embedder_pb2, search_pb2  # noqa: F401

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[1] / "deploy" / "loadtest"
# Hard ceilings, whatever the command line says: a load run always ends by itself.
MAX_REQUESTS = 1_000_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 1024
MAX_STREAM_CALLS = 10_000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# ghz template expressions the data files may use, each as the whole value of a string field.
_TEMPLATE = re.compile(r"\{\{\s*(newUUID|\.RequestNumber)\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}")


class Scenario(StrEnum):
    """The load scenarios; each is deploy/loadtest/<value>.json."""

    EMBED_UNARY = "embed-unary"
    EMBED_STREAM = "embed-stream"
    SEARCH_EMBEDDING = "search-embedding"
    SEARCH_IMAGE = "search-image"


@dataclass(frozen=True)
class GhzConfig:
    """The parts of a ghz JSON config this driver uses."""

    path: Path
    call: str
    host: str
    data_file: Path
    concurrency: int
    total: int
    timeout_s: float
    metadata: tuple[tuple[str, str], ...] = ()
    stream_call_count: int = 0
    stream_dynamic_messages: bool = False

    @property
    def method(self) -> MethodDescriptor:
        return method_descriptor(self.call)


def _duration_s(text: str | float | int) -> float:
    """A ghz duration ("30s", "500ms", "1m") in seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 500ms, 1m)")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def load_ghz_config(path: Path, base_dir: Path | None = None) -> GhzConfig:
    """Reads a ghz config (`data-file` looked up as `_resolve_data_file` says)."""
    raw = json.loads(path.read_text())
    if "call" not in raw or "data-file" not in raw:
        raise ValueError(f"{path}: a ghz config needs `call` and `data-file`")
    data_file = _resolve_data_file(Path(raw["data-file"]), path, base_dir)
    return GhzConfig(
        path=path,
        call=raw["call"],
        host=raw.get("host", ""),
        data_file=data_file,
        concurrency=int(raw.get("concurrency", 50)),
        total=int(raw.get("total", 200)),
        timeout_s=_duration_s(raw.get("timeout", "20s")),
        metadata=tuple(sorted((raw.get("metadata") or {}).items())),
        stream_call_count=int(raw.get("stream-call-count", 0)),
        stream_dynamic_messages=bool(raw.get("stream-dynamic-messages", False)),
    )


def load_scenario(scenario: Scenario | str, config_dir: Path = DEFAULT_CONFIG_DIR) -> GhzConfig:
    """The ghz config of `scenario` (deploy/loadtest/<scenario>.json)."""
    return load_ghz_config(config_dir / f"{Scenario(scenario).value}.json")


def _resolve_data_file(data_file: Path, config_path: Path, base_dir: Path | None) -> Path:
    """ghz reads `data-file` from its working directory (the repository root in the README's
    commands); a config copied elsewhere may keep its data beside it instead."""
    if data_file.is_absolute():
        return data_file
    roots = [base_dir] if base_dir is not None else []
    roots += [config_path.resolve().parents[2], Path.cwd(), config_path.parent]
    for root in roots:
        if (root / data_file).is_file():
            return root / data_file
    beside = config_path.parent / "data" / data_file.name
    if beside.is_file():
        return beside
    raise ValueError(f"{config_path}: data file {data_file} not found (run from the repository root)")


def method_descriptor(call: str) -> MethodDescriptor:
    """The method a ghz `call` names ("pkg.Service.Method" or "pkg.Service/Method")."""
    name = call.replace("/", ".")
    try:
        return descriptor_pool.Default().FindMethodByName(name)
    except KeyError:
        raise ValueError(f"no method {call!r} in the facesearch protos") from None


def message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


class RequestTemplate:
    """A request parsed once from its JSON data file; string fields holding a ghz template
    expression ({{newUUID}}, {{.RequestNumber}}) are filled in again for every message."""

    def __init__(self, data: str, request_type: type[Message]) -> None:
        unsupported = [t for t in _ANY_TEMPLATE.findall(data) if not _TEMPLATE.fullmatch(t)]
        if unsupported:
            raise ValueError(f"unsupported template expressions in the data: {sorted(set(unsupported))}")
        self._expressions: dict[str, str] = {}

        def mark(match: re.Match[str]) -> str:
            marker = f"__loadgen_template_{len(self._expressions)}__"
            self._expressions[marker] = match.group(1)
            return marker

        parsed = json.loads(_TEMPLATE.sub(mark, data))
        if isinstance(parsed, list):
            if not parsed:
                raise ValueError("the data array is empty")
            # ghz sends an array's messages in turn; so do we.
            items = parsed
        else:
            items = [parsed]
        self._bases = [json_format.ParseDict(item, request_type()) for item in items]
        self._paths = [self._template_paths(base) for base in self._bases]

    def _template_paths(self, message: Message, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
        found: list[tuple[tuple[str, ...], str]] = []
        for fd, value in message.ListFields():
            if fd.type == FieldDescriptor.TYPE_MESSAGE and not fd.is_repeated:
                found += self._template_paths(value, (*prefix, fd.name))
            elif fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated:
                if value in self._expressions:
                    found.append(((*prefix, fd.name), self._expressions[value]))
                elif "__loadgen_template_" in value:
                    raise ValueError(f"field {'.'.join((*prefix, fd.name))}: a template must be the whole value")
        return found

    @property
    def is_dynamic(self) -> bool:
        return any(self._paths)

    def make(self, request_number: int) -> Message:
        """The `request_number`-th message (0-based): the data's messages in turn, templates filled."""
        index = request_number % len(self._bases)
        base, paths = self._bases[index], self._paths[index]
        if not paths:
            return base
        message = type(base)()
        message.CopyFrom(base)
        for path, expression in paths:
            target = message
            for name in path[:-1]:
                target = getattr(target, name)
            value = str(uuid.uuid4()) if expression == "newUUID" else str(request_number)
            setattr(target, path[-1], value)
        return message


def check_loopback(target: str) -> str:
    """`target` as host:port when its host is a loopback address; ValueError otherwise."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target must be HOST:PORT, got {target!r}")
    bare = host.strip("[]")
    if bare != "localhost":
        try:
            loopback = ipaddress.ip_address(bare).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"target {target!r} is not a loopback address: load is only sent to 127.0.0.0/8, [::1] or "
                "localhost (for a cluster, `kubectl port-forward` the Service first)"
            )
    return target


@dataclass
class LoadResult:
    """What one run measured. Latencies are per call (for a stream: the whole stream)."""

    scenario: str
    target: str
    concurrency: int
    # Streaming calls carry several messages (images) each; unary calls one.
    streaming: bool = False
    calls: int = 0
    ok: int = 0
    messages: int = 0
    message_errors: int = 0
    elapsed_s: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return math.nan
        return float(np.percentile(np.asarray(self.latencies_s), q)) * 1000.0

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "concurrency": self.concurrency,
            "streaming": self.streaming,
            "calls": self.calls,
            "ok": self.ok,
            "codes": dict(self.codes),
            "messages": self.messages,
            "message_errors": self.message_errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "calls_per_s": round(self.calls_per_s, 2),
            "messages_per_s": round(self.messages_per_s, 2),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p90_ms": round(self.percentile_ms(90), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
        }

    def format(self) -> str:
        s = self.summary()
        lines = [
            f"scenario {s['scenario']}  target {s['target']}  concurrency {s['concurrency']}",
            f"calls {s['calls']}  ok {s['ok']}  codes {s['codes']}  elapsed {s['elapsed_s']:.2f} s",
            f"throughput {s['calls_per_s']:.2f} calls/s",
        ]
        if self.streaming:
            lines[-1] += f"  {s['messages_per_s']:.2f} messages/s ({s['message_errors']} item errors)"
        lines.append(f"latency ms  p50 {s['p50_ms']:.2f}  p90 {s['p90_ms']:.2f}  p99 {s['p99_ms']:.2f}")
        return "\n".join(lines)


class _Budget:
    """Hands out call numbers until the request count or the deadline is reached."""

    def __init__(self, requests: int | None, deadline: float | None) -> None:
        self._next = 0
        self._requests = requests
        self._deadline = deadline

    def take(self) -> int | None:
        if self._requests is not None and self._next >= self._requests:
            return None
        if self._deadline is not None and time.perf_counter() >= self._deadline:
            return None
        number = self._next
        self._next += 1
        return number


async def run_load(
    config: GhzConfig,
    target: str,
    *,
    scenario: str = "",
    concurrency: int | None = None,
    requests: int | None = None,
    duration_s: float | None = None,
    stream_call_count: int | None = None,
    timeout_s: float | None = None,
) -> LoadResult:
    """Runs the config's call against `target` with `concurrency` callers until `requests` calls
    (streams, for a streaming method) are done or `duration_s` has passed, whichever comes first;
    the ghz config's `total` when neither is given."""
    check_loopback(target)
    concurrency = concurrency if concurrency is not None else config.concurrency
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in 1..{MAX_CONCURRENCY}")
    if requests is None and duration_s is None:
        requests = config.total
    if requests is not None and not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"requests must be in 1..{MAX_REQUESTS}")
    if duration_s is not None and not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S:.0f}] seconds")
    method = config.method
    streaming = method.client_streaming
    per_stream = stream_call_count or config.stream_call_count or 1
    if not 1 <= per_stream <= MAX_STREAM_CALLS:
        raise ValueError(f"stream call count must be in 1..{MAX_STREAM_CALLS}")
    request_type = message_class(method.input_type)
    response_type = message_class(method.output_type)
    template = RequestTemplate(config.data_file.read_text(), request_type)
    timeout = timeout_s or config.timeout_s
    metadata = config.metadata or None
    path = f"/{method.containing_service.full_name}/{method.name}"

    result = LoadResult(scenario=scenario or config.call, target=target, concurrency=concurrency, streaming=streaming)
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        if streaming:
            stream_call = channel.stream_stream(
                path, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString
            )
        else:
            unary_call = channel.unary_unary(
                path, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString
            )
        await asyncio.wait_for(channel.channel_ready(), timeout=10)

        async def one_stream(number: int) -> None:
            async def requests_of_stream() -> AsyncIterator[Message]:
                for i in range(per_stream):
                    yield template.make(number * per_stream + i)

            responses = 0
            async for response in stream_call(requests_of_stream(), timeout=timeout, metadata=metadata):
                responses += 1
                status = getattr(response, "status", None)
                if status is not None and status.code != 0:
                    result.message_errors += 1
            result.messages += responses

        async def one_call(number: int) -> None:
            await unary_call(template.make(number), timeout=timeout, metadata=metadata)
            result.messages += 1

        call_once: Callable[[int], Any] = one_stream if streaming else one_call
        started = time.perf_counter()
        budget = _Budget(requests, started + duration_s if duration_s is not None else None)

        async def worker() -> None:
            while (number := budget.take()) is not None:
                t0 = time.perf_counter()
                try:
                    await call_once(number)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                result.latencies_s.append(time.perf_counter() - t0)
                result.calls += 1
                result.codes[code.name] += 1
                if code is grpc.StatusCode.OK:
                    result.ok += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
    return result


async def setup_search_data(
    target: str, config_dir: Path = DEFAULT_CONFIG_DIR, photos: int = 20, timeout_s: float = 60.0
) -> dict[str, int]:
    """Creates the search scenarios' collection (for their tenant) and indexes `photos` copies of
    data/photo.jpg into it, so search-embedding and search-image have something to find."""
    check_loopback(target)
    if not 1 <= photos <= 10_000:
        raise ValueError("photos must be in 1..10000")
    config = load_ghz_config(config_dir / f"{Scenario.SEARCH_EMBEDDING}.json")
    collection = json.loads(config.data_file.read_text())["collection"]
    photo = (config_dir / "data" / "photo.jpg").read_bytes()
    metadata = config.metadata or None
    outcomes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        from facesearch.v1 import search_pb2_grpc

        stub = search_pb2_grpc.FaceSearchServiceStub(channel)
        try:
            await stub.CreateCollection(
                search_pb2.CreateCollectionRequest(name=collection, display_name="load test"),
                timeout=timeout_s,
                metadata=metadata,
            )
            outcomes["collection_created"] += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.ALREADY_EXISTS:
                raise
            outcomes["collection_existed"] += 1

        async def requests() -> AsyncIterator[search_pb2.IndexPhotosRequest]:
            for i in range(photos):
                yield search_pb2.IndexPhotosRequest(collection=collection, external_id=f"loadtest-{i:05d}", image=photo)

        async for response in stub.IndexPhotos(requests(), timeout=timeout_s * photos, metadata=metadata):
            if response.status.code != 0:
                outcomes["photo_errors"] += 1
            else:
                outcomes[search_pb2.IndexOutcome.Name(response.outcome).removeprefix("INDEX_OUTCOME_").lower()] += 1
                outcomes["faces_indexed"] += response.faces_indexed
    return dict(outcomes)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m facesearch.loadgen",
        description="Drive a FaceSearch server with the ghz scenarios of deploy/loadtest (loopback targets only).",
    )
    parser.add_argument("scenario", choices=[*(s.value for s in Scenario), "setup"])
    parser.add_argument("--target", help="HOST:PORT of the server (default: the ghz config's host)")
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="where the ghz configs are")
    parser.add_argument("--concurrency", "-c", type=int, help="concurrent callers (default: the config's)")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--requests", "-n", type=int, help="calls to make; streams for embed-stream")
    bound.add_argument("--duration", "-z", type=float, help="seconds to run instead of a call count")
    parser.add_argument("--stream-call-count", type=int, help="messages per stream (embed-stream)")
    parser.add_argument("--timeout", type=float, help="deadline of one call, seconds (default: the config's)")
    parser.add_argument("--photos", type=int, default=20, help="setup: photos to index")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    config_dir: Path = args.config_dir.resolve()
    try:
        if args.scenario == "setup":
            target = args.target or load_ghz_config(config_dir / f"{Scenario.SEARCH_EMBEDDING}.json").host
            outcome = asyncio.run(setup_search_data(target, config_dir, photos=args.photos))
            print(json.dumps(outcome) if args.json else f"setup {target}: {outcome}")
            return 0 if not outcome.get("photo_errors") else 1
        config = load_ghz_config(config_dir / f"{args.scenario}.json")
        result = asyncio.run(
            run_load(
                config,
                args.target or config.host,
                scenario=args.scenario,
                concurrency=args.concurrency,
                requests=args.requests,
                duration_s=args.duration,
                stream_call_count=args.stream_call_count,
                timeout_s=args.timeout,
            )
        )
    except (TimeoutError, grpc.aio.AioRpcError) as exc:
        # Before OSError: TimeoutError is one.
        detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else "timed out"
        print(f"loadgen: cannot reach the server ({detail})", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary()) if args.json else result.format())
    return 0 if result.ok == result.calls else 1


if __name__ == "__main__":
    sys.exit(main())
