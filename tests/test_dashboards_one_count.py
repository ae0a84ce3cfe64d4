"""Each model call counts once in the dashboards, beside another GenAI client instrumentation.

With the official OpenAI instrumentation switched on (``configure(instrument=["openai"])``)
one call inside ``@agent_turn`` is recorded twice in ``gen_ai.client.token.usage`` and
``gen_ai.client.operation.duration``: by our turn (labelled with the session's
``gen_ai.agent.name``, or none outside a session) and by the official span inside it
(``server.address``, ``gen_ai.response.model``, no agent). A real Prometheus scrapes
both producers (tests/deploy/two_producers.py: one call in a session, one outside any);
every dashboard query of a gen_ai_client_* metric, its variables at "All", must count
each call once: the same value as when it reads only our instrumentation scope
(``otel_scope_name``, a label this scrape path keeps), and the token and call KPIs
equal what the calls used. Before dashboards/build.py left the other producer's
series out, "All" ("$agent" = ".*" also matches no agent label) showed them twice.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import grafana, two_producers
from deploy.prom_server import INSTALL_HINT, PrometheusServer, find_binary, free_port
from techrevati.runtime.telemetry import semconv

HERE = Path(__file__).resolve().parent
WINDOW = "10m"
DASHBOARDS = {path.name: grafana.load(path) for path in grafana.dashboard_files()}
CLIENT_METRIC = re.compile(r"\bgen_ai_client_\w+")
OURS = f'otel_scope_name="{semconv.INSTRUMENTATION_SCOPE}"'
ONE_CALL = two_producers.INPUT_TOKENS + two_producers.OUTPUT_TOKENS


def _all_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Grafana's values for the dashboard's variables, each query variable at "All"."""
    values = {
        "__rate_interval": WINDOW,
        "__range": WINDOW,
        "__interval": "15s",
        "prometheus": "prometheus",
    }
    for var in grafana.variables(dashboard):
        if var["type"] == "query":
            values[var["name"]] = var["allValue"]
    return values


CLIENT_TARGETS = [
    t
    for path in grafana.dashboard_files()
    for t in grafana.iter_targets(path, DASHBOARDS[path.name])
    if t.datasource_type == "prometheus" and CLIENT_METRIC.search(t.target["expr"])
]


def _ours_only(expr: str) -> str:
    """``expr`` with every gen_ai_client_* selector restricted to our instrumentation scope."""

    def repl(m: re.Match[str]) -> str:
        name, braces = m.group(1), m.group(2)
        return f"{name}{{{OURS}, " if braces else f"{name}{{{OURS}}}"

    return re.sub(r"\b(gen_ai_client_\w+)(\{)?", repl, expr)


class Stack:
    def __init__(self, prometheus: PrometheusServer, at: float) -> None:
        self.prometheus = prometheus
        self.at = at

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at one fixed time, so two queries compare like for like."""
        data = self.prometheus.api("/api/v1/query", {"query": expr, "time": f"{self.at:.3f}"})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = find_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    port = free_port()
    producer = subprocess.Popen(
        [sys.executable, "-m", "deploy.two_producers", str(port)],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    prometheus = PrometheusServer(
        binary, tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{port}"]
    )
    try:
        assert producer.stdout is not None and producer.stdin is not None
        prometheus.start()
        for done in range(1, two_producers.ROUNDS + 1):
            calls = done * two_producers.CALLS_PER_ROUND
            line = producer.stdout.readline()
            assert line.strip() == "ready", f"the producer process failed: {line!r}"
            # Both producers' calls so far (each call twice) are in Prometheus.
            prometheus.wait_for(
                "sum(gen_ai_client_operation_duration_seconds_count)",
                lambda r, calls=calls: bool(r) and float(r[0]["value"][1]) == 2 * calls,
                timeout=30,
            )
            producer.stdin.write("go\n")
            producer.stdin.flush()
        time.sleep(1.2)
        yield Stack(prometheus, time.time())
    finally:
        prometheus.stop()
        if producer.stdin is not None:
            producer.stdin.close()
        try:
            producer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait(timeout=10)


def _panel_expr(dashboard: str, title: str) -> str:
    for panel in grafana.iter_panels(DASHBOARDS[dashboard]):
        if panel.get("title") == title:
            expr: str = panel["targets"][0]["expr"]
            return expr
    raise KeyError(f"{dashboard}: no panel {title!r}")


def _scalar(stack: Stack, dashboard: str, title: str, **values: str) -> float:
    expr = _panel_expr(dashboard, title)
    result = stack.query(grafana.substitute(expr, {**_all_values(DASHBOARDS[dashboard]), **values}))
    assert len(result) == 1, f"{dashboard} / {title}: expected one value, got {result}"
    return float(result[0]["value"][1])


def test_both_producers_recorded_each_call(stack: Stack) -> None:
    """The set-up holds the double: each call's tokens are in Prometheus twice."""
    both = stack.query("sum(gen_ai_client_token_usage_sum)")
    assert float(both[0]["value"][1]) == 2 * two_producers.CALLS * ONE_CALL
    scopes = {
        s["metric"].get("otel_scope_name") for s in stack.query("gen_ai_client_token_usage_sum")
    }
    assert OURS.split('"')[1] in scopes and len(scopes) == 2, scopes


def test_token_and_call_kpis_count_each_call_once(stack: Stack) -> None:
    overview = "sessions-overview.json"
    assert _scalar(stack, overview, "Tokens") == two_producers.CALLS * ONE_CALL
    assert _scalar(stack, overview, "Model calls") == two_producers.CALLS
    # One agent picked: its calls only, as before (the other producer names no agent).
    role = two_producers.ROLE
    assert _scalar(stack, overview, "Tokens", agent=role) == two_producers.ROLE_CALLS * ONE_CALL
    assert _scalar(stack, overview, "Model calls", agent=role) == two_producers.ROLE_CALLS


@pytest.mark.parametrize("target", CLIENT_TARGETS, ids=lambda t: t.where)
def test_every_client_metric_query_reads_one_producer(stack: Stack, target: grafana.Target) -> None:
    expr = grafana.substitute(target.target["expr"], _all_values(DASHBOARDS[target.dashboard]))
    got = {tuple(sorted(s["metric"].items())): s["value"][1] for s in stack.query(expr)}
    want = {
        tuple(sorted(s["metric"].items())): s["value"][1] for s in stack.query(_ours_only(expr))
    }
    if 'error_type!=""' not in expr:  # the calls did not fail: those panels are empty
        assert any(float(v) > 0 for v in want.values()), f"{target.where}: no data: {want}"
    assert got == want, f"{target.where}: {expr}\n  counts {got}\n  our calls are {want}"
