"""collector-config/alerts.yml firing end to end: agents -> collector -> Prometheus -> ALERTS.

A workload process (tests/deploy/alert_workload.py) runs through configure() with
the standard OTLP settings into the collector built from
collector-config/builder-config.yaml, running the shipped otelcol.yaml; metrics
reach Debian's Prometheus 2.42 by remote write (it has no OTLP receiver). That
Prometheus loads a copy of alerts.yml where only time is shortened: lookbacks
(5m -> 10s, 30m -> 20s, 1h -> 40s, 6h -> 60s) and every ``for:`` (-> 2s), and it
evaluates every second. Everything else is the shipped file. The test waits until
TechrevatiBudgetBurnFast fires for the hot scope, TechrevatiBreakerOpen for the
open breaker and TechrevatiExportDrops for the spans the process's one-span queue
dropped, and checks that the calm scope stays quiet and that the dashboard's
alert-state and time-to-exhaustion queries answer from this Prometheus.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import collector, grafana
from deploy.prom_server import INSTALL_HINT, PrometheusServer, find_binary
from export.otlp_receiver import GrpcReceiver, HttpReceiver
from fleet.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "collector-config" / "alerts.yml"
WORKLOAD = REPO / "tests" / "deploy" / "alert_workload.py"
#: The shipped lookbacks, shortened for a run of seconds (their ratios kept roughly).
SHORTER = {"[5m]": "[10s]", "[30m]": "[20s]", "[1h]": "[40s]", "[6h]": "[60s]"}
FOR_S = "2s"


def shortened_rules(text: str) -> dict[str, Any]:
    """alerts.yml with shorter lookbacks and ``for:``; nothing else changes."""
    for long, short in SHORTER.items():
        text = text.replace(long, short)
    rules: dict[str, Any] = yaml.safe_load(text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR_S
    return rules


@dataclass
class Run:
    prometheus: PrometheusServer
    start: float
    fired_after_s: float
    #: The firing ALERTS series of each alert, as first seen.
    seen: dict[str, list[dict[str, str]]]


def _firing(prometheus: PrometheusServer, alert: str, label: str, value: str) -> bool:
    found = prometheus.query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}')
    return any(r["metric"].get(label) == value for r in found)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    binary = collector.test_binary()
    if not binary.exists():
        pytest.fail(f"{binary}: {collector.BUILD_HINT}", pytrace=False)
    prom_binary = find_binary()
    if prom_binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    rules_dir = tmp_path_factory.mktemp("rules")
    rules = rules_dir / "alerts.yml"
    rules.write_text(yaml.safe_dump(shortened_rules(RULES.read_text(encoding="utf-8"))))
    prometheus = PrometheusServer(
        prom_binary,
        tmp_path_factory.mktemp("prometheus"),
        [],
        extra_args=["--web.enable-remote-write-receiver"],
        rule_files=[rules],
    )
    tempo, prometheus3 = GrpcReceiver(), HttpReceiver()
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    workdir = tmp_path_factory.mktemp("otelcol")
    with tempo, prometheus3:
        otelcol = collector.Collector(
            binary,
            [REPO / "collector-config" / "otelcol.yaml", collector.REMOTE_WRITE_OVERRIDE],
            workdir,
            {
                "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.port}",
                "PROMETHEUS_OTLP_ENDPOINT": prometheus3.endpoint,
                "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"{prometheus.url}/api/v1/write",
            },
        )
        proc: subprocess.Popen[str] | None = None
        try:
            redis.start()
            prometheus.start()
            otelcol.start()
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TECHREVATI_"))
            }
            # This checkout's package first (the shared venv may point at another one).
            env.update(
                PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
                OTEL_EXPORTER_OTLP_ENDPOINT=otelcol.http_endpoint,
            )
            start = time.time()
            proc = subprocess.Popen(
                [sys.executable, str(WORKLOAD), redis.url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=workdir,
            )
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            # Each alert must be seen firing at least once (the spend lasts ~25 s, so the
            # burn alert resolves again after it; they need not fire at the same moment).
            wanted = {
                "TechrevatiBudgetBurnFast": ("techrevati_fleet_scope", "alert-hot"),
                "TechrevatiBreakerOpen": ("techrevati_breaker_name", "alert-api"),
                "TechrevatiExportDrops": ("techrevati_export_pipeline", "otlp"),
            }
            seen: dict[str, list[dict[str, str]]] = {}
            deadline = time.monotonic() + 90
            while set(seen) != set(wanted):
                for alert, (label, value) in wanted.items():
                    if alert not in seen and _firing(prometheus, alert, label, value):
                        seen[alert] = [
                            r["metric"]
                            for r in prometheus.query(
                                f'ALERTS{{alertname="{alert}", alertstate="firing"}}'
                            )
                        ]
                if time.monotonic() > deadline:
                    spend = prometheus.query_range(
                        "techrevati_fleet_cost_USD_total", start, time.time(), "2s"
                    )
                    pytest.fail(f"not all alerts fired in 90 s: {sorted(seen)}; spend: {spend}")
                time.sleep(0.5)
            yield Run(prometheus, start, time.time() - start, seen)
        finally:
            if proc is not None:
                _, err = proc.communicate(timeout=60)  # closes stdin: the workload exits
                assert proc.returncode == 0, err
            otelcol.stop()
            prometheus.stop()
            redis.stop()


def _peaks(run: Run, expr: str, label: str) -> dict[str, float]:
    """The highest value of each series of ``expr`` over the run (asked as a range, like
    Grafana: the spend lasts ~25 s, so an instant query afterwards would see it over)."""
    series = run.prometheus.query_range(expr, run.start, time.time(), "1s")
    return {s["metric"].get(label, ""): max(float(v) for _, v in s["values"]) for s in series}


def test_fast_burn_and_breaker_alerts_fire(run: Run) -> None:
    fast = run.seen["TechrevatiBudgetBurnFast"]
    assert {m["techrevati_fleet_scope"] for m in fast} == {"alert-hot"}
    assert {m["severity"] for m in fast} == {"page"}
    breaker = run.seen["TechrevatiBreakerOpen"]
    assert {m["techrevati_breaker_name"] for m in breaker} == {"alert-api"}


def test_spans_lost_in_the_process_fire_the_export_drops_alert(run: Run) -> None:
    drops = run.seen["TechrevatiExportDrops"]
    assert {(m["techrevati_export_pipeline"], m["techrevati_export_reason"]) for m in drops} == {
        ("otlp", "dropped")
    }
    lost = _peaks(
        run,
        "sum by (techrevati_export_reason) "
        '(techrevati_export_spans_lost_total{techrevati_export_pipeline="otlp"})',
        "techrevati_export_reason",
    )
    assert lost["dropped"] > 0, lost


def test_the_burn_rate_is_measured_against_the_exported_budget(run: Run) -> None:
    """A dime every half second against $10 per 30 days: a burn in the thousands; the calm
    scope's cent stays far under 1 and never alerts."""
    burn = _peaks(run, "techrevati:fleet_burn_rate:5m", "techrevati_fleet_scope")
    assert burn["alert-hot"] > 14.4, burn
    assert burn["alert-calm"] < 1, burn
    pace = _peaks(run, "techrevati:fleet_budget_usd_per_second", "techrevati_fleet_scope")
    assert pace["alert-hot"] == pytest.approx(10.0 / (30 * 86_400))
    quiet = run.prometheus.query_range(
        'ALERTS{techrevati_fleet_scope="alert-calm"}', run.start, time.time(), "1s"
    )
    assert quiet == []


