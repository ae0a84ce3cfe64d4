"""Structural checks of the bundled deployment: collector, compose, backends, provisioning.

Neither otelcol-contrib nor Docker runs here, so these tests read the files the
way those programs would and check that the pieces agree with each other:
pipelines name defined components of the pinned collector release, listen
addresses are configurable, images are pinned, ports stay on loopback, and the
Grafana provisioning points at the dashboards that exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "collector-config"
DASHBOARD_DIR = REPO / "dashboards"

COLLECTOR_VERSION = "0.135.0"
#: Component types used here, each checked against the otelcol-contrib 0.135.0 release
#: manifest (distributions/otelcol-contrib/manifest.yaml in opentelemetry-collector-releases).
CONTRIB_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "resourcedetection"},
    "exporters": {"otlp", "otlphttp", "debug", "prometheusremotewrite"},
    "extensions": {"health_check"},
}
ENV_REF = re.compile(r"\$\{env:(?P<name>[A-Z][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _yaml(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8"))
    return data


def expand_env(value: str, env: dict[str, str] | None = None) -> str:
    """The collector's ${env:NAME:-default} expansion (confmap env provider)."""
    env = env or {}

    def repl(m: re.Match[str]) -> str:
        if m.group("name") in env:
            return env[m.group("name")]
        assert m.group("default") is not None, f"{m.group(0)} has no default"
        return m.group("default")

    return ENV_REF.sub(repl, value)


COLLECTOR = _yaml("otelcol.yaml")
COMPOSE = _yaml("compose.yaml")


# --- collector ------------------------------------------------------------------


def test_collector_header_names_the_pinned_version() -> None:
    text = (CONFIG_DIR / "otelcol.yaml").read_text(encoding="utf-8")
    assert f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}" in text
    image = COMPOSE["services"]["otelcol"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}"


@pytest.mark.parametrize("kind", ["receivers", "processors", "exporters", "extensions"])
def test_component_types_exist_in_the_pinned_release(kind: str) -> None:
    for key in COLLECTOR.get(kind, {}):
        component_type = key.split("/", 1)[0]
        assert component_type in CONTRIB_COMPONENTS[kind], (
            f"{kind}.{key}: {component_type!r} is not in otelcol-contrib {COLLECTOR_VERSION}"
        )


def test_every_pipeline_refers_to_defined_components() -> None:
    service = COLLECTOR["service"]
    pipelines = service["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            assert pipeline.get(kind) or kind == "processors", f"{name} has no {kind}"
            for ref in pipeline.get(kind, []):
                assert ref in COLLECTOR[kind], f"pipeline {name}: {kind[:-1]} {ref!r} undefined"
    for ext in service.get("extensions", []):
        assert ext in COLLECTOR["extensions"], f"extension {ext!r} undefined"


def test_processor_order_memory_limiter_first_batch_last() -> None:
    for name, pipeline in COLLECTOR["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert processors[-1] == "batch", f"{name}: batch must come last"
        assert "resourcedetection" in processors, f"{name}: no resource detection"
    assert set(COLLECTOR["processors"]["resourcedetection"]["detectors"]) >= {"env", "system"}


def test_receiver_endpoints_are_configurable_and_listen_in_the_container() -> None:
    protocols = COLLECTOR["receivers"]["otlp"]["protocols"]
    assert set(protocols) == {"grpc", "http"}
    for proto, default_port in (("grpc", "4317"), ("http", "4318")):
        endpoint = protocols[proto]["endpoint"]
        m = ENV_REF.fullmatch(endpoint)
        assert m, f"otlp {proto} endpoint {endpoint!r} must be ${{env:NAME:-default}}"
        assert m.group("default") == f"0.0.0.0:{default_port}"
        assert expand_env(endpoint, {m.group("name"): "127.0.0.1:9999"}) == "127.0.0.1:9999"


def test_exporter_endpoints_are_configurable_and_reach_the_backends() -> None:
    exporters = COLLECTOR["exporters"]
    for name, exporter in exporters.items():
        if "endpoint" in exporter:
            assert ENV_REF.fullmatch(exporter["endpoint"]), f"{name}: endpoint not configurable"
    traces = COLLECTOR["service"]["pipelines"]["traces"]["exporters"]
    metrics = COLLECTOR["service"]["pipelines"]["metrics"]["exporters"]
    assert traces == ["otlp/tempo"]
    assert expand_env(exporters["otlp/tempo"]["endpoint"]) == "tempo:4317"
    assert len(metrics) == 1
    metrics_exporter = exporters[metrics[0]]
    if metrics[0].startswith("otlphttp"):
        assert expand_env(metrics_exporter["endpoint"]) == "http://prometheus:9090/api/v1/otlp"
    else:  # remote write must then promote resource attributes itself
        assert metrics_exporter["resource_to_telemetry_conversion"]["enabled"] is True


def test_debug_exporter_defined_but_off() -> None:
    assert "debug" in COLLECTOR["exporters"]
    for pipeline in COLLECTOR["service"]["pipelines"].values():
        assert "debug" not in pipeline["exporters"]


def test_every_env_reference_has_a_default() -> None:
    text = (CONFIG_DIR / "otelcol.yaml").read_text(encoding="utf-8")
    refs = list(ENV_REF.finditer(text))
    assert refs
    for m in refs:
        assert m.group("default") is not None, f"{m.group(0)} has no default"


# --- compose ------------------------------------------------------------------------


def test_compose_images_are_pinned() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"otelcol", "tempo", "prometheus", "grafana"}
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag not in ("latest", "main", "nightly"), f"{name}: floating tag {tag!r}"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: tag {tag!r} is not a version"


def test_compose_ports_bound_to_loopback() -> None:
    seen = 0
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the 'IP:host:container' string form"
            assert port.startswith("127.0.0.1:"), f"{name}: port {port!r} not bound to loopback"
            seen += 1
    assert seen >= 5


def test_compose_mounts_exist_and_match_the_configs() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (CONFIG_DIR / source).exists(), f"{name}: {source} does not exist"
    otelcol = COMPOSE["services"]["otelcol"]
    mounted = {v.split(":")[1] for v in otelcol["volumes"]}
    config_flag = next(a for a in otelcol["command"] if a.startswith("--config="))
    assert config_flag.split("=", 1)[1] in mounted
    prometheus = COMPOSE["services"]["prometheus"]
    assert "--web.enable-otlp-receiver" in prometheus["command"]
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", prometheus["image"]), (
        "Prometheus' OTLP receiver flag needs Prometheus 3"
    )


