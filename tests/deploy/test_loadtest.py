"""deploy/loadtest and facesearch.loadgen: the ghz configs parse, call methods the protos define, and
their data decodes into the request messages; the Python driver sends the same requests to real
servers and counts what comes back."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from facesearch import loadgen
from facesearch.loadgen import GhzConfig, RequestTemplate, Scenario, load_ghz_config, run_load
from tests.deploy.manifests import DEPLOY

LOADTEST = DEPLOY / "loadtest"
# Keys of ghz's JSON config (its runner.Config json tags) the configs may use.
GHZ_KEYS = {
    "proto", "protoset", "call", "import-paths", "cacert", "cert", "key", "cname", "skip-verify", "insecure",
    "authority", "async", "rps", "load-schedule", "load-start", "load-end", "load-step", "load-step-duration",
    "load-max-duration", "concurrency", "concurrency-schedule", "concurrency-start", "concurrency-end",
    "concurrency-step", "concurrency-step-duration", "concurrency-max-duration", "total", "timeout", "duration",
    "max-duration", "duration-stop", "data", "data-file", "binary-file", "metadata", "metadata-file",
    "stream-interval", "stream-call-duration", "stream-call-count", "stream-dynamic-messages", "reflect-metadata",
    "output", "format", "skip-first", "count-errors", "connections", "connect-timeout", "keepalive",
    "enable-compression", "lb-strategy", "name", "tags", "cpus", "debug", "host",
}  # fmt: skip
CONFIGS = [LOADTEST / f"{s.value}.json" for s in Scenario]


def _config(scenario: Scenario) -> GhzConfig:
    return loadgen.load_scenario(scenario, LOADTEST)


def _request(config: GhzConfig) -> Any:
    """The data file parsed strictly (unknown fields refused) into the method's request type, with
    ghz's template expressions filled as ghz would."""
    text = config.data_file.read_text().replace("{{newUUID}}", "00000000-0000-4000-8000-000000000000")
    return json_format.Parse(text, loadgen.message_class(config.method.input_type)())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_ghz_config_is_valid(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert set(raw) <= GHZ_KEYS, f"not ghz config keys: {set(raw) - GHZ_KEYS}"
    service, _, method = raw["call"].rpartition(".")
    config = load_ghz_config(path)
    assert config.method.full_name == raw["call"]
    assert config.method.containing_service.full_name == service and config.method.name == method
    # ghz reads data-file from its working directory: the README's commands run from the repo root.
    assert (DEPLOY.parent / raw["data-file"]).is_file()
    host, port = raw["host"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) in {50051, 50052}
    assert raw["insecure"] is True and raw["total"] >= raw["concurrency"] >= 1


def test_methods_exist_in_the_proto_sources() -> None:
    """The configs name methods of the .proto files themselves (what ghz --proto would load)."""
    protos = (DEPLOY.parent / "protos" / "facesearch" / "v1").glob("*.proto")
    text = "\n".join(p.read_text() for p in protos)
    for path in CONFIGS:
        call = json.loads(path.read_text())["call"]
        service, method = call.split(".")[-2:]
        assert f"service {service} {{" in text
        assert f"rpc {method}(" in text


def test_embed_data_decodes_into_requests_with_a_real_image() -> None:
    photo = (LOADTEST / "data" / "photo.jpg").read_bytes()
    for scenario in (Scenario.EMBED_UNARY, Scenario.EMBED_STREAM):
        request = _request(_config(scenario))
        assert request.input.WhichOneof("source") == "encoded_image"
        assert request.input.encoded_image == photo
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (480, 640, 3)


def test_stream_config_sends_unique_request_ids() -> None:
    raw = json.loads((LOADTEST / "embed-stream.json").read_text())
    assert raw["stream-call-count"] >= 2 and raw["stream-dynamic-messages"] is True
    assert json.loads(_config(Scenario.EMBED_STREAM).data_file.read_text())["requestId"] == "{{newUUID}}"


def test_search_data_decodes_into_requests() -> None:
    by_embedding = _request(_config(Scenario.SEARCH_EMBEDDING))
    assert by_embedding.WhichOneof("query") == "embedding"
    values = np.asarray(by_embedding.embedding.values, np.float64)
    assert values.shape == (512,) and np.isfinite(values).all()
    assert math.isclose(float(np.linalg.norm(values)), 1.0, abs_tol=1e-4)
    assert json.loads((LOADTEST / "data" / "embedding.json").read_text()) == pytest.approx(list(values), abs=1e-6)
    by_image = _request(_config(Scenario.SEARCH_IMAGE))
    assert by_image.WhichOneof("query") == "image"
    assert by_image.image.image == (LOADTEST / "data" / "selfie.jpg").read_bytes()
    assert by_embedding.collection == by_image.collection and by_image.top_k == 10
    # Both search scenarios act for the same tenant, the one `loadgen setup` prepares.
    assert _config(Scenario.SEARCH_IMAGE).metadata == _config(Scenario.SEARCH_EMBEDDING).metadata


def test_readme_has_a_ghz_command_per_config() -> None:
    readme = (LOADTEST / "README.md").read_text()
    for path in CONFIGS:
        assert f"ghz --config deploy/loadtest/{path.name}" in readme


def test_request_template_fills_templates_per_message() -> None:
    template = RequestTemplate(
        json.dumps({"requestId": "{{newUUID}}", "input": {"encodedImage": base64.b64encode(b"x").decode()}}),
        loadgen.message_class(_config(Scenario.EMBED_STREAM).method.input_type),
    )
    ids = {template.make(i).request_id for i in range(50)}
    assert len(ids) == 50 and all(len(i) == 36 for i in ids)
    numbered = RequestTemplate(
        json.dumps([{"requestId": "{{.RequestNumber}}"}, {"requestId": "fixed"}]),
        loadgen.message_class(_config(Scenario.EMBED_STREAM).method.input_type),
    )
    # An array's messages go in turn, as ghz sends them.
    assert [numbered.make(i).request_id for i in range(4)] == ["0", "fixed", "2", "fixed"]
    with pytest.raises(ValueError, match="unsupported template"):
        RequestTemplate('{"requestId": "{{randomString 8}}"}', type(numbered.make(1)))


def test_request_template_refuses_a_partial_template() -> None:
    with pytest.raises(ValueError, match="whole value"):
        RequestTemplate('{"requestId": "a-{{newUUID}}"}', type(_request(_config(Scenario.EMBED_STREAM))))


@pytest.mark.parametrize("target", ["10.0.0.1:50051", "192.168.1.2:1", "example.com:443", "127.0.0.1", "[::1]"])
def test_non_loopback_or_malformed_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        loadgen.check_loopback(target)


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "127.1.2.3:9", "[::1]:50052", "localhost:1"])
def test_loopback_targets_are_accepted(target: str) -> None:
    assert loadgen.check_loopback(target) == target


