"""Every dashboard query against a real Prometheus fed by a real workload.

A module fixture starts Debian's Prometheus on 127.0.0.1 (temp config and TSDB,
1 s scrapes), exposes the package's metrics with the OpenTelemetry Prometheus
exporter, and runs the workload in tests/deploy/workload.py twice (so rate()
windows hold increases). Then:

* the metric names Prometheus holds are exactly the spellings recorded in
  tests/deploy/prometheus_names.json, with no label the table does not declare;
* every PromQL target of every dashboard, Grafana variables substituted, returns
  data with a positive value; every filter variable lists the workload's values;
* the numbers that matter equal the package's own ledger: total cost, cost per
  model and role, sessions by outcome, tokens, denials, limit hits by kind,
  guardrail violations, recovery attempts, the open breaker.

The exporter promotes service.name to a label, as the bundled collector path
does through Prometheus' OTLP receiver, so the Service filter is exercised too.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, start_http_server

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import grafana, lint, promql
from deploy.prom_server import INSTALL_HINT, PrometheusServer, find_binary, free_port
from deploy.workload import BREAKER_NAME, PROVIDERS, Expected, install_prices, run_once
from techrevati.runtime import usage_tracking
from techrevati.runtime.telemetry import semconv

SERVICE = "techrevati-dashboard-test"
#: Resource attributes promoted to labels (collector-config/prometheus.yml promotes the same).
PROMOTED = {"service.name", "service.namespace", "service.version", "deployment.environment.name"}
#: Wide enough to cover everything the test wrote; nothing existed before the range.
WINDOW = "10m"
VALUES = {
    "__rate_interval": WINDOW,
    "__range": WINDOW,
    "__interval": "15s",
    "prometheus": "prometheus",
    "service": ".*",
    "agent": ".*",
    "model": ".*",
    "provider": ".*",
    "tool": ".*",
    "breaker": ".*",
}
DASHBOARDS = {path.name: grafana.load(path) for path in grafana.dashboard_files()}
#: The fleet level records on the global MeterProvider, which this test's in-process
#: providers are not; test_collector_live.py runs a fleet process and asks these panels.
FLEET_METRICS = frozenset(
    {
        semconv.METRIC_FLEET_COST,
        semconv.METRIC_FLEET_REFUSALS,
        semconv.METRIC_FLEET_STORE_ERRORS,
        semconv.METRIC_FLEET_BUDGET,
        semconv.METRIC_FLEET_WINDOW,
        semconv.METRIC_FLEET_SPENT,
        semconv.METRIC_FLEET_DROPPED,
        semconv.METRIC_FLEET_EVICTIONS,
    }
)


def _fleet(target: grafana.Target) -> bool:
    return any(
        s.metric in FLEET_METRICS
        for sel in promql.selectors(promql.parse(target.target["expr"]))
        for s in lint.resolve(sel, lint.package_series())[0]
    )


PROM_TARGETS = [
    t
    for path in grafana.dashboard_files()
    for t in grafana.iter_targets(path, DASHBOARDS[path.name])
    if t.datasource_type == "prometheus"
    and not _fleet(t)
    and not lint.needs_what_a_workload_lacks(t.target["expr"])
]
QUERY_VARIABLES = [
    (name, var)
    for name, dash in DASHBOARDS.items()
    for var in grafana.variables(dash)
    if var["type"] == "query"
]


@dataclass
class Stack:
    prometheus: PrometheusServer
    expected: Expected

    def run(self, expr: str) -> list[dict[str, Any]]:
        return self.prometheus.query(grafana.substitute(expr, VALUES))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = find_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(
        registry=registry, resource_attribute_filter=lambda key: key in PROMOTED
    )
    resource = Resource.create({"service.name": SERVICE, "service.version": "0.0.0-test"})
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    tracer_provider = TracerProvider(resource=resource)
    port = free_port()
    http_server, http_thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus = PrometheusServer(
        binary, tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{port}"]
    )
    saved_prices = dict(usage_tracking.PRICING_TABLE)
    try:
        prometheus.start()
        install_prices()
        expected = Expected()
        for _ in range(2):  # two runs with a scrape between them: rate() sees increases
            run_once(meter_provider, tracer_provider, expected)
            total = sum(expected.sessions.values())
            prometheus.wait_for(
                "sum(techrevati_sessions_total)",
                lambda r, total=total: bool(r) and float(r[0]["value"][1]) == total,
                timeout=30,
            )
        # one more scrape so every series, not only the sessions counter, is current
        time.sleep(1.2)
        yield Stack(prometheus, expected)
    finally:
        usage_tracking.PRICING_TABLE.clear()
        usage_tracking.PRICING_TABLE.update(saved_prices)
        prometheus.stop()
        http_server.shutdown()
        http_server.server_close()
        http_thread.join(timeout=5)
        meter_provider.shutdown()
        tracer_provider.shutdown()


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def _target(dashboard: str, title: str, ref: str = "A") -> str:
    for panel in grafana.iter_panels(DASHBOARDS[dashboard]):
        if panel.get("title") == title:
            for target in panel["targets"]:
                if target["refId"] == ref:
                    expr: str = target["expr"]
                    return expr
    raise KeyError(f"{dashboard}: no panel {title!r} with refId {ref}")


def _scalar(stack: Stack, dashboard: str, title: str) -> float:
    result = stack.run(_target(dashboard, title))
    assert len(result) == 1, f"{dashboard} / {title}: expected one value, got {result}"
    return float(result[0]["value"][1])


def _by(stack: Stack, dashboard: str, title: str, *labels: str) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for sample in stack.run(_target(dashboard, title)):
        key = tuple(sample["metric"].get(label, "") for label in labels)
        out[key[0] if len(key) == 1 else key] = float(sample["value"][1])
    return out


# --- names ---------------------------------------------------------------------------


def test_prometheus_holds_exactly_the_recorded_spellings(stack: Stack) -> None:
    names = grafana.load_names()
    held = stack.prometheus.metric_names()
    series = lint.known_series(names)
    for metric, info in names["metrics"].items():
        # Lost spans are counted by configure()'s pipelines; this test's providers are the
        # SDK's own (tests/test_collector_live.py and test_alerts_live.py see the counter).
        skipped = {
            *names["not_yet_observed"]["metrics"],
            *names["zero_in_live_workloads"]["metrics"],
        }
        if metric in FLEET_METRICS or metric in skipped:
            continue
        base = info["scrape"]
        wanted = (
            [base + s for s in ("_bucket", "_sum", "_count")]
            if info["instrument"] == "histogram"
            else [base]
        )
        for name in wanted:
            assert name in held, f"{metric}: {name} not in Prometheus; it holds {sorted(held)}"
            for labels in stack.prometheus.series(f'{{__name__="{name}"}}'):
                extra = set(labels) - series[name].labels - {"__name__"}
                assert not extra, (
                    f"{name} carries labels {sorted(extra)} that prometheus_names.json does "
                    f"not declare for {metric}: the dashboards' filters would not know them"
                )
    ours = {n for n in held if n.startswith(("techrevati_", "gen_ai_"))}
    assert ours <= set(series), f"unrecorded metric names: {sorted(ours - set(series))}"


def test_service_name_is_a_label_like_on_the_collector_path(stack: Stack) -> None:
    result = stack.prometheus.query(f'sum by (service_name) ({{service_name="{SERVICE}"}})')
    assert result, "service.name was not promoted to the service_name label"


# --- every query returns data ---------------------------------------------------------


@pytest.mark.parametrize("target", PROM_TARGETS, ids=lambda t: t.where)
def test_target_returns_data(stack: Stack, target: grafana.Target) -> None:
    # `or vector(0)` keeps a KPI at 0 when nothing happened; here it must not be what answers.
    expr = target.target["expr"].replace(" or vector(0)", "")
    result = stack.run(expr)
    assert result, f"{target.where}: no data for {grafana.substitute(expr, VALUES)}"
    values = _values(result)
    finite = [v for v in values if math.isfinite(v)]
    assert finite, f"{target.where}: only NaN/Inf: {result}"
    assert any(v > 0 for v in finite), f"{target.where}: nothing above zero: {result}"


@pytest.mark.parametrize(
    "dashboard,variable",
    QUERY_VARIABLES,
    ids=[f"{name}:${var['name']}" for name, var in QUERY_VARIABLES],
)
def test_filter_variable_lists_the_workload_values(
    stack: Stack, dashboard: str, variable: dict[str, Any]
) -> None:
    query = grafana.substitute(variable["definition"], VALUES)
    selector, label = promql.parse_label_values(query)
    assert selector is not None
    match = re.sub(r"^\s*label_values\(\s*|\s*,\s*\w+\s*\)\s*$", "", query)
    found = {s[label] for s in stack.prometheus.series(match) if label in s}
    expected = stack.expected
    wanted = {
        "service": {SERVICE},
        "agent": expected.roles,
        "model": expected.models,
        "provider": set(PROVIDERS.values()),
        "tool": expected.tools,
        "breaker": {BREAKER_NAME},
    }[variable["name"]]
    assert found == wanted, f"{dashboard}: ${variable['name']} lists {found}, expected {wanted}"


# --- the numbers are right -----------------------------------------------------------

OVERVIEW = "sessions-overview.json"
TOOLS = "tools-permissions.json"
RELIABILITY = "reliability.json"


def test_cost_equals_the_sessions_ledgers(stack: Stack) -> None:
    e = stack.expected
    assert e.cost_usd > 0
    assert _scalar(stack, OVERVIEW, "Cost") == pytest.approx(e.cost_usd, rel=1e-9)
    by_model = _by(stack, OVERVIEW, "Cost by model", "gen_ai_request_model")
    # A model with no price books $0, and a counter never shows a zero increment.
    priced = {k: v for k, v in e.cost_by_model.items() if v}
    assert by_model == pytest.approx(priced, rel=1e-9)
    by_role = _by(stack, OVERVIEW, "Cost by agent role", "gen_ai_agent_name")
    assert by_role == pytest.approx({k: v for k, v in e.cost_by_role.items() if v}, rel=1e-9)
    sessions = sum(e.sessions.values())
    assert _scalar(stack, OVERVIEW, "Cost per session") == pytest.approx(
        e.cost_usd / sessions, rel=1e-9
    )


def test_sessions_and_outcomes(stack: Stack) -> None:
    e = stack.expected
    total = sum(e.sessions.values())
    assert _scalar(stack, OVERVIEW, "Sessions") == total
    assert _scalar(stack, OVERVIEW, "Success rate") == pytest.approx(
        e.sessions["completed"] / total, rel=1e-12
    )
    assert _scalar(stack, OVERVIEW, "Failed sessions") == e.sessions["failed"]
    assert _scalar(stack, RELIABILITY, "Failed sessions") == e.sessions["failed"]
    by_role = _by(
        stack,
        OVERVIEW,
        "Sessions by role and outcome",
        "gen_ai_agent_name",
        "techrevati_session_outcome",
    )
    assert by_role == dict(e.sessions_by_role)


def test_tokens_and_model_calls(stack: Stack) -> None:
    e = stack.expected
    assert _scalar(stack, OVERVIEW, "Tokens") == e.tokens
    assert _scalar(stack, OVERVIEW, "Model calls") == e.model_calls


def test_tool_calls_and_denials(stack: Stack) -> None:
    e = stack.expected
    calls = sum(e.tool_calls.values())
    assert e.tool_calls["deny"] > 0
    assert _scalar(stack, OVERVIEW, "Tool calls") == calls
    assert _scalar(stack, OVERVIEW, "Permission denials") == e.tool_calls["deny"]
    assert _scalar(stack, TOOLS, "Tool calls") == calls
    assert _scalar(stack, TOOLS, "Allowed") == e.tool_calls["allow"]
    assert _scalar(stack, TOOLS, "Denied") == e.tool_calls["deny"]
    assert _scalar(stack, TOOLS, "Denial rate") == pytest.approx(
        e.tool_calls["deny"] / calls, rel=1e-12
    )
    assert _scalar(stack, TOOLS, "Tool calls with an error") == e.tool_errors
    denials = _by(stack, TOOLS, "Denials by tool and role", "gen_ai_agent_name", "gen_ai_tool_name")
    assert denials == dict(e.denials)


def test_loops_by_pattern_tool_and_role(stack: Stack) -> None:
    e = stack.expected
    assert e.loops and e.limit_hits["loop"] > 0
    loops = _by(
        stack,
        TOOLS,
        "Loops detected by pattern, tool and role",
        "techrevati_loop_pattern",
        "gen_ai_tool_name",
        "gen_ai_agent_name",
    )
    assert loops == dict(e.loops)


def test_limit_hits_per_kind(stack: Stack) -> None:
    e = stack.expected
    assert e.limit_hits["budget"] > 0 and e.limit_hits["max_iterations"] > 0
    for dashboard in (OVERVIEW, RELIABILITY):
        assert _scalar(stack, dashboard, "Budget hits") == e.limit_hits["budget"]
        assert _scalar(stack, dashboard, "Iteration-cap hits") == e.limit_hits["max_iterations"]
    by_kind = _by(stack, RELIABILITY, "Limit hits by kind", "techrevati_limit_kind")
    assert by_kind == dict(e.limit_hits)


def test_guardrails_recovery_and_breaker(stack: Stack) -> None:
    e = stack.expected
    for dashboard in (OVERVIEW, TOOLS, RELIABILITY):
        assert _scalar(stack, dashboard, "Guardrail violations") == e.guardrail_violations
    assert e.recovery_attempts > 0
    assert _scalar(stack, RELIABILITY, "Recovery attempts") == e.recovery_attempts
    assert _scalar(stack, RELIABILITY, "Breakers open now") == 1
    timeline = _by(stack, RELIABILITY, "Breaker state timeline", "techrevati_breaker_name")
    assert timeline == {BREAKER_NAME: 2.0}


BUDGETS = "budgets.json"


def test_budget_panels_equal_the_sessions_ledgers(stack: Stack) -> None:
    e = stack.expected
    assert e.utilization and e.limit_hits["unpriced"] > 0
    assert _scalar(stack, BUDGETS, "Sessions with a budget") == len(e.utilization)
    assert _scalar(stack, BUDGETS, "Mean budget utilisation") == pytest.approx(
        sum(e.utilization) / len(e.utilization), rel=1e-9
    )
    assert _scalar(stack, BUDGETS, "Refusals") == sum(e.limit_hits.values())
    assert _scalar(stack, BUDGETS, "Unpriced refusals") == e.limit_hits["unpriced"]
    by_kind = _by(stack, BUDGETS, "Refusals by limit kind", "techrevati_limit_kind")
    assert by_kind == dict(e.limit_hits)


def test_token_shares_and_calls_booked_at_zero(stack: Stack) -> None:
    e = stack.expected
    assert e.cache_read_tokens > 0 and e.reasoning_tokens > 0
    assert _scalar(stack, BUDGETS, "Cache-hit share of input tokens") == pytest.approx(
        e.cache_read_tokens / e.input_tokens, rel=1e-9
    )
    assert _scalar(stack, BUDGETS, "Reasoning share of output tokens") == pytest.approx(
        e.reasoning_tokens / e.output_tokens, rel=1e-9
    )
    assert _scalar(stack, BUDGETS, "Calls without usage") == e.calls_without_usage
    assert _scalar(stack, BUDGETS, "Unpriced calls") == e.unpriced_calls
