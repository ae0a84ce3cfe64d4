"""The bundled collector config, run by a real collector, feeding a real Prometheus.

`make collector` (part of `make test`) builds an OpenTelemetry Collector from
collector-config/builder-config.yaml with the Collector Builder, plus a test
build that adds the prometheusremotewrite exporter (tests/deploy/collector.py).
Nothing here is mocked: the module fixture

* starts Debian's Prometheus 2.42 on 127.0.0.1 with its remote-write receiver
  (it has no OTLP receiver; the shipped path to Prometheus 3 is checked by
  sending it to an OTLP/HTTP receiver standing in for Prometheus 3, see below);
* starts an OTLP/gRPC receiver standing in for Tempo, and an OTLP/HTTP receiver
  standing in for Prometheus 3's OTLP endpoint (tests/export/otlp_receiver.py);
* starts the collector with collector-config/otelcol.yaml as shipped, its
  addresses moved to free loopback ports by the environment variables the
  file reads, and tests/deploy/otelcol-remote-write.yaml merged over it
  (metrics additionally go to Prometheus by remote write);
* runs both programs in examples/ as subprocesses through configure() with
  the standard OTEL_* variables, once over OTLP/HTTP and once over OTLP/gRPC;
* runs the dashboard workload (tests/deploy/workload.py) through configure(),
  twice over HTTP and twice over gRPC, with metric exports between the passes;
* runs the fleet workload (tests/deploy/fleet_workload.py) as its own process
  against a real redis-server, since fleet metrics go to the global provider.

Then every dashboard PromQL target is asked as a range query over the run, the
way Grafana asks, with the dashboard variables at "All".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import collector, grafana, lint
from deploy.prom_server import INSTALL_HINT, PrometheusServer, find_binary
from deploy.workload import Expected, install_prices, run_once
from export.otlp_receiver import GrpcReceiver, HttpReceiver
from fleet.redis_server import RedisServer
from fleet.redis_server import free_port as free_redis_port
from techrevati.runtime import configure, usage_tracking
from techrevati.runtime.telemetry import semconv

REPO = Path(__file__).resolve().parents[1]
OTELCOL_YAML = REPO / "collector-config" / "otelcol.yaml"
SERVICE = "techrevati-collector-test"
EXAMPLES = {"examples.tiny_agent": "tiny-agent", "examples.decorated_agent": "decorated-agent"}
TRANSPORTS = {"http": "http/protobuf", "grpc": "grpc"}
#: Grafana's $__rate_interval for the provisioned datasource (timeInterval 60s): 4 x 60 s.
RATE_INTERVAL = "240s"
STEP_SECONDS = 15
STEP = f"{STEP_SECONDS}s"


@dataclass
class Stack:
    prometheus: PrometheusServer
    tempo: GrpcReceiver
    prometheus3: HttpReceiver
    otelcol: collector.Collector
    expected: Expected
    start: float
    end: float = 0.0
    example_runs: dict[tuple[str, str], subprocess.CompletedProcess[str]] = field(
        default_factory=dict
    )
    fleet: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, str]:
        return {
            "__rate_interval": RATE_INTERVAL,
            "__range": f"{math.ceil(self.end - self.start)}s",
            "__interval": STEP,
            "prometheus": "prometheus",
            "service": ".*",
            "agent": ".*",
            "model": ".*",
            "provider": ".*",
            "tool": ".*",
            "breaker": ".*",
        }

    def range_query(self, expr: str) -> list[dict[str, Any]]:
        query = grafana.substitute(expr, self.values())
        return self.prometheus.query_range(query, self.start, self.end, STEP)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path}: {collector.BUILD_HINT}", pytrace=False)
    return path


def _run_example(module: str, transport: str, endpoint: str, workdir: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TECHREVATI_"))}
    env.update(
        # This checkout's package first (the shared venv may point at another one).
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=TRANSPORTS[transport],
        OTEL_RESOURCE_ATTRIBUTES=f"test.transport={transport}",
    )
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run_fleet(endpoint: str, redis_url: str, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TECHREVATI_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
    )
    closed = f"redis://127.0.0.1:{free_redis_port()}/0"  # nothing listens there
    run = subprocess.run(
        [sys.executable, str(REPO / "tests/deploy/fleet_workload.py"), redis_url, closed],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = _require(collector.test_binary())
    prom_binary = find_binary()
    if prom_binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    workdir = tmp_path_factory.mktemp("otelcol")
    prometheus = PrometheusServer(
        prom_binary,
        tmp_path_factory.mktemp("prometheus"),
        [],
        extra_args=["--web.enable-remote-write-receiver"],
    )
    tempo = GrpcReceiver()
    prometheus3 = HttpReceiver()
    otelcol = collector.Collector(
        binary,
        [OTELCOL_YAML, collector.REMOTE_WRITE_OVERRIDE],
        workdir,
        {
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.port}",
            "PROMETHEUS_OTLP_ENDPOINT": prometheus3.endpoint,
            "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"{prometheus.url}/api/v1/write",
        },
    )
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    saved_prices = dict(usage_tracking.PRICING_TABLE)
    with tempo, prometheus3:
        try:
            redis.start()
            prometheus.start()
            otelcol.start()
            stack = Stack(prometheus, tempo, prometheus3, otelcol, Expected(), time.time() - 30)
            for transport in TRANSPORTS:
                endpoint = otelcol.http_endpoint if transport == "http" else otelcol.grpc_endpoint
                for module in EXAMPLES:
                    stack.example_runs[(module, transport)] = _run_example(
                        module, transport, endpoint, workdir
                    )
            stack.fleet = _run_fleet(otelcol.http_endpoint, redis.url, workdir)
            install_prices()
            for transport, endpoint in (
                ("http", otelcol.http_endpoint),
                ("grpc", otelcol.grpc_endpoint),
            ):
                handle = configure(
                    service_name=SERVICE,
                    endpoint=endpoint,
                    protocol=TRANSPORTS[transport],
                    set_global=False,
                    spans_file=False,
                    report=False,
                    metric_export_interval_s=1.0,
                    resource_attributes={"test.transport": transport},
                )
                assert handle.meter_provider is not None and handle.tracer_provider is not None
                # Two passes with exports between them: each series grows within the
                # range, so rate() sees an increase (one pass would leave only constants).
                for _ in range(2):
                    run_once(handle.meter_provider, handle.tracer_provider, stack.expected)
                    time.sleep(2.5)
                handle.shutdown()
            sessions = sum(stack.expected.sessions.values())
            prometheus.wait_for(
                f'sum(techrevati_sessions_total{{service_name="{SERVICE}"}})',
                lambda r: bool(r) and float(r[0]["value"][1]) == sessions,
                timeout=60,
            )
            # Grafana evaluates a range query at start, start + step, ... end: put the last
            # step at the end of the run, and the range on whole steps before it.
            stack.end = time.time() + 1
            steps = math.ceil((stack.end - stack.start) / STEP_SECONDS)
            stack.start = stack.end - steps * STEP_SECONDS
            yield stack
        finally:
            usage_tracking.PRICING_TABLE.clear()
            usage_tracking.PRICING_TABLE.update(saved_prices)
            otelcol.stop()
            prometheus.stop()
            redis.stop()


# --- the builds ------------------------------------------------------------------------


def _types_used(config: dict[str, Any]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors"):
        used[kind] = {key.split("/", 1)[0] for key in config.get(kind) or {}}
    return used


SHIPPED_CONFIG = yaml.safe_load(OTELCOL_YAML.read_text(encoding="utf-8"))
#: The alternative config (tail sampling); the build serves both files.
TAIL_CONFIG = yaml.safe_load(
    (REPO / "collector-config" / "otelcol-tail-sampling.yaml").read_text(encoding="utf-8")
)


def _both_configs() -> dict[str, set[str]]:
    used = _types_used(SHIPPED_CONFIG)
    for kind, types in _types_used(TAIL_CONFIG).items():
        used[kind] = used[kind] | types
    return used


def test_shipped_build_has_exactly_the_components_the_configs_use() -> None:
    binary = _require(collector.shipped_binary())
    assert collector.components(binary) == _both_configs()


def test_test_build_adds_only_the_remote_write_exporter() -> None:
    binary = _require(collector.test_binary())
    built = collector.components(binary)
    wanted = _both_configs()
    wanted["exporters"] = wanted["exporters"] | {"prometheusremotewrite"}
    assert built == wanted


def test_binaries_report_the_pinned_release() -> None:
    for binary in (collector.shipped_binary(), collector.test_binary()):
        out = subprocess.run(
            [str(_require(binary)), "--version"], capture_output=True, text=True, timeout=60
        )
        assert out.stdout.strip().endswith(f"version {collector.release()}"), out.stdout


LOOPBACK = {
    "OTELCOL_OTLP_GRPC_ENDPOINT": "127.0.0.1:14317",
    "OTELCOL_OTLP_HTTP_ENDPOINT": "127.0.0.1:14318",
    "OTELCOL_HEALTH_ENDPOINT": "127.0.0.1:13133",
    "OTELCOL_METRICS_HOST": "127.0.0.1",
    "OTELCOL_METRICS_PORT": "18888",
    "TEMPO_OTLP_ENDPOINT": "127.0.0.1:24317",
    "PROMETHEUS_OTLP_ENDPOINT": "http://127.0.0.1:29090/api/v1/otlp",
}


@pytest.mark.parametrize(
    "overrides", [LOOPBACK, {}], ids=["loopback-overrides", "compose-defaults"]
)
def test_shipped_config_validates(overrides: dict[str, str]) -> None:
    binary = _require(collector.shipped_binary())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL", "TEMPO", "PROMETHEUS"))}
    result = collector.validate(binary, [OTELCOL_YAML], {**env, **overrides})
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_rejects_a_key_the_release_does_not_know(tmp_path: Path) -> None:
    """Without this, a passing validate could mean the command checks nothing."""
    binary = _require(collector.shipped_binary())
    broken = yaml.safe_load(OTELCOL_YAML.read_text(encoding="utf-8"))
    broken["exporters"]["otlp/tempo"]["no_such_setting"] = True
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = collector.validate(binary, [path], dict(os.environ))
    assert result.returncode != 0
    assert "no_such_setting" in result.stdout + result.stderr


def test_remote_write_override_validates() -> None:
    binary = _require(collector.test_binary())
    env = {**os.environ, **LOOPBACK, "PROMETHEUS_REMOTE_WRITE_ENDPOINT": "http://127.0.0.1:1/w"}
    result = collector.validate(binary, [OTELCOL_YAML, collector.REMOTE_WRITE_OVERRIDE], env)
    assert result.returncode == 0, result.stdout + result.stderr


# --- spans reach Tempo's stand-in ------------------------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("module", list(EXAMPLES))
def test_example_spans_reach_tempo(stack: Stack, module: str, transport: str) -> None:
    run = stack.example_runs[(module, transport)]
    assert run.returncode == 0, run.stdout + run.stderr
    service = EXAMPLES[module]

    def mine() -> list[tuple[dict[str, Any], Any]]:
        return [
            (resource, span)
            for resource, span in stack.tempo.received.spans()
            if resource.get("service.name") == service
            and resource.get("test.transport") == transport
        ]

    stack.tempo.received.wait_for(lambda _: bool(mine()), timeout=30)
    spans = mine()
    names = {span.name for _, span in spans}
    assert any(name.startswith(f"{semconv.OP_INVOKE_AGENT} ") for name in names), names
    assert any(name.startswith(f"{semconv.OP_CHAT}") for name in names), names
    for resource, _ in spans:
        # Added by the config's resourcedetection processor (system detector); the
        # Python SDK does not set them.
        assert resource["host.name"] == socket.gethostname()
        assert resource["os.type"] == "linux"


def test_workload_sessions_reach_tempo_over_both_transports(stack: Stack) -> None:
    def sessions() -> dict[str, int]:
        found: dict[str, int] = {}
        for resource, span in stack.tempo.received.spans():
            if resource.get("service.name") == SERVICE and span.name.startswith(
                semconv.OP_INVOKE_AGENT
            ):
                transport = resource["test.transport"]
                found[transport] = found.get(transport, 0) + 1
        return found

    per_run = sum(stack.expected.sessions.values()) // 2
    wanted = {"http": per_run, "grpc": per_run}
    with contextlib.suppress(AssertionError):  # the collector batches for up to 2 s
        stack.tempo.received.wait_for(lambda _: sessions() == wanted, timeout=30)
    assert sessions() == wanted


def test_shipped_metrics_exporter_delivers_to_the_prometheus3_stand_in(stack: Stack) -> None:
    """otlphttp/prometheus, as shipped, sends OTLP/HTTP with the detected resource."""
    got = stack.prometheus3.received.metrics_by_name()
    assert semconv.METRIC_SESSIONS in got and semconv.METRIC_COST in got
    resource, _ = got[semconv.METRIC_SESSIONS]
    assert resource["host.name"] == socket.gethostname()


# --- metrics reach Prometheus ------------------------------------------------------------


def test_prometheus_holds_the_collector_spellings(stack: Stack) -> None:
    names = grafana.load_names()
    held = stack.prometheus.metric_names()
    for metric, info in names["metrics"].items():
        if metric in names["not_yet_observed"]["metrics"]:
            continue
        base = info["collector"]
        wanted = (
            [base + s for s in ("_bucket", "_sum", "_count")]
            if info["instrument"] == "histogram"
            else [base]
        )
        for name in wanted:
            assert name in held, f"{metric}: {name} not in Prometheus; it holds {sorted(held)}"
    series = lint.known_series(names)
    ours = {n for n in held if n.startswith(("techrevati_", "gen_ai_"))}
    assert ours <= set(series), f"unrecorded metric names: {sorted(ours - set(series))}"


def test_service_name_is_promoted(stack: Stack) -> None:
    found = {s.get("service_name") for s in stack.prometheus.series("techrevati_sessions_total")}
    assert {SERVICE, "tiny-agent", "decorated-agent"} <= found


DASHBOARDS = {path.name: grafana.load(path) for path in grafana.dashboard_files()}


PROM_TARGETS = [
    t
    for path in grafana.dashboard_files()
    for t in grafana.iter_targets(path, DASHBOARDS[path.name])
    if t.datasource_type == "prometheus" and not lint.needs_what_a_workload_lacks(t.target["expr"])
]


@pytest.mark.parametrize("target", PROM_TARGETS, ids=lambda t: t.where)
def test_target_returns_data_as_a_range_query(stack: Stack, target: grafana.Target) -> None:
    expr = target.target["expr"].replace(" or vector(0)", "")
    result = stack.range_query(expr)
    assert result, f"{target.where}: no data for {grafana.substitute(expr, stack.values())}"
    values = [float(v) for series in result for _, v in series["values"]]
    finite = [v for v in values if math.isfinite(v)]
    assert any(v > 0 for v in finite), f"{target.where}: nothing above zero: {result}"


def test_totals_equal_the_sessions_ledgers(stack: Stack) -> None:
    """Cost, sessions and limit hits through the collector equal what the sessions booked.

    The examples run under other service names and count too, so these panels are
    asked with the Service filter set to this workload's service.
    """
    e = stack.expected

    def scalar(dashboard: str, title: str) -> float:
        for panel in grafana.iter_panels(DASHBOARDS[dashboard]):
            if panel.get("title") == title:
                expr = panel["targets"][0]["expr"].replace('=~"$service"', f'="{SERVICE}"')
                (series,) = stack.range_query(expr)
                return float(series["values"][-1][1])
        raise KeyError(title)

    assert scalar("sessions-overview.json", "Cost") == pytest.approx(e.cost_usd, rel=1e-9)
    assert scalar("sessions-overview.json", "Sessions") == sum(e.sessions.values())
    assert scalar("sessions-overview.json", "Tokens") == e.tokens
    assert scalar("reliability.json", "Budget hits") == e.limit_hits["budget"]
    assert scalar("reliability.json", "Iteration-cap hits") == e.limit_hits["max_iterations"]


def test_fleet_panels_equal_what_the_fleet_booked(stack: Stack) -> None:
    """Fleet spend and refusals through the collector equal the fleet process' own view."""
    fleet = stack.fleet
    assert all(fleet["refusals"].values()), fleet
    panels = {p["title"]: p for p in grafana.iter_panels(DASHBOARDS["budgets.json"])}

    def last_by(title: str, *labels: str) -> dict[str, float]:
        result = stack.range_query(panels[title]["targets"][0]["expr"])
        return {
            "/".join(s["metric"][label] for label in labels): float(s["values"][-1][1])
            for s in result
        }

    spend = last_by("Fleet spend by scope", "techrevati_fleet_scope")
    # A shared session is one more store scope, labelled by its parent's role: the
    # parent's call and its remote child's, both booked in it.
    assert spend.pop("shared-session:planner") == pytest.approx(fleet["shared_usd"], rel=1e-9)
    assert spend == pytest.approx(fleet["spent_usd"], rel=1e-9)
    refusals = last_by(
        "Fleet refusals by scope and kind", "techrevati_fleet_scope", "techrevati_limit_kind"
    )
    assert refusals == fleet["refusals"]
    # Each call made while the store is unreachable fails its one admission round trip.
    (errors,) = stack.range_query(panels["Fleet store errors"]["targets"][0]["expr"])
    assert float(errors["values"][-1][1]) == fleet["calls_while_down"]


