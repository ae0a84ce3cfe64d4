"""Structural checks of the bundled deployment: collector, compose, backends, provisioning.

These read the files the way the programs would and check that the pieces agree
with each other: the builder manifest names exactly the components otelcol.yaml
uses, at the release compose pins; pipelines name defined components; listen
addresses are configurable; images are pinned; ports stay on loopback; every
OTLP port is paired with its protocol; the Grafana provisioning points at the
dashboards that exist. test_collector_live.py builds and runs the collector
itself; Grafana, Tempo and Prometheus 3 cannot run here, so their side stays
structural.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import collector, ports

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "collector-config"
DASHBOARD_DIR = REPO / "dashboards"

MANIFEST = collector.load_manifest()
COLLECTOR_VERSION = collector.release()
CORE = "go.opentelemetry.io/collector/"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib/"
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


def _manifest_modules(manifest: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors"):
        out[kind] = []
        for entry in manifest.get(kind) or []:
            module, version = entry["gomod"].split()
            out[kind].append((module, version))
    return out


def _component_type(module: str) -> str:
    """otlpreceiver -> otlp, memorylimiterprocessor -> memorylimiter, ... (module naming)."""
    name = module.rsplit("/", 1)[1]
    for suffix in ("receiver", "processor", "exporter", "extension", "connector"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise AssertionError(f"{module}: not a component module")


def test_manifest_pins_one_release_for_core_and_contrib() -> None:
    assert MANIFEST["dist"]["version"] == COLLECTOR_VERSION
    additions = yaml.safe_load(collector.TEST_ADDITIONS.read_text(encoding="utf-8"))
    for manifest in (MANIFEST, additions):
        for kind, modules in _manifest_modules(manifest).items():
            for module, version in modules:
                assert module.startswith((CORE, CONTRIB)), f"{kind}: {module} is not upstream"
                assert version == f"v{COLLECTOR_VERSION}", f"{module} {version}"


def test_manifest_has_exactly_the_components_the_configs_use() -> None:
    """otelcol.yaml and its alternative, otelcol-tail-sampling.yaml, together."""
    tail = _yaml("otelcol-tail-sampling.yaml")
    for kind, modules in _manifest_modules(MANIFEST).items():
        built = {_component_type(module) for module, _ in modules}
        # A component's type drops the underscores its module name cannot have.
        keys = [*(COLLECTOR.get(kind) or {}), *(tail.get(kind) or {})]
        used = {key.split("/", 1)[0].replace("_", "") for key in keys}
        assert built == used, f"{kind}: manifest builds {sorted(built)}, config uses {sorted(used)}"


def test_test_additions_only_add_the_remote_write_exporter() -> None:
    additions = yaml.safe_load(collector.TEST_ADDITIONS.read_text(encoding="utf-8"))
    assert set(additions) == {"exporters"}
    assert [e["gomod"].split()[0] for e in additions["exporters"]] == [
        CONTRIB + "exporter/prometheusremotewriteexporter"
    ]
    override = yaml.safe_load(collector.REMOTE_WRITE_OVERRIDE.read_text(encoding="utf-8"))
    shipped = COLLECTOR["service"]["pipelines"]["metrics"]["exporters"]
    # The shipped exporter stays in the pipeline; remote write is added beside it.
    assert override["service"]["pipelines"]["metrics"]["exporters"] == [
        *shipped,
        "prometheusremotewrite",
    ]
    assert set(override["service"]["pipelines"]) == {"metrics"}
    rw = override["exporters"]["prometheusremotewrite"]
    assert rw["resource_to_telemetry_conversion"]["enabled"] is True


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
    # promtool also checks the rule files the config names, next to it as in compose.
    assert config["rule_files"] == ["alerts.yml"]
    shutil.copy(CONFIG_DIR / "alerts.yml", tmp_path / "alerts.yml")
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


# --- ports and protocols ----------------------------------------------------------


PAIRING_FILES = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("**/*.md"),
        *CONFIG_DIR.glob("*.yaml"),
        *CONFIG_DIR.glob("*.yml"),
        REPO / "src/techrevati/runtime/telemetry/setup/configure.py",
    ]
)


@pytest.mark.parametrize("path", PAIRING_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_otlp_port_is_paired_with_its_protocol(path: Path) -> None:
    problems = ports.text_problems(path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(f"{path.name}:{n}: {line!r}: {why}" for n, line, why in problems)


@pytest.mark.parametrize(
    "line",
    [
        # compose.yaml line 4 before issue 15: HTTP/protobuf by default, sent to the gRPC port
        "#   export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317   # then run your agent",
        'configure(endpoint="http://127.0.0.1:4317")',
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318",
        "| `otelcol` | 4317 (OTLP/HTTP), 4318 (OTLP/gRPC) |",
    ],
)
def test_pairing_check_catches_a_swapped_port(line: str) -> None:
    assert ports.line_problems(line)


def test_compose_publishes_each_receiver_under_its_protocols_variable() -> None:
    protocols = COLLECTOR["receivers"]["otlp"]["protocols"]
    published = {}
    for mapping in COMPOSE["services"]["otelcol"]["ports"]:
        m = re.fullmatch(r"127\.0\.0\.1:\$\{(\w+):-(\d+)\}:(\d+)", mapping)
        assert m, mapping
        published[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    for proto, variable, port in (
        ("grpc", "OTLP_GRPC_PORT", ports.GRPC_PORT),
        ("http", "OTLP_HTTP_PORT", ports.HTTP_PORT),
    ):
        container_port = int(expand_env(protocols[proto]["endpoint"]).rsplit(":", 1)[1])
        assert container_port == port, f"otlp {proto} receiver listens on {container_port}"
        assert published[variable] == (port, port), f"{variable}: {published[variable]}"


def test_compose_publishes_the_ports_the_backends_listen_on() -> None:
    services = COMPOSE["services"]
    tempo_port = _yaml("tempo.yaml")["server"]["http_listen_port"]
    assert services["tempo"]["ports"] == [f"127.0.0.1:${{TEMPO_PORT:-{tempo_port}}}:{tempo_port}"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"]
    assert services["grafana"]["ports"] == ["127.0.0.1:${GRAFANA_PORT:-3000}:3000"]
    prom_url = expand_env(COLLECTOR["exporters"]["otlphttp/prometheus"]["endpoint"])
    assert prom_url.startswith("http://prometheus:9090/")


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
