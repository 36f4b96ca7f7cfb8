"""deploy/k8s: every overlay renders with `kubectl kustomize`, validates against the Kubernetes schemas
(kubernetes-validate, offline, strict) and the CRD schemas of tests/deploy/crd_schemas.py, and is
consistent with itself and with the services' settings classes."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from embedder_service.config import EmbedderSettings
from facesearch.web.app import create_app
from facesearch.web.config import WebSettings
from search_service.config import SearchSettings
from tests.deploy.crd_schemas import CRD_SCHEMAS
from tests.deploy.manifests import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    REPO,
    all_containers,
    env_field_error,
    literal_env,
    named,
    of_kind,
    pod_label_sets,
    pod_specs,
    render,
    selector_matches,
    settings_from_env,
)

EMBEDDER = "facesearch-embedder"
SEARCH = "facesearch-search"
WEB = "facesearch-web"
# The optional web page, turned on the way deploy/README.md says (cpu overlay + components/web).
WEB_EXAMPLE = K8S / "examples" / "cpu-with-web"
# Every directory a user may `kubectl apply -k`.
RENDERED_DIRS = [K8S / "base", *OVERLAYS, WEB_EXAMPLE]
CNPG_OVERLAYS = {"cpu", "gpu", "gpu-cpu-autoscaling"}
GPU_OVERLAYS = {"gpu", "gpu-cpu-autoscaling", "external-database"}


@functools.cache
def _rendered(directory: Path) -> tuple[dict[str, Any], ...]:
    return tuple(render(directory))


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(K8S)) for p in paths]


@pytest.fixture(params=RENDERED_DIRS, ids=_ids(RENDERED_DIRS))
def rendered(request: pytest.FixtureRequest) -> tuple[Path, list[dict[str, Any]]]:
    return request.param, list(_rendered(request.param))


@pytest.fixture(params=OVERLAYS, ids=_ids(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param.name, list(_rendered(request.param))


def _container(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return named(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def test_the_expected_overlays_exist() -> None:
    assert {p.name for p in OVERLAYS} == {"cpu", "gpu", "gpu-cpu-autoscaling", "external-database"}


def test_every_object_validates_against_its_schema(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert objects
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        if key in CRD_SCHEMAS:
            try:
                jsonschema.validate(obj, CRD_SCHEMAS[key])
            except jsonschema.ValidationError as exc:
                where = list(exc.absolute_path)
                pytest.fail(f"{what} does not match the {key[1]} CRD schema: {exc.message} at {where}")
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{what} ({key[0]}): no Kubernetes schema and none in tests/deploy/crd_schemas.py")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{what} is invalid for Kubernetes {KUBERNETES_VERSION}: {exc.message} at {list(exc.path)}")


def test_schemas_catch_mistakes() -> None:
    """The validators reject what they should: a misspelt field, a bad CRD value."""
    objects = list(_rendered(K8S / "overlays" / "gpu"))
    deployment = yaml.safe_load(yaml.safe_dump(named(objects, "Deployment", EMBEDDER)))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    cluster = yaml.safe_load(yaml.safe_dump(named(objects, "Cluster", "facesearch-db")))
    cluster["spec"]["postgresql"]["parameters"]["max_connections"] = 200
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, CRD_SCHEMAS[("postgresql.cnpg.io/v1", "Cluster")])
    monitor = yaml.safe_load(yaml.safe_dump(named(objects, "ServiceMonitor", EMBEDDER)))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")])


def test_everything_lands_in_one_namespace(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    namespaces = of_kind(objects, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == ["facesearch"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "facesearch", f"{obj['kind']}/{obj['metadata']['name']}"


def test_every_container_sets_requests_limits_and_runs_locked_down(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    for workload, template in pod_specs(objects):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in all_containers(spec):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind} cpu+memory"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
    for cluster in of_kind(objects, "Cluster"):
        resources = cluster["spec"]["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


def test_images_are_all_mapped_to_a_registry(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    for _, template in pod_specs(objects):
        for container in all_containers(template["spec"]):
            assert "/" in container["image"] and ":" in container["image"], container["image"]


def test_services_select_pods_and_target_their_ports(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    pods = {w["metadata"]["name"]: t for w, t in pod_specs(objects)}
    for service in of_kind(objects, "Service"):
        matching = [t for t in pods.values() if selector_matches(service["spec"]["selector"], t["metadata"]["labels"])]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} pod templates"
        containers = matching[0]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), f"{service['metadata']['name']}: {target}"
            number = ports[target] if isinstance(target, str) else target
            assert port["port"] == number, "Service port and container port agree, so dns:///name:port works"


def test_embedder_service_is_headless_and_search_service_is_clusterip(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    assert named(objects, "Service", EMBEDDER)["spec"]["clusterIP"] == "None"
    search = named(objects, "Service", SEARCH)["spec"]
    assert search.get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in search


@pytest.mark.parametrize(("deployment", "settings_cls"), [(EMBEDDER, EmbedderSettings), (SEARCH, SearchSettings)])
def test_env_vars_are_settings_fields_and_ports_agree(
    rendered: tuple[Path, list[dict[str, Any]]],
    deployment: str,
    settings_cls: type[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, objects = rendered
    workload = named(objects, "Deployment", deployment)
    pod = workload["spec"]["template"]
    container = pod["spec"]["containers"][0]
    errors = [env_field_error(e["name"]) for e in container.get("env", [])]
    assert not [e for e in errors if e], errors
    prefix = settings_cls.model_config["env_prefix"]
    assert all(e["name"].startswith(prefix) for e in container["env"]), "only this service's variables"
    # The values too: the service would refuse to start on one pydantic rejects.
    settings = settings_from_env(settings_cls, literal_env(container), monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"grpc": settings.grpc_port, "metrics": settings.metrics_port}
    if settings.health_port:
        expected["health"] = settings.health_port
    assert ports == expected
    # Native gRPC probes, on the plaintext health port where the gRPC port serves TLS.
    probe_port = settings.health_port or settings.grpc_port
    assert bool(settings.health_port) == settings.tls.enabled, "kubelet's gRPC probes speak no TLS"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == probe_port, f"{deployment} {probe} is a native gRPC probe"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(settings.metrics_port)
    # The pod outlives the preStop pause plus the server's own shutdown grace.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(pre_stop[1]) + settings.shutdown_grace_s + 1, f"{deployment}: termination grace {grace}"
    assert "MAX_CONNECTION_AGE_S" in {e["name"].removeprefix(prefix) for e in container["env"]}


def test_embedder_startup_probe_covers_model_load(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    probe = _container(objects, EMBEDDER)["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 180


def test_embedder_models_come_from_a_read_only_volume(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    spec = named(objects, "Deployment", EMBEDDER)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = literal_env(container)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == env["EMBEDDER_MODELS_DIR"])
    assert mount["readOnly"] is True
    assert env["EMBEDDER_ALLOW_DOWNLOAD"] == "false"
    init = spec["initContainers"][0]
    assert any(m["name"] == mount["name"] for m in init["volumeMounts"]), "the init container fills the models volume"


def test_search_reaches_the_embedder_through_the_headless_service(
    rendered: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    env = literal_env(_container(objects, SEARCH))
    grpc_port = next(p["port"] for p in named(objects, "Service", EMBEDDER)["spec"]["ports"] if p["name"] == "grpc")
    assert env["SEARCH_EMBEDDER_TARGET"] == f"dns:///{EMBEDDER}:{grpc_port}"


def test_database_url_comes_from_the_database_secret(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    env = {e["name"]: e for e in _container(objects, SEARCH)["env"]}
    ref = env["SEARCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    clusters = of_kind(objects, "Cluster")
    if name in CNPG_OVERLAYS:
        assert len(clusters) == 1
        # CloudNativePG writes the application user's credentials to `<cluster>-app`, `uri` key.
        assert ref == {"name": f"{clusters[0]['metadata']['name']}-app", "key": "uri"}
        assert (
            "CREATE EXTENSION IF NOT EXISTS vector"
            in clusters[0]["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]
        )
    else:
        assert not clusters, "the external-database overlay must not create a database"
        assert ref["key"] == "uri"


def test_gpu_only_where_asked(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    container = _container(objects, EMBEDDER)
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    provider = literal_env(container)["EMBEDDER_EXECUTION_PROVIDER"]
    if name in GPU_OVERLAYS:
        assert str(limits.get("nvidia.com/gpu")) == "1" and str(requests.get("nvidia.com/gpu")) == "1"
        assert provider in {"CUDAExecutionProvider", "TensorrtExecutionProvider", "auto"}
        assert container["image"].endswith("gpu")
    else:
        assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in requests
        assert provider == "CPUExecutionProvider"
    for other, template in pod_specs(objects):
        if other["metadata"]["name"] != EMBEDDER:
            assert all("nvidia.com/gpu" not in str(c["resources"]) for c in all_containers(template["spec"]))


def test_hpas_scale_the_right_deployments_on_the_right_signals(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    deployments = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")}
    hpas = {h["metadata"]["name"]: h["spec"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert set(hpas) == {EMBEDDER, SEARCH}
    for hpa_name, spec in hpas.items():
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": hpa_name}
        assert hpa_name in deployments
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        deployment = named(objects, "Deployment", hpa_name)
        assert "replicas" not in deployment["spec"], "the HPA owns replicas"
    assert hpas[SEARCH]["metrics"][0]["resource"]["name"] == "cpu"
    embedder_metric = hpas[EMBEDDER]["metrics"][0]
    if name == "gpu-cpu-autoscaling":
        assert embedder_metric["type"] == "Resource" and embedder_metric["resource"]["name"] == "cpu"
    else:
        assert embedder_metric["type"] == "Pods"
        assert embedder_metric["pods"]["metric"]["selector"]["matchLabels"]["model"] in {"detection", "recognition"}
        # That the name is one a running embedder exports: tests/deploy/test_metric_names.py.


def test_prometheus_adapter_rule_serves_the_hpa_metric() -> None:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rules = values["rules"]["custom"]
    hpa = named(render(K8S / "base"), "HorizontalPodAutoscaler", EMBEDDER)
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    served = [r for r in rules if r["name"]["as"] == metric]
    assert len(served) == 1, f"no adapter rule serves the HPA's metric {metric}"
    assert set(served[0]["resources"]["overrides"]) == {"namespace", "pod"}


def test_service_monitors_carry_the_label_prometheus_selects_by(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    """kube-prometheus-stack selects ServiceMonitors by `release: <its Helm release>`; the adapter
    values name the same release's Prometheus."""
    _, objects = overlay
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    release = values["prometheus"]["url"].split("//", 1)[1].split(".", 1)[0].removesuffix("-prometheus")
    for monitor in of_kind(objects, "ServiceMonitor"):
        assert monitor["metadata"]["labels"].get("release") == release, monitor["metadata"]


