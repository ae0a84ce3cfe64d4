"""Generate the bundled Grafana dashboards (the *.json files beside this script).

Run ``python dashboards/build.py`` after changing a panel here; the dashboard
lint fails when the committed JSON and this script disagree. Writing the
dashboards as code keeps the PromQL idioms in one place:

* counters appear only inside ``rate()`` (time series) or inside ``total()``
  below (KPIs over the dashboard's range, which must also count a short-lived
  process whose counter Prometheus saw once);
* latency and size quantiles are ``histogram_quantile`` over
  ``sum by (le, ...) (rate(..._bucket[$__rate_interval]))``;
* every metric name is the Prometheus spelling recorded in
  ``tests/deploy/prometheus_names.json``;
* datasources are dashboard variables, never fixed uids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

PROM = {"type": "prometheus", "uid": "${prometheus}"}
TEMPO = {"type": "tempo", "uid": "${tempo}"}

# --- metric names (Prometheus spelling; see tests/deploy/prometheus_names.json) ----
TOKENS = "gen_ai_client_token_usage"
TURN_SECONDS = "gen_ai_client_operation_duration_seconds"
SESSION_SECONDS = "gen_ai_invoke_agent_duration_seconds"
TOOL_SECONDS = "gen_ai_execute_tool_duration_seconds"
COST = "techrevati_cost_usd_USD_total"
SESSIONS = "techrevati_sessions_total"
TOOL_CALLS = "techrevati_tool_calls_total"
LIMIT_HITS = "techrevati_limit_hits_total"
GUARDRAIL = "techrevati_guardrail_violations_total"
RECOVERY = "techrevati_recovery_attempts_total"
UTILIZATION = "techrevati_budget_utilization"
ITERATIONS = "techrevati_session_iterations"
TOKEN_DETAIL = "techrevati_token_detail_total"
USAGE_MISSING = "techrevati_usage_missing_total"
UNPRICED = "techrevati_cost_unpriced_calls_total"
FLEET_COST = "techrevati_fleet_cost_USD_total"
FLEET_REFUSALS = "techrevati_fleet_refusals_total"
FLEET_STORE_ERRORS = "techrevati_fleet_store_errors_total"
FLEET_BUDGET = "techrevati_fleet_budget_USD"
FLEET_WINDOW = "techrevati_fleet_window_seconds"
FLEET_SPENT = "techrevati_fleet_spent_USD"
REMOTE_SESSIONS = "techrevati_session_remote_sessions_total"
REMOTE_UNKNOWN = "techrevati_session_remote_unknown_total"
AGENT_INFERENCE_CALLS = "gen_ai_invoke_agent_inference_calls"
AGENT_TOOL_CALLS = "gen_ai_invoke_agent_tool_calls"
LOOPS = "techrevati_loop_detections_total"
#: Prometheus' own series of alert states, written by collector-config/alerts.yml's rules.
ALERTS = "ALERTS"
SPANS_LOST = "techrevati_export_spans_lost_total"
OURS_ALERTS = 'alertname=~"Techrevati.*"'
FLEET_DROPPED = "techrevati_fleet_dropped_total"
FLEET_EVICTIONS = "techrevati_fleet_evictions_total"
#: The breaker gauge has unit "1": scraped directly it is techrevati_breaker_state,
#: through the collector's Prometheus translation it gains "_ratio". Match both.
BREAKER_NAME_RE = "techrevati_breaker_state(_ratio)?"

# --- label filters from the dashboard variables -------------------------------------
SVC = 'service_name=~"$service"'
AGENT = 'gen_ai_agent_name=~"$agent"'
MODEL = 'gen_ai_request_model=~"$model"'
PROVIDER = 'gen_ai_provider_name=~"$provider"'
TOOL = 'gen_ai_tool_name=~"$tool"'
BREAKER = 'techrevati_breaker_name=~"$breaker"'
ERRORS = 'error_type!=""'

TOTAL_NOTE = (
    " Counted over the dashboard's time range as each series' last value minus its "
    "value just before the range (all of it for a series that first appears inside it, "
    "unseen for a week before; increase() for a counter that restarted or a series that "
    "resumed after a gap). increase() alone would miss the first sample of a counter, so "
    "a short-lived script that exported once would show nothing."
)
RATE_NOTE = " Per-second rate over $__rate_interval."
#: Limit hits that refused calls: a soft budget crossed is reported with enforced="false".
#: (!= rather than =: a series from before the label existed still counts.)
ENFORCED = 'techrevati_limit_enforced!="false"'

BUDGET_HITS_TEXT = (
    "Sessions stopped by their budget_usd: one hit per stop, whether the call that crossed it "
    "raised at once or (a call of another instrumentation, booked at its end) the next call "
    "was refused. A soft budget (no enforce_budget) counts its first crossing once."
)


# --- PromQL helpers ---------------------------------------------------------------------


def sel(metric: str, *matchers: str) -> str:
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(metric, *matchers)}[$__rate_interval])"


def by(labels: Sequence[str]) -> str:
    return f" by ({', '.join(labels)})" if labels else ""


#: How far before the range a series must be unseen to count as new (``[1w] offset
#: $__range``), as in collector-config/alerts.yml: a series back from a gap (collector
#: restart, Prometheus outage, missed scrapes) is the same series, not a new one.
SEEN_BEFORE = "1w"


def total(metric: str, *matchers: str, group: Sequence[str] = ()) -> str:
    """A counter's growth over the dashboard range, per series, first sample included.

    A series first seen inside the range (no sample in the week before it) counts
    its last value (increase() would miss its first sample); one with a sample in
    the range-long lookback before the range counts its last value minus that one,
    or, when that is negative (the process restarted and its counter began again:
    the scrape path), increase(), which follows resets. A series seen in the week
    but not just before the range (it resumed after a gap) counts increase() over
    the range: its value is its lifetime total, not what it did in the range.
    """
    s = sel(metric, *matchers)
    last = f"last_over_time({s}[$__range])"
    before = f"last_over_time({s}[$__range] offset $__range)"
    seen = f"last_over_time({s}[{SEEN_BEFORE}] offset $__range)"
    return (
        f"sum{by(group)} (({last} unless {seen}) or ({last} - {before} >= 0) "
        f"or increase({s}[$__range]))"
    )


def per_second(metric: str, *matchers: str, group: Sequence[str] = ()) -> str:
    return f"sum{by(group)} ({rate(metric, *matchers)})"


def quantile(q: float, histogram: str, *matchers: str, group: Sequence[str] = ()) -> str:
    labels = ["le", *group]
    return (
        f"histogram_quantile({q}, sum by ({', '.join(labels)}) "
        f"({rate(histogram + '_bucket', *matchers)}))"
    )


def or_zero(expr: str) -> str:
    """KPIs of things that may not have happened: show 0 rather than 'No data'."""
    return f"({expr}) or vector(0)"


# --- panel builders -----------------------------------------------------------------


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def newline(self) -> None:
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def ident(self) -> int:
        n = self.next_id
        self.next_id += 1
        return n


def prom_target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = False
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
    }
    if instant:
        target.update(instant=True, range=False)
    else:
        target.update(instant=False, range=True)
    return target


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def row(layout: Layout, title: str) -> dict[str, Any]:
    layout.newline()
    panel = {
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": layout.y},
        "id": layout.ident(),
        "panels": [],
        "title": title,
        "type": "row",
    }
    layout.y += 1
    return panel


def count_stat(
    layout: Layout, title: str, description: str, expr: str, *, bad: str = "red"
) -> dict[str, Any]:
    """A KPI count over the range: green at zero, ``bad`` from the first one."""
    return stat(
        layout,
        title,
        description,
        or_zero(expr),
        "none",
        decimals=0,
        steps=(("green", None), (bad, 1)),
    )


def stat(
    layout: Layout,
    title: str,
    description: str,
    expr: str,
    unit: str,
    *,
    decimals: int | None = None,
    steps: Sequence[tuple[str, float | None]] = (("blue", None),),
    w: int = 4,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "thresholds": thresholds(*steps),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": PROM,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": layout.place(w, 4),
        "id": layout.ident(),
        "options": {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value",
        },
        "targets": [prom_target(expr, instant=True)],
        "title": title,
        "type": "stat",
    }


def timeseries(
    layout: Layout,
    title: str,
    description: str,
    targets: Iterable[tuple[str, str]],
    unit: str,
    *,
    w: int = 8,
    h: int = 8,
    stack: bool = False,
) -> dict[str, Any]:
    refs = "ABCDEFGH"
    return {
        "datasource": PROM,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": "line",
                    "fillOpacity": 20 if stack else 5,
                    "lineWidth": 1,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"group": "A", "mode": "normal" if stack else "none"},
                },
                "min": 0,
                "unit": unit,
            },
            "overrides": [],
        },
        "gridPos": layout.place(w, h),
        "id": layout.ident(),
        "options": {
            "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [prom_target(expr, legend, refs[i]) for i, (expr, legend) in enumerate(targets)],
        "title": title,
        "type": "timeseries",
    }


def bargauge(
    layout: Layout,
    title: str,
    description: str,
    expr: str,
    legend: str,
    unit: str,
    *,
    w: int = 8,
    h: int = 8,
) -> dict[str, Any]:
    return {
        "datasource": PROM,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "continuous-BlPu"},
                "min": 0,
                "thresholds": thresholds(("blue", None)),
                "unit": unit,
            },
            "overrides": [],
        },
        "gridPos": layout.place(w, h),
        "id": layout.ident(),
        "options": {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "valueMode": "color",
        },
        "targets": [prom_target(expr, legend, instant=True)],
        "title": title,
        "type": "bargauge",
    }


def distribution(
    layout: Layout,
    title: str,
    description: str,
    histogram: str,
    matchers: Sequence[str],
    *,
    w: int = 12,
    h: int = 8,
) -> dict[str, Any]:
    """How many observations fell in each bucket over the range (a bar per bucket).

    The target's "heatmap" format makes Grafana turn Prometheus' cumulative
    ``le`` buckets into per-bucket counts, sorted by bound.
    """
    target = prom_target(
        total(histogram + "_bucket", *matchers, group=["le"]), "{{le}}", instant=True
    )
    target["format"] = "heatmap"
    return {
        "datasource": PROM,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "continuous-BlPu"},
                "min": 0,
                "thresholds": thresholds(("blue", None)),
                "unit": "none",
            },
            "overrides": [],
        },
        "gridPos": layout.place(w, h),
        "id": layout.ident(),
        "options": {
            "displayMode": "gradient",
            "orientation": "vertical",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "valueMode": "color",
            "namePlacement": "auto",
            "sizing": "auto",
            "text": {},
        },
        "targets": [target],
        "title": title,
        "type": "bargauge",
    }


def prom_table(
    layout: Layout,
    title: str,
    description: str,
    expr: str,
    unit: str,
    value_name: str,
    *,
    w: int = 12,
    h: int = 8,
) -> dict[str, Any]:
    target = prom_target(expr, instant=True)
    target["format"] = "table"
    return {
        "datasource": PROM,
        "description": description,
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "filterable": True}, "unit": unit},
            "overrides": [],
        },
        "gridPos": layout.place(w, h),
        "id": layout.ident(),
        "options": {
            "cellHeight": "sm",
            "showHeader": True,
            "sortBy": [{"desc": True, "displayName": value_name}],
        },
        "targets": [target],
        "title": title,
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {"Value": value_name},
                },
            }
        ],
        "type": "table",
    }


# --- variables ----------------------------------------------------------------------


def datasource_variable(name: str, plugin: str, label: str) -> dict[str, Any]:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": [],
        "query": plugin,
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": PROM,
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


#: Metrics every kind of instrumented process emits: sessions from the Orchestrator
#: and agent_session(), model calls from run_turn and @agent_turn.
ANY_SESSION_OR_TURN = f'{{__name__=~"{SESSIONS}|{TURN_SECONDS}_count"}}'


def service_variable() -> dict[str, Any]:
    return query_variable(
        "service", "Service", f"label_values({ANY_SESSION_OR_TURN}, service_name)"
    )


def agent_variable() -> dict[str, Any]:
    selector = f'{{__name__=~"{SESSIONS}|{TURN_SECONDS}_count", {SVC}}}'
    return query_variable("agent", "Agent role", f"label_values({selector}, gen_ai_agent_name)")


def model_variable() -> dict[str, Any]:
    return query_variable(
        "model",
        "Model",
        f"label_values({sel(TURN_SECONDS + '_count', SVC, AGENT)}, gen_ai_request_model)",
    )


def provider_variable() -> dict[str, Any]:
    return query_variable(
        "provider",
        "Provider",
        f"label_values({sel(TURN_SECONDS + '_count', SVC, AGENT)}, gen_ai_provider_name)",
    )


def tool_variable() -> dict[str, Any]:
    return query_variable(
        "tool", "Tool", f"label_values({sel(TOOL_CALLS, SVC, AGENT)}, gen_ai_tool_name)"
    )


def breaker_variable() -> dict[str, Any]:
    selector = f'{{__name__=~"{BREAKER_NAME_RE}", {SVC}}}'
    return query_variable(
        "breaker", "Breaker", f"label_values({selector}, techrevati_breaker_name)"
    )


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": ["techrevati"],
                "title": "techrevati dashboards",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["techrevati", "genai", "agents"],
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }


# --- dashboards ---------------------------------------------------------------------


def sessions_overview() -> dict[str, Any]:
    lay = Layout()
    f_agent = (SVC, AGENT)
    f_model = (SVC, AGENT, MODEL, PROVIDER)
    p: list[dict[str, Any]] = [row(lay, "At a glance (whole time range)")]
    sessions_total = total(SESSIONS, *f_agent)
    completed_total = total(SESSIONS, *f_agent, 'techrevati_session_outcome="completed"')
    cost_total = total(COST, *f_model)
    p += [
        stat(
            lay,
            "Sessions",
            "Agent sessions that finished in the time range, any outcome." + TOTAL_NOTE,
            sessions_total,
            "none",
            decimals=0,
        ),
        stat(
            lay,
            "Success rate",
            "Share of finished sessions whose outcome is 'completed' (the rest failed or were "
            "cancelled)." + TOTAL_NOTE,
            f"({completed_total} or vector(0)) / {sessions_total}",
            "percentunit",
            decimals=1,
            steps=(("red", None), ("orange", 0.8), ("green", 0.95)),
        ),
        stat(
            lay,
            "Cost",
            "Model spend in US dollars in the time range, from the package's price "
            "table." + TOTAL_NOTE,
            cost_total,
            "currencyUSD",
            decimals=4,
        ),
        stat(
            lay,
            "Cost per session",
            "Model spend divided by the number of finished sessions. Filters on model or provider "
            "narrow the spend, not the session count." + TOTAL_NOTE,
            f"{cost_total} / {sessions_total}",
            "currencyUSD",
            decimals=4,
        ),
        stat(
            lay,
            "Tokens",
            "Input plus output tokens of all model calls (input includes cached "
            "tokens, output includes reasoning tokens)." + TOTAL_NOTE,
            total(TOKENS + "_sum", *f_model),
            "short",
        ),
        stat(
            lay,
            "Model calls",
            "Model calls (turns) made, failed ones included." + TOTAL_NOTE,
            total(TURN_SECONDS + "_count", *f_model),
            "none",
            decimals=0,
        ),
    ]
    lay.newline()
    p += [
        stat(
            lay,
            "Tool calls",
            "Tool calls attempted, allowed or denied." + TOTAL_NOTE,
            or_zero(total(TOOL_CALLS, *f_agent)),
            "none",
            decimals=0,
        ),
        count_stat(
            lay,
            "Permission denials",
            "Tool calls refused by the permission policy; the tool never ran." + TOTAL_NOTE,
            total(TOOL_CALLS, *f_agent, 'techrevati_permission_decision="deny"'),
            bad="orange",
        ),
        count_stat(
            lay,
            "Budget hits",
            BUDGET_HITS_TEXT + TOTAL_NOTE,
            total(LIMIT_HITS, *f_agent, 'techrevati_limit_kind="budget"'),
        ),
        count_stat(
            lay,
            "Iteration-cap hits",
            "Model calls refused because the session had already made "
            "max_iterations calls (a runaway loop stopped)." + TOTAL_NOTE,
            total(LIMIT_HITS, *f_agent, 'techrevati_limit_kind="max_iterations"'),
        ),
        count_stat(
            lay,
            "Guardrail violations",
            "Tool calls blocked by a guardrail before or after the tool ran." + TOTAL_NOTE,
            total(GUARDRAIL, *f_agent),
            bad="orange",
        ),
        count_stat(
            lay,
            "Failed sessions",
            "Sessions that ended with an exception (budget and cap stops included)." + TOTAL_NOTE,
            total(SESSIONS, *f_agent, 'techrevati_session_outcome="failed"'),
        ),
    ]
    p.append(row(lay, "Cost"))
    p += [
        timeseries(
            lay,
            "Spend rate by model",
            "US dollars per hour spent on each model (per-second rate x 3600)." + RATE_NOTE,
            [
                (
                    f"{per_second(COST, *f_model, group=['gen_ai_request_model'])} * 3600",
                    "{{gen_ai_request_model}}",
                )
            ],
            "currencyUSD",
            w=12,
        ),
        bargauge(
            lay,
            "Cost by model",
            "Spend per model over the whole time range." + TOTAL_NOTE,
            total(COST, *f_model, group=["gen_ai_request_model"]),
            "{{gen_ai_request_model}}",
            "currencyUSD",
            w=6,
        ),
        bargauge(
            lay,
            "Cost by agent role",
            "Spend per agent role over the whole time range." + TOTAL_NOTE,
            total(COST, *f_model, group=["gen_ai_agent_name"]),
            "{{gen_ai_agent_name}}",
            "currencyUSD",
            w=6,
        ),
    ]
    p.append(row(lay, "Model turns"))
    p += [
        timeseries(
            lay,
            "Model calls per second by model",
            "How often each model is called, failed calls included." + RATE_NOTE,
            [
                (
                    per_second(TURN_SECONDS + "_count", *f_model, group=["gen_ai_request_model"]),
                    "{{gen_ai_request_model}}",
                )
            ],
            "reqps",
        ),
        timeseries(
            lay,
            "Model call latency (p50 / p95 / p99)",
            "Quantiles of model-call duration across the selected models, estimated from the "
            "histogram buckets." + RATE_NOTE,
            [(quantile(q, TURN_SECONDS, *f_model), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
            "s",
        ),
        timeseries(
            lay,
            "Model call latency p95 by model",
            "95th percentile of model-call duration for each model." + RATE_NOTE,
            [
                (
                    quantile(0.95, TURN_SECONDS, *f_model, group=["gen_ai_request_model"]),
                    "{{gen_ai_request_model}}",
                )
            ],
            "s",
        ),
        timeseries(
            lay,
            "Tokens per second by type",
            "Input and output tokens consumed per second (input includes cached tokens)."
            + RATE_NOTE,
            [
                (
                    per_second(TOKENS + "_sum", *f_model, group=["gen_ai_token_type"]),
                    "{{gen_ai_token_type}}",
                )
            ],
            "short",
            stack=True,
        ),
        timeseries(
            lay,
            "Tokens per call (p50 / p95) by type",
            "How large a single call's input and output are, from the token histogram." + RATE_NOTE,
            [
                (
                    quantile(q, TOKENS, *f_model, group=["gen_ai_token_type"]),
                    f"p{int(q * 100)} {{{{gen_ai_token_type}}}}",
                )
                for q in (0.5, 0.95)
            ],
            "short",
        ),
        timeseries(
            lay,
            "Model call errors by type",
            "Failed model calls per second by error.type (exception class or provider "
            "error code)." + RATE_NOTE,
            [
                (
                    per_second(TURN_SECONDS + "_count", *f_model, ERRORS, group=["error_type"]),
                    "{{error_type}}",
                )
            ],
            "reqps",
            stack=True,
        ),
    ]
    p.append(row(lay, "Sessions"))
    p += [
        timeseries(
            lay,
            "Sessions finished per second by outcome",
            "Completed, failed and cancelled sessions per second." + RATE_NOTE,
            [
                (
                    per_second(SESSIONS, *f_agent, group=["techrevati_session_outcome"]),
                    "{{techrevati_session_outcome}}",
                )
            ],
            "reqps",
            stack=True,
        ),
        timeseries(
            lay,
            "Session duration (p50 / p95)",
            "How long an agent session runs from open to close, estimated from the "
            "histogram buckets." + RATE_NOTE,
            [(quantile(q, SESSION_SECONDS, *f_agent), f"p{int(q * 100)}") for q in (0.5, 0.95)],
            "s",
        ),
        bargauge(
            lay,
            "Sessions by role and outcome",
            "Finished sessions per agent role and outcome over the whole time range." + TOTAL_NOTE,
            total(SESSIONS, *f_agent, group=["gen_ai_agent_name", "techrevati_session_outcome"]),
            "{{gen_ai_agent_name}} {{techrevati_session_outcome}}",
            "none",
        ),
    ]
    return dashboard(
        "techrevati-sessions",
        "techrevati / Sessions overview",
        "Agent sessions, spend, tokens and model-call latency from techrevati.runtime.",
        p,
        [
            datasource_variable("prometheus", "prometheus", "Metrics"),
            service_variable(),
            agent_variable(),
            model_variable(),
            provider_variable(),
        ],
    )


def tools_and_permissions() -> dict[str, Any]:
    lay = Layout()
    f = (SVC, AGENT, TOOL)
    deny = 'techrevati_permission_decision="deny"'
    allow = 'techrevati_permission_decision="allow"'
    p: list[dict[str, Any]] = [row(lay, "At a glance (whole time range)")]
    calls_total = total(TOOL_CALLS, *f)
    p += [
        stat(
            lay,
            "Tool calls",
            "Tool calls attempted, allowed or denied." + TOTAL_NOTE,
            or_zero(calls_total),
            "none",
            decimals=0,
        ),
        stat(
            lay,
            "Allowed",
            "Tool calls the permission policy allowed." + TOTAL_NOTE,
            or_zero(total(TOOL_CALLS, *f, allow)),
            "none",
            decimals=0,
        ),
        count_stat(
            lay,
            "Denied",
            "Tool calls the permission policy refused; the tool never ran." + TOTAL_NOTE,
            total(TOOL_CALLS, *f, deny),
            bad="orange",
        ),
        stat(
            lay,
            "Denial rate",
            "Share of tool calls that were denied." + TOTAL_NOTE,
            f"({total(TOOL_CALLS, *f, deny)} or vector(0)) / {calls_total}",
            "percentunit",
            decimals=1,
            steps=(("green", None), ("orange", 0.05), ("red", 0.2)),
        ),
        count_stat(
            lay,
            "Guardrail violations",
            "Tool calls blocked by a guardrail." + TOTAL_NOTE,
            total(GUARDRAIL, *f),
            bad="orange",
        ),
        count_stat(
            lay,
            "Tool calls with an error",
            "Tool calls that ended with an error.type: the tool "
            "raised, was denied or was blocked by a guardrail." + TOTAL_NOTE,
            total(TOOL_SECONDS + "_count", *f, ERRORS),
            bad="orange",
        ),
    ]
    p.append(row(lay, "Calls and permissions"))
    p += [
        timeseries(
            lay,
            "Tool calls per second by tool",
            "Call rate of each tool." + RATE_NOTE,
            [(per_second(TOOL_CALLS, *f, group=["gen_ai_tool_name"]), "{{gen_ai_tool_name}}")],
            "reqps",
        ),
        timeseries(
            lay,
            "Tool calls per second by permission decision",
            "Allowed versus denied tool calls." + RATE_NOTE,
            [
                (
                    per_second(TOOL_CALLS, *f, group=["techrevati_permission_decision"]),
                    "{{techrevati_permission_decision}}",
                )
            ],
            "reqps",
            stack=True,
        ),
        prom_table(
            lay,
            "Denials by tool and role",
            "Which role asked for which tool and was refused, over the whole time range."
            + TOTAL_NOTE,
            total(TOOL_CALLS, *f, deny, group=["gen_ai_agent_name", "gen_ai_tool_name"]),
            "none",
            "Denials",
            w=8,
        ),
    ]
    p.append(row(lay, "Latency and errors"))
    p += [
        timeseries(
            lay,
            "Tool latency (p50 / p95 / p99)",
            "Quantiles of tool-call duration across the selected tools, estimated from the "
            "histogram buckets." + RATE_NOTE,
            [(quantile(q, TOOL_SECONDS, *f), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
            "s",
        ),
        timeseries(
            lay,
            "Tool latency p95 by tool",
            "95th percentile duration of each tool." + RATE_NOTE,
            [
                (
                    quantile(0.95, TOOL_SECONDS, *f, group=["gen_ai_tool_name"]),
                    "{{gen_ai_tool_name}}",
                )
            ],
            "s",
        ),
        timeseries(
            lay,
            "Tool errors per second by error type",
            "Tool calls that ended with an error, by error.type." + RATE_NOTE,
            [
                (
                    per_second(TOOL_SECONDS + "_count", *f, ERRORS, group=["error_type"]),
                    "{{error_type}}",
                )
            ],
            "reqps",
            stack=True,
        ),
        bargauge(
            lay,
            "Calls by tool",
            "Tool calls per tool over the whole time range." + TOTAL_NOTE,
            total(TOOL_CALLS, *f, group=["gen_ai_tool_name"]),
            "{{gen_ai_tool_name}}",
            "none",
            w=12,
        ),
        prom_table(
            lay,
            "Guardrail violations by guardrail, stage and tool",
            "Which guardrail blocked which tool, before (pre) or after (post) it ran, over "
            "the whole time range." + TOTAL_NOTE,
            total(
                GUARDRAIL,
                *f,
                group=[
                    "techrevati_guardrail_name",
                    "techrevati_guardrail_stage",
                    "gen_ai_tool_name",
                ],
            ),
            "none",
            "Violations",
        ),
        prom_table(
            lay,
            "Loops detected by pattern, tool and role",
            "Tool calls that looped: the same call returning the same result again and again "
            "(repeat), between other work (interleaved), or 2-3 calls taking turns (cycle). "
            "Under LoopGuard(on_loop='raise') the next identical call was refused (a limit hit "
            "of kind loop); under 'warn' it ran and the loop was only reported. A session's "
            "techrevati.loop.detected span events show which session looped." + TOTAL_NOTE,
            total(
                LOOPS,
                *f,
                group=["techrevati_loop_pattern", "gen_ai_tool_name", "gen_ai_agent_name"],
            ),
            "none",
            "Loops",
        ),
    ]
    return dashboard(
        "techrevati-tools",
        "techrevati / Tools & permissions",
        "Tool calls, permission decisions, guardrail blocks and tool latency from "
        "techrevati.runtime.",
        p,
        [
            datasource_variable("prometheus", "prometheus", "Metrics"),
            service_variable(),
            agent_variable(),
            tool_variable(),
        ],
    )


def reliability() -> dict[str, Any]:
    lay = Layout()
    f = (SVC, AGENT)
    breaker_sel = f'{{__name__=~"{BREAKER_NAME_RE}", {SVC}, {BREAKER}}}'
    p: list[dict[str, Any]] = [row(lay, "At a glance")]
    p += [
        stat(
            lay,
            "Breakers open now",
            "Circuit breakers whose latest reported state is open "
            "(2). Breaker state is a gauge, so this is the current value, not a range total.",
            f"count(max by (techrevati_breaker_name) ({breaker_sel}) == 2) or vector(0)",
            "none",
            decimals=0,
            steps=(("green", None), ("red", 1)),
        ),
        count_stat(
            lay,
            "Budget hits",
            BUDGET_HITS_TEXT + TOTAL_NOTE,
            total(LIMIT_HITS, *f, 'techrevati_limit_kind="budget"'),
        ),
        count_stat(
            lay,
            "Iteration-cap hits",
            "Model calls refused because the session reached max_iterations." + TOTAL_NOTE,
            total(LIMIT_HITS, *f, 'techrevati_limit_kind="max_iterations"'),
        ),
        count_stat(
            lay,
            "Guardrail violations",
            "Tool calls blocked by a guardrail." + TOTAL_NOTE,
            total(GUARDRAIL, *f),
            bad="orange",
        ),
        count_stat(
            lay,
            "Recovery attempts",
            "Failed model calls that went through recovery "
            "bookkeeping (classified, a recipe chosen)." + TOTAL_NOTE,
            total(RECOVERY, *f),
            bad="orange",
        ),
        count_stat(
            lay,
            "Failed sessions",
            "Sessions that ended with an exception." + TOTAL_NOTE,
            total(SESSIONS, *f, 'techrevati_session_outcome="failed"'),
        ),
    ]
    p.append(row(lay, "Circuit breakers"))
    timeline = {
        "datasource": PROM,
        "description": "State of each circuit breaker over time: closed (0), half-open "
        "(1, probing) or open (2, calls rejected without reaching the model). When several "
        "processes report the same breaker name, the worst state is shown.",
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "mappings": [
                    {
                        "options": {
                            "0": {"color": "green", "index": 0, "text": "closed"},
                            "1": {"color": "yellow", "index": 1, "text": "half-open"},
                            "2": {"color": "red", "index": 2, "text": "open"},
                        },
                        "type": "value",
                    }
                ],
                "max": 2,
                "min": 0,
                "thresholds": thresholds(("green", None), ("yellow", 1), ("red", 2)),
                "unit": "none",
            },
            "overrides": [],
        },
        "gridPos": lay.place(24, 7),
        "id": lay.ident(),
        "options": {
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "mergeValues": True,
            "rowHeight": 0.8,
            "showValue": "auto",
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": [
            prom_target(
                f"max by (techrevati_breaker_name) ({breaker_sel})", "{{techrevati_breaker_name}}"
            )
        ],
        "title": "Breaker state timeline",
        "type": "state-timeline",
    }
    p.append(timeline)
    p.append(row(lay, "Limits"))
    p += [
        timeseries(
            lay,
            "Limit hits per second by kind and role",
            "Refusals per second by limit kind (budget, max_iterations, unpriced, fleet_budget, "
            "fleet_calls), split by agent role." + RATE_NOTE,
            [
                (
                    per_second(
                        LIMIT_HITS, *f, group=["techrevati_limit_kind", "gen_ai_agent_name"]
                    ),
                    "{{techrevati_limit_kind}} {{gen_ai_agent_name}}",
                )
            ],
            "reqps",
            w=16,
            stack=True,
        ),
        bargauge(
            lay,
            "Limit hits by kind",
            "Refusals per limit kind (budget, max_iterations, unpriced, fleet_budget, "
            "fleet_calls) over the whole time range." + TOTAL_NOTE,
            total(LIMIT_HITS, *f, group=["techrevati_limit_kind"]),
            "{{techrevati_limit_kind}}",
            "none",
        ),
    ]
    p.append(row(lay, "Guardrails and recovery"))
    p += [
        timeseries(
            lay,
            "Guardrail violations per second by guardrail and stage",
            "Blocks per second by guardrail name and stage (pre: before the tool ran, "
            "post: on its result)." + RATE_NOTE,
            [
                (
                    per_second(
                        GUARDRAIL,
                        *f,
                        group=["techrevati_guardrail_name", "techrevati_guardrail_stage"],
                    ),
                    "{{techrevati_guardrail_name}} ({{techrevati_guardrail_stage}})",
                )
            ],
            "reqps",
            w=12,
            stack=True,
        ),
        timeseries(
            lay,
            "Recovery attempts per second by scenario and outcome",
            "Failed model calls by classified scenario (llm_error, llm_timeout, ...) and "
            "the recovery outcome." + RATE_NOTE,
            [
                (
                    per_second(
                        RECOVERY,
                        *f,
                        group=["techrevati_recovery_scenario", "techrevati_recovery_outcome"],
                    ),
                    "{{techrevati_recovery_scenario}}: {{techrevati_recovery_outcome}}",
                )
            ],
            "reqps",
            w=12,
            stack=True,
        ),
        prom_table(
            lay,
            "Recovery attempts by scenario and outcome",
            "Recovery attempts over the whole time range." + TOTAL_NOTE,
            total(
                RECOVERY, *f, group=["techrevati_recovery_scenario", "techrevati_recovery_outcome"]
            ),
            "none",
            "Attempts",
        ),
        timeseries(
            lay,
            "Model call error ratio by model",
            "Failed model calls as a share of all model calls, per model." + RATE_NOTE,
            [
                (
                    per_second(TURN_SECONDS + "_count", *f, ERRORS, group=["gen_ai_request_model"])
                    + " / "
                    + per_second(TURN_SECONDS + "_count", *f, group=["gen_ai_request_model"]),
                    "{{gen_ai_request_model}}",
                )
            ],
            "percentunit",
            w=12,
        ),
        timeseries(
            lay,
            "Failed sessions per second by role",
            "Sessions ending in failure per second, by agent role." + RATE_NOTE,
            [
                (
                    per_second(
                        SESSIONS,
                        *f,
                        'techrevati_session_outcome="failed"',
                        group=["gen_ai_agent_name"],
                    ),
                    "{{gen_ai_agent_name}}",
                )
            ],
            "reqps",
            w=12,
        ),
    ]
    return dashboard(
        "techrevati-reliability",
        "techrevati / Reliability",
        "Circuit breakers, budget and iteration-cap hits, guardrail blocks and recovery from "
        "techrevati.runtime.",
        p,
        [
            datasource_variable("prometheus", "prometheus", "Metrics"),
            service_variable(),
            agent_variable(),
            breaker_variable(),
        ],
    )


def session_drilldown() -> dict[str, Any]:
    lay = Layout()
    base = (
        'span.gen_ai.operation.name = "invoke_agent" && resource.service.name =~ "${service:regex}"'
        ' && span.gen_ai.agent.name =~ "${agent:regex}"'
    )
    columns = (
        "span.gen_ai.agent.name, span.techrevati.session.outcome, span.techrevati.session.turns, "
        "span.techrevati.cost.usd, span.gen_ai.usage.input_tokens, span.gen_ai.usage.output_tokens"
    )
    open_trace_link = {
        "targetBlank": False,
        "title": "Show this trace below",
        "url": "/d/${__dashboard.uid}?${__url_time_range}&${service:queryparam}"
        "&${agent:queryparam}&var-trace_id=${__value.raw}",
    }

    def tempo_table(title: str, description: str, query: str, h: int = 10) -> dict[str, Any]:
        return {
            "datasource": TEMPO,
            "description": description,
            "fieldConfig": {
                "defaults": {"custom": {"align": "auto", "filterable": True}, "unit": "none"},
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "traceID"},
                        "properties": [{"id": "links", "value": [open_trace_link]}],
                    },
                    {
                        "matcher": {"id": "byName", "options": "Duration"},
                        "properties": [{"id": "unit", "value": "ms"}],
                    },
                    *(
                        {
                            "matcher": {"id": "byName", "options": column},
                            "properties": [
                                {"id": "unit", "value": "currencyUSD"},
                                {"id": "decimals", "value": 4},
                            ],
                        }
                        for column in (
                            "techrevati.cost.usd",
                            "techrevati.budget.spent_usd",
                            "techrevati.budget.limit_usd",
                            "techrevati.cost.tree_usd",
                        )
                    ),
                ],
            },
            "gridPos": lay.place(24, h),
            "id": lay.ident(),
            "options": {"cellHeight": "sm", "showHeader": True},
            "targets": [
                {
                    "datasource": TEMPO,
                    "filters": [],
                    "limit": 50,
                    "query": query,
                    "queryType": "traceql",
                    "refId": "A",
                    "spss": 3,
                    "tableType": "traces",
                }
            ],
            "title": title,
            "type": "table",
        }

    p: list[dict[str, Any]] = [row(lay, "Find a session")]
    p += [
        tempo_table(
            "Sessions",
            "Recent invoke_agent spans (one per agent session) with outcome, number of model "
            "turns, cost and token roll-ups. Click a trace ID to show the whole session below "
            "(model turns, tool calls, handoffs), or use Grafana's own link to open it in Explore.",
            f"{{ {base} }} | select({columns})",
        ),
        tempo_table(
            "Failed sessions",
            "Only sessions whose outcome is 'failed': budget and iteration-cap stops, open "
            "breakers, denied tools that escaped, model errors. Click a trace ID to inspect it.",
            f'{{ {base} && span.techrevati.session.outcome = "failed" }} | select({columns})',
            h=8,
        ),
        tempo_table(
            "Sessions that hit a limit",
            "Sessions whose span carries a techrevati.limit.hit event: a turn pushed it over "
            "budget, the iteration cap refused a call, a model had no price under an enforced "
            "budget, or a fleet budget or call cap refused (the event then names the fleet "
            "scope). The event holds the kind and the error; click a trace ID to see the turns "
            "that led there.",
            '{ resource.service.name =~ "${service:regex}"'
            ' && event:name = "techrevati.limit.hit" }',
            h=8,
        ),
        tempo_table(
            "Sessions with a budget: spent against limit",
            "Per-session budget use, which the metrics cannot show (they carry no session "
            "id): each session span with a budget_usd, its spend, its limit, its whole "
            "tree's spend (child sessions included), its model calls, and the calls booked "
            "at $0 because the response had no usage or the model has no price.",
            f"{{ {base} && span.techrevati.budget.limit_usd > 0 }} | select("
            "span.gen_ai.agent.name, span.techrevati.session.outcome, "
            "span.techrevati.budget.spent_usd, span.techrevati.budget.limit_usd, "
            "span.techrevati.cost.tree_usd, span.techrevati.session.iteration, "
            "span.techrevati.session.calls_without_usage, span.techrevati.session.unpriced_calls)",
            h=8,
        ),
    ]
    p.append(
        tempo_table(
            "Session trees across services",
            "Shared sessions (agent_session(..., shared=True)): one cap and budget for the "
            "session and every session and model call it started in other processes and "
            "services (HTTP, Celery, multiprocessing). Tree cost includes every remote "
            "child's spend; remote sessions counts the sessions opened under it elsewhere. "
            "Their spans sit in the same trace: click a trace ID to see the whole tree below.",
            f"{{ {base} && span.techrevati.session.shared = true }} | select("
            "span.gen_ai.agent.name, span.techrevati.session.outcome, span.techrevati.cost.usd, "
            "span.techrevati.cost.tree_usd, span.techrevati.session.remote_children)",
            h=8,
        )
    )
    p.append(row(lay, "Selected trace"))
    p.append(
        {
            "datasource": TEMPO,
            "description": "The trace chosen in a table above (or pasted into the Trace ID box): "
            "the session span with its model turns (chat), tool calls (execute_tool), permission "
            "decisions, guardrail outcomes, breaker state and cost on each span.",
            "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
            "gridPos": lay.place(24, 18),
            "id": lay.ident(),
            "options": {},
            "targets": [
                {
                    "datasource": TEMPO,
                    "limit": 1,
                    "query": "${trace_id}",
                    "queryType": "traceql",
                    "refId": "A",
                }
            ],
            "title": "Trace",
            "type": "traces",
        }
    )
    trace_var = {
        "current": {"selected": False, "text": "", "value": ""},
        "description": "Trace to show in the Trace panel; set by clicking a trace ID above.",
        "hide": 0,
        "label": "Trace ID",
        "name": "trace_id",
        "options": [{"selected": True, "text": "", "value": ""}],
        "query": "",
        "type": "textbox",
    }
    return dashboard(
        "techrevati-session-drilldown",
        "techrevati / Session drill-down",
        "Find one agent session in Tempo and open its trace: model turns, tools, permissions, "
        "cost.",
        p,
        [
            datasource_variable("tempo", "tempo", "Traces"),
            datasource_variable("prometheus", "prometheus", "Metrics"),
            service_variable(),
            agent_variable(),
            trace_var,
        ],
    )


def budgets() -> dict[str, Any]:
    """Budgets, refusals, iterations, token detail, usage gaps and fleet limits."""
    lay = Layout()
    f_agent = (SVC, AGENT)
    f_model = (SVC, AGENT, MODEL, PROVIDER)
    cache_read = 'techrevati_token_kind="cache_read"'
    reasoning = 'techrevati_token_kind="reasoning"'
    input_tokens = 'gen_ai_token_type="input"'
    output_tokens = 'gen_ai_token_type="output"'
    by_model = ["gen_ai_request_model"]

    def share_by_model(kind: str, token_type: str) -> str:
        part = per_second(TOKEN_DETAIL, *f_model, kind, group=by_model)
        return f"{part} / {per_second(TOKENS + '_sum', *f_model, token_type, group=by_model)}"

    p: list[dict[str, Any]] = [row(lay, "At a glance (whole time range)")]
    p += [
        stat(
            lay,
            "Sessions with a budget",
            "Finished sessions that had a budget_usd (each reports its spent / limit at its "
            "end)." + TOTAL_NOTE,
            or_zero(total(UTILIZATION + "_count", *f_agent)),
            "none",
            decimals=0,
        ),
        stat(
            lay,
            "Mean budget utilisation",
            "Average of spent / budget_usd over sessions with a budget, at their end. Above "
            "100% means the turn that crossed the budget was admitted and then refused the "
            "next one." + TOTAL_NOTE,
            f"{total(UTILIZATION + '_sum', *f_agent)} / {total(UTILIZATION + '_count', *f_agent)}",
            "percentunit",
            decimals=1,
            steps=(("green", None), ("orange", 0.8), ("red", 1)),
        ),
        stat(
            lay,
            "Mean model calls per session",
            "Model calls admitted per finished session, averaged (compare with max_iterations)."
            + TOTAL_NOTE,
            f"{total(ITERATIONS + '_sum', *f_agent)} / {total(ITERATIONS + '_count', *f_agent)}",
            "short",
            decimals=1,
        ),
        count_stat(
            lay,
            "Refusals",
            "Limits that stopped calls, once per session and limit: budget, iteration cap, "
            "unpriced model, loop, fleet budget or fleet call rate. A soft budget (no "
            "enforce_budget) that was crossed refused nothing and is not counted." + TOTAL_NOTE,
            total(LIMIT_HITS, *f_agent, ENFORCED),
        ),
        stat(
            lay,
            "Cache-hit share of input tokens",
            "Cache-read tokens as a share of all input tokens (input counts cached tokens). "
            "Cached input is billed at a fraction of the input price." + TOTAL_NOTE,
            f"({total(TOKEN_DETAIL, *f_model, cache_read)} or vector(0)) / "
            f"{total(TOKENS + '_sum', *f_model, input_tokens)}",
            "percentunit",
            decimals=1,
        ),
        stat(
            lay,
            "Reasoning share of output tokens",
            "Reasoning tokens as a share of all output tokens (output counts reasoning "
            "tokens); reasoning is billed as output but never shown." + TOTAL_NOTE,
            f"({total(TOKEN_DETAIL, *f_model, reasoning)} or vector(0)) / "
            f"{total(TOKENS + '_sum', *f_model, output_tokens)}",
            "percentunit",
            decimals=1,
        ),
    ]
    lay.newline()
    p += [
        count_stat(
            lay,
            "Calls without usage",
            "Model calls whose response carried no token usage. Under a budget they are "
            "booked at an estimate (span attribute techrevati.cost.source = estimated: their "
            "request and streamed text, else the model's learned cost); without one, at $0, "
            "so the cost panels under-count by these calls." + TOTAL_NOTE,
            total(USAGE_MISSING, *f_model),
            bad="orange",
        ),
        count_stat(
            lay,
            "Unpriced calls",
            "Model calls of models with no known price (register_pricing() or the bundled "
            "table); booked at $0, so spend is under-counted." + TOTAL_NOTE,
            total(UNPRICED, *f_model),
            bad="orange",
        ),
        count_stat(
            lay,
            "Unpriced refusals",
            "Calls refused before they ran because the model has no price and the session "
            "enforces a budget (UnpricedModelError)." + TOTAL_NOTE,
            total(LIMIT_HITS, *f_agent, 'techrevati_limit_kind="unpriced"'),
        ),
        stat(
            lay,
            "Fleet spend",
            "US dollars settled into fleet-wide budgets (FleetLimits, shared through Redis by "
            "every process of the fleet)." + TOTAL_NOTE,
            or_zero(total(FLEET_COST, SVC)),
            "currencyUSD",
            decimals=4,
        ),
        count_stat(
            lay,
            "Fleet refusals",
            "Calls refused by a fleet budget or fleet call-rate limit." + TOTAL_NOTE,
            total(FLEET_REFUSALS, SVC),
        ),
        count_stat(
            lay,
            "Fleet store errors",
            "Redis calls of the fleet limits that failed or timed out; while the store is "
            "unreachable fleet limits cannot be checked." + TOTAL_NOTE,
            total(FLEET_STORE_ERRORS, SVC),
        ),
    ]
    p.append(row(lay, "Budgets"))
    p += [
        distribution(
            lay,
            "Budget utilisation at session end",
            "How many sessions with a budget ended in each band of spent / budget_usd (bars "
            "labelled by the band's upper bound: 0.5 = up to half the budget, 1 = up to all "
            "of it, +Inf = over it)." + TOTAL_NOTE,
            UTILIZATION,
            f_agent,
        ),
        timeseries(
            lay,
            "Budget utilisation (p50 / p95 / p99)",
            "Quantiles of spent / budget_usd at session end, estimated from the histogram "
            "buckets; 100% is the whole budget." + RATE_NOTE,
            [(quantile(q, UTILIZATION, *f_agent), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
            "percentunit",
            w=12,
        ),
        timeseries(
            lay,
            "Budget utilisation p95 by role",
            "95th percentile of spent / budget_usd at session end for each agent role." + RATE_NOTE,
            [
                (
                    quantile(0.95, UTILIZATION, *f_agent, group=["gen_ai_agent_name"]),
                    "{{gen_ai_agent_name}}",
                )
            ],
            "percentunit",
            w=12,
        ),
        timeseries(
            lay,
            "Refusals per second by limit kind",
            "Limits that stopped calls, per second, by kind: budget, max_iterations, "
            "unpriced, loop, fleet_budget, fleet_calls (soft budgets left out)." + RATE_NOTE,
            [
                (
                    per_second(LIMIT_HITS, *f_agent, ENFORCED, group=["techrevati_limit_kind"]),
                    "{{techrevati_limit_kind}}",
                )
            ],
            "reqps",
            w=12,
            stack=True,
        ),
        bargauge(
            lay,
            "Refusals by limit kind",
            "Limits that stopped calls per kind over the whole time range (budget, "
            "max_iterations, unpriced, loop, fleet_budget, fleet_calls; soft budgets left "
            "out)." + TOTAL_NOTE,
            total(LIMIT_HITS, *f_agent, ENFORCED, group=["techrevati_limit_kind"]),
            "{{techrevati_limit_kind}}",
            "none",
            w=12,
        ),
    ]
    p.append(row(lay, "Iterations"))
    p += [
        distribution(
            lay,
            "Model calls per session",
            "How many finished sessions admitted each number of model calls (bars labelled by "
            "the band's upper bound). A pile-up at max_iterations means loops hit the cap."
            + TOTAL_NOTE,
            ITERATIONS,
            f_agent,
        ),
        timeseries(
            lay,
            "Model calls per session (p50 / p95) by role",
            "Quantiles of model calls per session (failed ones included), by agent role, "
            "estimated from the buckets of the GenAI conventions' "
            "gen_ai.invoke_agent.inference_calls." + RATE_NOTE,
            [
                (
                    quantile(q, AGENT_INFERENCE_CALLS, *f_agent, group=["gen_ai_agent_name"]),
                    f"p{int(q * 100)} {{{{gen_ai_agent_name}}}}",
                )
                for q in (0.5, 0.95)
            ],
            "short",
            w=12,
        ),
        timeseries(
            lay,
            "Tool calls per session (p50 / p95) by role",
            "Quantiles of tool calls per session (denied and failed ones included), by agent "
            "role, from gen_ai.invoke_agent.tool_calls." + RATE_NOTE,
            [
                (
                    quantile(q, AGENT_TOOL_CALLS, *f_agent, group=["gen_ai_agent_name"]),
                    f"p{int(q * 100)} {{{{gen_ai_agent_name}}}}",
                )
                for q in (0.5, 0.95)
            ],
            "short",
            w=24,
        ),
    ]
    p.append(row(lay, "Tokens and usage gaps"))
    p += [
        timeseries(
            lay,
            "Cache-hit share of input tokens by model",
            "Cache-read input tokens divided by all input tokens, per model." + RATE_NOTE,
            [
                (
                    share_by_model(cache_read, input_tokens),
                    "{{gen_ai_request_model}}",
                )
            ],
            "percentunit",
        ),
        timeseries(
            lay,
            "Reasoning share of output tokens by model",
            "Reasoning tokens divided by all output tokens, per model." + RATE_NOTE,
            [
                (
                    share_by_model(reasoning, output_tokens),
                    "{{gen_ai_request_model}}",
                )
            ],
            "percentunit",
        ),
        timeseries(
            lay,
            "Cache and reasoning tokens per second by kind",
            "Cache-read, cache-write and reasoning tokens per second (each a subset of the "
            "input or output tokens)." + RATE_NOTE,
            [
                (
                    per_second(TOKEN_DETAIL, *f_model, group=["techrevati_token_kind"]),
                    "{{techrevati_token_kind}}",
                )
            ],
            "short",
            stack=True,
        ),
        timeseries(
            lay,
            "Calls without usage and unpriced calls per second by model",
            "Model calls whose response had no usage (booked at an estimate under a budget, "
            "else at $0) or whose model has no price (booked at $0); both make the spend "
            "panels approximate." + RATE_NOTE,
            [
                (
                    per_second(USAGE_MISSING, *f_model, group=["gen_ai_request_model"]),
                    "no usage {{gen_ai_request_model}}",
                ),
                (
                    per_second(UNPRICED, *f_model, group=["gen_ai_request_model"]),
                    "unpriced {{gen_ai_request_model}}",
                ),
            ],
            "reqps",
            w=12,
        ),
        prom_table(
            lay,
            "Unpriced calls by model",
            "Which models have no price: register_pricing() them to count their spend."
            + TOTAL_NOTE,
            total(UNPRICED, *f_model, group=["gen_ai_provider_name", "gen_ai_request_model"]),
            "none",
            "Calls",
        ),
    ]
    p.append(row(lay, "Fleet limits"))
    p += [
        timeseries(
            lay,
            "Fleet spend rate by scope",
            "US dollars per hour settled into each fleet scope's budget (per-second rate x "
            "3600): how fast the fleet burns its shared budget." + RATE_NOTE,
            [
                (
                    f"{per_second(FLEET_COST, SVC, group=['techrevati_fleet_scope'])} * 3600",
                    "{{techrevati_fleet_scope}}",
                )
            ],
            "currencyUSD",
        ),
        bargauge(
            lay,
            "Fleet spend by scope",
            "US dollars settled into each fleet scope over the whole time range." + TOTAL_NOTE,
            total(FLEET_COST, SVC, group=["techrevati_fleet_scope"]),
            "{{techrevati_fleet_scope}}",
            "currencyUSD",
        ),
        bargauge(
            lay,
            "Fleet refusals by scope and kind",
            "Calls refused by each fleet scope's budget (fleet_budget) or call rate "
            "(fleet_calls) over the whole time range." + TOTAL_NOTE,
            total(FLEET_REFUSALS, SVC, group=["techrevati_fleet_scope", "techrevati_limit_kind"]),
            "{{techrevati_fleet_scope}} {{techrevati_limit_kind}}",
            "none",
        ),
        timeseries(
            lay,
            "Fleet store errors per second by scope",
            "Failed or timed-out Redis calls of the fleet limits per second." + RATE_NOTE,
            [
                (
                    per_second(FLEET_STORE_ERRORS, SVC, group=["techrevati_fleet_scope"]),
                    "{{techrevati_fleet_scope}}",
                )
            ],
            "reqps",
            w=24,
        ),
        timeseries(
            lay,
            "Shared sessions: remote sessions and unknown ids per second",
            "Sessions opened in this service under a shared session of another process "
            "(by the parent's role), and requests whose W3C baggage named a shared session "
            "the store does not know (closed, expired or forged: ignored, nothing charged). "
            "A steady stream of unknown ids at an edge service means inbound baggage is not "
            "stripped (docs/shared-sessions.md)." + RATE_NOTE,
            [
                (
                    per_second(REMOTE_SESSIONS, SVC, group=["gen_ai_agent_name"]),
                    "under {{gen_ai_agent_name}}",
                ),
                (per_second(REMOTE_UNKNOWN, SVC), "unknown ids"),
            ],
            "reqps",
            w=24,
        ),
        timeseries(
            lay,
            "Fleet bookings lost by scope",
            "Settlements or clean-ups dropped before reaching Redis (spend not booked "
            "fleet-wide), and windows whose keys vanished mid-window (Redis evicted them or "
            "restarted without persistence: that window's spend and calls restarted from "
            "zero). Both should stay at zero." + RATE_NOTE,
            [
                (
                    per_second(
                        FLEET_DROPPED,
                        SVC,
                        group=["techrevati_fleet_scope", "techrevati_fleet_finish"],
                    ),
                    "dropped {{techrevati_fleet_finish}} {{techrevati_fleet_scope}}",
                ),
                (
                    per_second(FLEET_EVICTIONS, SVC, group=["techrevati_fleet_scope"]),
                    "evicted window {{techrevati_fleet_scope}}",
                ),
            ],
            "reqps",
            w=24,
        ),
    ]
    p.append(row(lay, "Fleet budget burn and alerts"))
    scope = ["techrevati_fleet_scope"]
    budget = f"max by (techrevati_fleet_scope) ({sel(FLEET_BUDGET, SVC)})"
    window = f"max by (techrevati_fleet_scope) ({sel(FLEET_WINDOW, SVC)})"
    spent = f"max by (techrevati_fleet_scope) ({sel(FLEET_SPENT, SVC)})"
    spend_rate = per_second(FLEET_COST, SVC, group=scope)
    p += [
        timeseries(
            lay,
            "Time to exhaustion by fleet scope",
            "How long until each fleet scope has spent its budget for the current window, at "
            "the current spend rate: (budget - spent this window) / USD per second. Empty "
            "while a scope spends nothing. Longer than the time left in the window means the "
            "window resets first. The alert rules record the same at the last hour's rate "
            "(techrevati:fleet_seconds_to_exhaustion, docs/alerts.md)." + RATE_NOTE,
            [
                (
                    f"clamp_min({budget} - {spent}, 0) / ({spend_rate} > 0)",
                    "{{techrevati_fleet_scope}}",
                )
            ],
            "s",
        ),
        timeseries(
            lay,
            "Budget burn rate by fleet scope",
            "Spend rate divided by the budget's even pace (budget / window): 1 spends exactly "
            "the budget over one window. TechrevatiBudgetBurnFast pages when the last hour and "
            "the last 5 minutes are both above 14.4; TechrevatiBudgetBurnSlow when 6 hours and "
            "30 minutes are both above 6 (docs/alerts.md)." + RATE_NOTE,
            [
                (
                    f"{spend_rate} / on (techrevati_fleet_scope) ({budget} / {window})",
                    "{{techrevati_fleet_scope}}",
                )
            ],
            "short",
        ),
        timeseries(
            lay,
            "techrevati alerts pending or firing",
            "The state of collector-config/alerts.yml's alerts (Prometheus' ALERTS series): "
            "1 while an alert is pending or firing, by alert, state and fleet scope. Empty "
            "while nothing is wrong, or when Prometheus does not load the rules.",
            [
                (
                    "max by (alertname, alertstate, techrevati_fleet_scope) "
                    f"({sel(ALERTS, OURS_ALERTS)})",
                    "{{alertname}} {{techrevati_fleet_scope}} ({{alertstate}})",
                )
            ],
            "none",
        ),
        timeseries(
            lay,
            "Spans lost before export by pipeline and reason",
            "Spans the processes could not export, per second: dropped (the export queue was "
            "full), failed (the exporter reported a failure) or abandoned (still queued at "
            "shutdown's deadline). Traces are then incomplete; TechrevatiExportDrops fires."
            + RATE_NOTE,
            [
                (
                    per_second(
                        SPANS_LOST,
                        SVC,
                        group=["techrevati_export_pipeline", "techrevati_export_reason"],
                    ),
                    "{{techrevati_export_pipeline}} {{techrevati_export_reason}}",
                )
            ],
            "ops",
            w=24,
        ),
    ]
    return dashboard(
        "techrevati-budgets",
        "techrevati / Budgets and limits",
        "Budget utilisation, refusals by limit kind, iterations per session, cache and "
        "reasoning token shares, calls booked at $0 and fleet limits from techrevati.runtime.",
        p,
        [
            datasource_variable("prometheus", "prometheus", "Metrics"),
            service_variable(),
            agent_variable(),
            model_variable(),
            provider_variable(),
        ],
    )


DASHBOARDS = {
    "sessions-overview.json": sessions_overview,
    "budgets.json": budgets,
    "tools-permissions.json": tools_and_permissions,
    "reliability.json": reliability,
    "session-drilldown.json": session_drilldown,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build), encoding="utf-8")
        print(f"wrote dashboards/{name}")


if __name__ == "__main__":
    main()