def test_the_dashboard_alert_and_exhaustion_panels_answer(run: Run) -> None:
    budgets = grafana.load(REPO / "dashboards" / "budgets.json")
    targets = {
        t.where.split(" / ")[1].strip("'"): t.target["expr"]
        for t in grafana.iter_targets(Path("budgets.json"), budgets)
        if t.datasource_type == "prometheus"
    }
    values = {"__rate_interval": "10s", "service": ".*", "agent": ".*", "model": ".*"}

    def panel(title: str, label: str) -> dict[str, float]:
        return _peaks(run, grafana.substitute(targets[title], values), label)

    alerts = run.prometheus.query_range(
        grafana.substitute(targets["techrevati alerts pending or firing"], values),
        run.start,
        time.time(),
        "1s",
    )
    shown = {(s["metric"]["alertname"], s["metric"].get("techrevati_fleet_scope")) for s in alerts}
    assert ("TechrevatiBudgetBurnFast", "alert-hot") in shown
    lost = panel("Spans lost before export by pipeline and reason", "techrevati_export_reason")
    assert lost.get("dropped", 0) > 0, lost
    # Most of $10 left at the hot scope's pace: a positive, finite number of seconds.
    left = panel("Time to exhaustion by fleet scope", "techrevati_fleet_scope")
    assert 0 < left.get("alert-hot", 0) < float("inf"), left