def test_prometheus_promotes_the_resource_attributes_the_dashboards_filter_on() -> None:
    config = _yaml("prometheus.yml")
    assert config["otlp"]["translation_strategy"] == "UnderscoreEscapingWithSuffixes", (
        "the dashboards' metric names assume suffixes and underscore escaping"
    )
    promoted = config["otlp"]["promote_resource_attributes"]
    assert "service.name" in promoted
    names = json.loads((REPO / "tests/deploy/prometheus_names.json").read_text(encoding="utf-8"))
    for attribute in promoted:
        label = attribute.replace(".", "_")
        assert label in names["resource_labels"], f"{label} missing from resource_labels"
    assert config["storage"]["tsdb"]["out_of_order_time_window"]


def test_prometheus_config_scrape_section_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(promtool).exists(), (
        "promtool (shipped with Debian's prometheus package; `make test` installs it) not found"
    )
    config = _yaml("prometheus.yml")
    # Prometheus 2.x's promtool predates the `otlp:` and out-of-order settings; check the rest.
    config.pop("otlp")
    config.pop("storage")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tempo_receives_what_the_collector_sends_and_serves_grafana() -> None:
    tempo = _yaml("tempo.yaml")
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    sent_to = expand_env(COLLECTOR["exporters"]["otlp/tempo"]["endpoint"])
    assert grpc.rsplit(":", 1)[1] == sent_to.rsplit(":", 1)[1]
    assert grpc.startswith("0.0.0.0:"), "Tempo must listen beyond localhost inside its container"
    assert tempo["server"]["http_listen_port"] == 3200


# --- Grafana provisioning ---------------------------------------------------------


def test_grafana_datasources_point_at_the_stack() -> None:
    data = yaml.safe_load(
        (DASHBOARD_DIR / "provisioning/datasources/techrevati.yaml").read_text(encoding="utf-8")
    )
    by_type = {ds["type"]: ds for ds in data["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert (
        by_type["tempo"]["url"]
        == f"http://tempo:{_yaml('tempo.yaml')['server']['http_listen_port']}"
    )
    assert sum(1 for ds in data["datasources"] if ds.get("isDefault")) == 1


def test_grafana_dashboard_provider_points_at_the_dashboards_dir() -> None:
    data = yaml.safe_load(
        (DASHBOARD_DIR / "provisioning/dashboards/techrevati.yaml").read_text(encoding="utf-8")
    )
    (provider,) = data["providers"]
    path = provider["options"]["path"]
    grafana = COMPOSE["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert path in mounts, f"provider path {path} is not mounted into the grafana container"
    source = (CONFIG_DIR / mounts[path]).resolve()
    assert source == DASHBOARD_DIR.resolve()
    assert len(list(source.glob("*.json"))) == 5
    for target, src in mounts.items():
        if target.startswith("/etc/grafana/provisioning/"):
            kind = target.rsplit("/", 1)[1]
            assert (CONFIG_DIR / src).resolve() == (DASHBOARD_DIR / "provisioning" / kind).resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (DASHBOARD_DIR / home.rsplit("/", 1)[1]).exists()
