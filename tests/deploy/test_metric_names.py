"""Every metric name the deployment relies on (HPA, Prometheus adapter rule, the queries in the docs)
is one that a running service exports: an embedder and a search service are started as processes
and their live /metrics are scraped. There is no list of names here to drift from the code."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from facesearch.v1 import search_pb2, search_pb2_grpc
from tests.deploy.manifests import K8S, OVERLAYS, REPO, of_kind, render
from tests.faces import FaceSpec, make_photo
from tests.fixtures.processes import EmbedderProcess, SearchProcess, metric_value
from tests.fixtures.search import search_database_url

# A metric name of this project: the one prefix both services use.
METRIC_NAME = re.compile(r"\bfacesearch_[a-z0-9_]*[a-z0-9]\b")
ADAPTER_VALUES = K8S / "monitoring" / "prometheus-adapter-values.yaml"
DOCS = [REPO / "README.md", REPO / "deploy" / "README.md", REPO / "search_service" / "README.md"]
# Sample suffixes Prometheus adds to a family's name, by the family's type.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exported_names(text: str) -> set[str]:
    """Family names and sample names of a /metrics text, including the samples a family with no
    children yet (a labelled metric before its first use) will have."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        names.update(name + suffix for suffix in SUFFIXES.get(kind, ()))
    names.update(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[ {]", text, re.MULTILINE))
    return names


@pytest.fixture(scope="module")
def live_metrics(model_pack: Any, pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The /metrics texts of a running embedder and search service, after a search by selfie."""
    logs = tmp_path_factory.mktemp("metric-logs")
    embedder = EmbedderProcess.start(model_pack, logs, "embedder")
    search = None
    try:
        url = search_database_url(pg_server, f"metric_names_{os.getpid()}")
        search = SearchProcess.start(url, embedder.target, logs)
        with grpc.insecure_channel(search.target) as channel:
            stub = search_pb2_grpc.FaceSearchServiceStub(channel)
            stub.CreateCollection(search_pb2.CreateCollectionRequest(name="m"), timeout=30)
            image = make_photo([FaceSpec(240, 180, 60, 3)], size=(480, 360))
            stub.Search(search_pb2.SearchRequest(collection="m", image=search_pb2.ImageQuery(image=image)), timeout=60)
        yield {"embedder": embedder.metrics(), "search": search.metrics()}
    finally:
        if search is not None:
            search.stop()
        embedder.stop()


def _names_in(value: Any) -> set[str]:
    return set(METRIC_NAME.findall(yaml.safe_dump(value) if not isinstance(value, str) else value))


def test_every_metric_the_deployment_names_is_exported(live_metrics: dict[str, str]) -> None:
    exported = exported_names(live_metrics["embedder"]) | exported_names(live_metrics["search"])
    used: dict[str, set[str]] = {}
    for directory in [K8S / "base", *OVERLAYS]:
        used[str(directory.relative_to(REPO))] = _names_in(render(directory))
    # The adapter's series, whatever their prefix: the metric its seriesQuery selects and the one its
    # name rule matches.
    adapter = set()
    for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]:
        adapter.add(rule["seriesQuery"].split("{", 1)[0].strip())
        adapter.add(rule["name"]["matches"].removeprefix("^").removesuffix("$"))
    used[str(ADAPTER_VALUES.relative_to(REPO))] = adapter | _names_in(ADAPTER_VALUES.read_text())
    for doc in DOCS:
        used[str(doc.relative_to(REPO))] = _names_in(doc.read_text())
    assert used[str(ADAPTER_VALUES.relative_to(REPO))], "the adapter rule names no facesearch_ metric"
    missing = {where: sorted(names - exported) for where, names in used.items() if names - exported}
    assert not missing, f"named but exported by no running service: {missing}"


def test_both_services_use_one_prefix(live_metrics: dict[str, str]) -> None:
    for service, text in live_metrics.items():
        ours = {
            n for n in re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE) if not n.startswith(("python_", "process_"))
        }
        assert ours and all(n.startswith("facesearch_") for n in ours), (service, sorted(ours))


def test_the_hpa_signal_has_the_series_it_selects(live_metrics: dict[str, str]) -> None:
    """The embedder HPA's metric, through the adapter rule that serves it, with the HPA's label
    selector, is a series the running embedder has."""
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    for directory in [K8S / "base", *OVERLAYS]:
        for hpa in of_kind(render(directory), "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] != "Pods":
                    continue
                name = metric["pods"]["metric"]["name"]
                (rule,) = [r for r in rules if r["name"]["as"] == name]
                series = rule["seriesQuery"].split("{", 1)[0]
                labels = metric["pods"]["metric"].get("selector", {}).get("matchLabels", {})
                samples = re.findall(rf"^{re.escape(series)}\{{([^}}]*)\}}", live_metrics["embedder"], re.MULTILINE)
                assert any(all(f'{k}="{v}"' in sample for k, v in labels.items()) for sample in samples), (
                    f"{directory.name}: no {series}{labels} series on a running embedder"
                )


def test_saturation_metrics_move_with_work(live_metrics: dict[str, str]) -> None:
    """The batch-queue wait histogram counted the search's images; images in flight is back to 0."""
    text = live_metrics["embedder"]
    assert metric_value(text, "facesearch_embedder_queue_wait_seconds_count", {"model": "detection"}) >= 1
    assert metric_value(text, "facesearch_embedder_queue_wait_seconds_count", {"model": "recognition"}) >= 1
    assert "facesearch_embedder_images_in_flight 0.0" in text


def test_exported_names_reads_families_without_samples(tmp_path: Path) -> None:
    text = "# HELP a_seconds x\n# TYPE a_seconds histogram\n# HELP b x\n# TYPE b counter\nb_total 1.0\n"
    assert {"a_seconds_bucket", "a_seconds_count", "b_total"} <= exported_names(text)
    assert "c_total" not in exported_names(text)