TEMPO_TARGETS = [
    t
    for path in grafana.dashboard_files()
    for t in grafana.iter_targets(path, DASHBOARDS[path.name])
    if t.datasource_type == "tempo" and t.target.get("queryType") == "traceql"
]


@pytest.mark.parametrize("target", TEMPO_TARGETS, ids=lambda t: t.where)
def test_traceql_names_occur_on_the_spans_that_reached_tempo(
    stack: Stack, target: grafana.Target
) -> None:
    """Tempo cannot run here; the next best: every attribute and event a TraceQL query
    names is on a span the collector delivered from this run's sessions."""
    span_keys: set[str] = set()
    resource_keys: set[str] = set()
    events: set[str] = set()
    for resource, span in stack.tempo.received.spans():
        resource_keys |= set(resource)
        span_keys |= {kv.key for kv in span.attributes}
        events |= {event.name for event in span.events}
    query = target.target["query"]
    for scope, name in re.findall(r"\b(span|resource)\.([A-Za-z_][A-Za-z0-9_.]*)", query):
        assert name in (span_keys if scope == "span" else resource_keys), (
            f"{target.where}: no delivered span has {scope}.{name}"
        )
    for event in re.findall(r'event:name\s*=\s*"([^"]+)"', query):
        assert event in events, f"{target.where}: no delivered span has event {event!r}"