def test_the_service_monitor_label_is_a_patch_point(tmp_path: Path) -> None:
    """The overlay patch deploy/README.md shows for another release name renders as documented."""
    readme = (REPO / "deploy" / "README.md").read_text()
    patch = readme.split("<!-- servicemonitor-release-patch -->", 2)[1]
    patch = patch.split("```yaml", 1)[1].split("```", 1)[0]
    overlay = os.path.relpath(K8S / "overlays" / "gpu", tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {overlay}\n{patch}")
    monitors = of_kind(render(tmp_path), "ServiceMonitor")
    assert len(monitors) == 2
    assert {m["metadata"]["labels"]["release"] for m in monitors} == {"my-prometheus"}


def test_pdbs_cover_each_deployment(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    templates = {w["metadata"]["name"]: t for w, t in pod_specs(objects)}
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for name, template in templates.items():
        covering = [p for p in pdbs if selector_matches(p["spec"]["selector"], template["metadata"]["labels"])]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"


def test_service_monitors_scrape_the_metrics_ports(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    monitors = of_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {EMBEDDER, SEARCH}
    for monitor in monitors:
        selector = monitor["spec"]["selector"]
        services = [s for s in of_kind(objects, "Service") if selector_matches(selector, s["metadata"]["labels"])]
        assert len(services) == 1
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] == "metrics" and endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


def _policies_for(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in of_kind(objects, "NetworkPolicy") if selector_matches(p["spec"]["podSelector"], labels)]


def _ingress_peers_for_port(policies: list[dict[str, Any]], port: int) -> list[dict[str, Any] | None]:
    """Every peer allowed in on `port` by `policies`; None stands for 'any source'."""
    peers: list[dict[str, Any] | None] = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and all(p.get("port") != port for p in ports):
                continue
            peers.extend(rule.get("from") or [None])
    return peers


def test_network_policies_deny_by_default_and_admit_only_search(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    policies = of_kind(objects, "NetworkPolicy")
    default_deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert len(default_deny) == 1 and set(default_deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    pods = pod_label_sets(objects)
    for policy in policies:
        if policy["spec"]["podSelector"]:
            assert any(selector_matches(policy["spec"]["podSelector"], p) for p in pods), policy["metadata"]["name"]
    search_labels = named(objects, "Deployment", SEARCH)["spec"]["template"]["metadata"]["labels"]
    embedder_labels = named(objects, "Deployment", EMBEDDER)["spec"]["template"]["metadata"]["labels"]
    for peer in _ingress_peers_for_port(_policies_for(objects, embedder_labels), 50051):
        assert peer is not None and set(peer) == {"podSelector"}, f"embedder gRPC open to {peer}"
        assert selector_matches(peer["podSelector"], search_labels)
        assert not selector_matches(peer["podSelector"], embedder_labels)
    if name in CNPG_OVERLAYS:
        db_labels = {"cnpg.io/cluster": "facesearch-db", "cnpg.io/podRole": "instance"}
        for peer in _ingress_peers_for_port(_policies_for(objects, db_labels), 5432):
            assert peer is not None and set(peer) == {"podSelector"}, f"PostgreSQL open to {peer}"
            # The search service, or the database's own replicas.
            assert selector_matches(peer["podSelector"], search_labels) or selector_matches(
                peer["podSelector"], db_labels
            )
    # The search service may go out to the embedder and the database only (DNS aside).
    for policy in _policies_for(objects, search_labels):
        for rule in policy["spec"].get("egress", []):
            assert {p["port"] for p in rule["ports"]} <= {50051, 5432, 53}, policy["metadata"]["name"]


def test_kustomization_files_reference_existing_paths() -> None:
    """Catches a component or resource left out of a kustomization (kustomize only sees listed files)."""
    for kustomization in K8S.rglob("kustomization.yaml"):
        content = yaml.safe_load(kustomization.read_text())
        listed = [*content.get("resources", []), *content.get("components", [])]
        listed += [p["path"] for p in content.get("patches", []) if "path" in p]
        for entry in listed:
            assert (kustomization.parent / entry).exists(), f"{kustomization.relative_to(REPO)}: {entry}"
        yaml_files = {p.name for p in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert yaml_files <= {Path(e).name for e in listed}, f"{kustomization.parent}: unlisted {yaml_files}"


def test_web_page_is_off_by_default() -> None:
    for directory in [K8S / "base", *OVERLAYS]:
        assert not [o for o in _rendered(directory) if o["metadata"]["name"].startswith(WEB)], directory.name


def test_web_component_runs_the_gateway_against_the_search_service(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = list(_rendered(WEB_EXAMPLE))
    deployment = named(objects, "Deployment", WEB)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("registry.example.com/") and ":" in container["image"]
    errors = [env_field_error(e["name"]) for e in container["env"]]
    assert not [e for e in errors if e], errors
    assert all(e["name"].startswith("FACESEARCH_WEB_") for e in container["env"])
    settings = settings_from_env(WebSettings, literal_env(container), monkeypatch)
    assert settings.host == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": settings.port}
    # The search service's own Service name and gRPC port.
    search_port = next(p["port"] for p in named(objects, "Service", SEARCH)["spec"]["ports"] if p["name"] == "grpc")
    assert settings.search_target == f"{SEARCH}:{search_port}"
    # Probes hit routes the gateway has.
    paths = {getattr(route, "path", None) for route in create_app(settings).routes}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http" and container[probe]["httpGet"]["path"] in paths
    # The kept photos live on the claim, not the (read-only) root filesystem.
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(settings.data_dir))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = named(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "a ReadWriteOnce volume: no two pods at once"
    assert container["env"][-1]["valueFrom"]["secretKeyRef"]["optional"] is True, "the key is optional"


def test_web_network_policy_admits_browsers_and_reaches_only_search() -> None:
    objects = list(_rendered(WEB_EXAMPLE))
    labels = named(objects, "Deployment", WEB)["spec"]["template"]["metadata"]["labels"]
    search_labels = named(objects, "Deployment", SEARCH)["spec"]["template"]["metadata"]["labels"]
    policies = _policies_for(objects, labels)
    assert _ingress_peers_for_port(policies, 8080) == [None], "browsers come from anywhere (an Ingress)"
    egress = [rule for policy in policies for rule in policy["spec"].get("egress", [])]
    to_search = [r for r in egress if any(selector_matches(p.get("podSelector", {}), search_labels) for p in r["to"])]
    assert [p["port"] for r in to_search for p in r["ports"]] == [50052]
    assert {p["port"] for r in egress for p in r["ports"]} <= {50052, 53}
    # The search service's own policy lets the gateway in on its gRPC port.
    search_peers = _ingress_peers_for_port(_policies_for(objects, search_labels), 50052)
    assert None in search_peers or any(selector_matches(p.get("podSelector", {}), labels) for p in search_peers if p)


def test_api_keys_and_no_reflection_everywhere(rendered: tuple[Path, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    search, embedder = literal_env(_container(objects, SEARCH)), literal_env(_container(objects, EMBEDDER))
    assert search["SEARCH_AUTH__MODE"] == "api_key"
    assert search["SEARCH_REFLECTION"] == "false" and embedder["EMBEDDER_REFLECTION"] == "false"


def _mounted_secret(objects: list[dict[str, Any]], deployment: str, path: str) -> tuple[str, str]:
    """(Secret name, key) a file path of the container is read from."""
    spec = named(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return volume["secret"]["secretName"], path.removeprefix(mount["mountPath"] + "/")


@pytest.mark.parametrize("overlay_name", ["cpu", "gpu", "gpu-cpu-autoscaling", "external-database"])
def test_cert_manager_gives_every_hop_tls(overlay_name: str) -> None:
    """The embedder serves TLS and demands a client certificate of the CA that signed the search
    service's; the search service serves TLS and dials the embedder by a name its certificate has."""
    objects = list(_rendered(K8S / "overlays" / overlay_name))
    certificates = {c["spec"]["secretName"]: c["spec"] for c in of_kind(objects, "Certificate")}
    issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(objects, "Issuer")}
    search, embedder = literal_env(_container(objects, SEARCH)), literal_env(_container(objects, EMBEDDER))

    def certificate_of(deployment: str, path: str) -> dict[str, Any]:
        secret, key = _mounted_secret(objects, deployment, path)
        assert key in {"tls.crt", "tls.key", "ca.crt"}, key  # the keys cert-manager writes
        return certificates[secret]

    embedder_cert = certificate_of(EMBEDDER, embedder["EMBEDDER_TLS__CERT_FILE"])
    assert certificate_of(EMBEDDER, embedder["EMBEDDER_TLS__KEY_FILE"]) is embedder_cert
    assert certificate_of(EMBEDDER, embedder["EMBEDDER_TLS__CLIENT_CA_FILE"]) is embedder_cert
    search_cert = certificate_of(SEARCH, search["SEARCH_TLS__CERT_FILE"])
    assert certificate_of(SEARCH, search["SEARCH_EMBEDDER__TLS__CERT_FILE"]) is search_cert
    assert certificate_of(SEARCH, search["SEARCH_EMBEDDER__TLS__CA_FILE"]) is search_cert
    assert "client auth" in search_cert["usages"] and "server auth" in embedder_cert["usages"]
    # One CA signs both, so each side's ca.crt verifies the other.
    assert embedder_cert["issuerRef"]["name"] == search_cert["issuerRef"]["name"]
    ca_issuer = issuers[search_cert["issuerRef"]["name"]]
    assert certificates[ca_issuer["ca"]["secretName"]]["isCA"] is True
    host = search["SEARCH_EMBEDDER_TARGET"].removeprefix("dns:///").rsplit(":", 1)[0]
    assert host in embedder_cert["dnsNames"]
    assert SEARCH in search_cert["dnsNames"]


def test_web_gateway_trusts_the_ca_of_the_search_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the example (cpu overlay: the search service serves TLS from cert-manager) the gateway
    dials a name the search certificate has and trusts the CA that signed it, mounting only that
    CA's certificate."""
    objects = list(_rendered(WEB_EXAMPLE))
    assert "SEARCH_TLS__CERT_FILE" in literal_env(_container(objects, SEARCH))
    container = named(objects, "Deployment", WEB)["spec"]["template"]["spec"]["containers"][0]
    settings = settings_from_env(WebSettings, literal_env(container), monkeypatch)
    assert settings.tls.ca_file is not None
    secret, key = _mounted_secret(objects, WEB, str(settings.tls.ca_file))
    assert key == "ca.crt"
    volume = next(v for v in named(objects, "Deployment", WEB)["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert [item["key"] for item in volume["secret"]["items"]] == ["ca.crt"], "never the CA's private key"
    certificates = {c["spec"]["secretName"]: c["spec"] for c in of_kind(objects, "Certificate")}
    issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(objects, "Issuer")}
    search_cert = certificates["facesearch-search-tls"]
    assert issuers[search_cert["issuerRef"]["name"]]["ca"]["secretName"] == secret
    assert certificates[secret]["isCA"] is True
    assert settings.search_target.removeprefix("dns:///").rsplit(":", 1)[0] in search_cert["dnsNames"]