async def test_runs_are_bounded() -> None:
    config = _config(Scenario.EMBED_UNARY)
    for kwargs in ({"requests": 0}, {"requests": loadgen.MAX_REQUESTS + 1}, {"duration_s": 1e9}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            await run_load(config, "127.0.0.1:1", **kwargs)


def test_percentiles_and_summary() -> None:
    result = loadgen.LoadResult(scenario="x", target="127.0.0.1:1", concurrency=1, calls=100, ok=100, messages=100)
    result.latencies_s = [i / 1000 for i in range(1, 101)]
    result.elapsed_s = 2.0
    summary = result.summary()
    assert summary["calls_per_s"] == 50.0
    assert summary["p50_ms"] == pytest.approx(50.5) and summary["p99_ms"] == pytest.approx(99.01)
    assert "p90" in result.format()


# --- against real servers -------------------------------------------------------------------


async def test_embed_scenarios_against_the_embedder(embedder_server: Any) -> None:
    unary = await run_load(_config(Scenario.EMBED_UNARY), embedder_server.target, concurrency=2, requests=3)
    assert (unary.calls, unary.ok, unary.messages) == (3, 3, 3)
    assert len(unary.latencies_s) == 3 and unary.percentile_ms(50) > 0
    stream = await run_load(
        _config(Scenario.EMBED_STREAM), embedder_server.target, concurrency=2, requests=2, stream_call_count=3
    )
    assert (stream.calls, stream.ok, stream.messages, stream.message_errors) == (2, 2, 6, 0)


async def test_embed_photo_has_faces_for_the_test_pack(embedder_server: Any) -> None:
    """The data's photo is not just any image: the generated pack finds its four faces."""
    from facesearch.v1 import embedder_pb2_grpc

    request = _request(_config(Scenario.EMBED_UNARY))
    async with grpc.aio.insecure_channel(embedder_server.target) as channel:
        response = await embedder_pb2_grpc.EmbedderServiceStub(channel).Embed(request, timeout=60)
    assert len(response.faces) == 4


async def test_errors_are_counted_not_raised(embedder_server: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"requestId": "{{newUUID}}", "input": {"encodedImage": ""}}))
    stream_config = GhzConfig(
        path=tmp_path / "c.json",
        call="facesearch.v1.EmbedderService.EmbedStream",
        host=embedder_server.target,
        data_file=bad,
        concurrency=1,
        total=1,
        timeout_s=30,
        stream_call_count=2,
    )
    stream = await run_load(stream_config, embedder_server.target, requests=1)
    # An empty image is that item's INVALID_ARGUMENT; the stream itself ends OK.
    assert (stream.calls, stream.ok, stream.messages, stream.message_errors) == (1, 1, 2, 2)
    bad.write_text(json.dumps({"input": {"encodedImage": ""}}))
    unary_config = GhzConfig(
        path=tmp_path / "c.json",
        call="facesearch.v1.EmbedderService.Embed",
        host=embedder_server.target,
        data_file=bad,
        concurrency=1,
        total=2,
        timeout_s=30,
    )
    unary = await run_load(unary_config, embedder_server.target)
    assert unary.calls == 2 and unary.ok == 0 and unary.codes == {"INVALID_ARGUMENT": 2}


async def test_search_scenarios_against_the_search_service(search_server: Any) -> None:
    outcome = await loadgen.setup_search_data(search_server.target, LOADTEST, photos=2)
    assert not outcome.get("photo_errors") and outcome.get("faces_indexed", 0) >= 1
    for scenario in (Scenario.SEARCH_EMBEDDING, Scenario.SEARCH_IMAGE):
        result = await run_load(_config(scenario), search_server.target, concurrency=2, requests=3)
        assert (result.calls, result.ok) == (3, 3), result.codes


def test_command_line_refuses_a_remote_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadgen.main(["embed-unary", "--target", "10.1.2.3:50051", "--requests", "1"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
