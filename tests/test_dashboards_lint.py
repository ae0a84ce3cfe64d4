"""Static rules for the bundled Grafana dashboards (DESIGN.md §7).

The live test (test_prometheus_dashboards.py) proves the queries return the right
data; this one proves they are built the right way and stay so: datasources by
variable, filters from label_values on our own metrics, titles, descriptions and
units everywhere, counters only inside rate()/increase() (or the documented range
total), quantiles only from summed bucket rates, and only metric and label names
the package really emits.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import grafana, lint, promql
from techrevati.runtime.telemetry import semconv

DASHBOARDS = grafana.dashboard_files()
LOADED = {path.name: grafana.load(path) for path in DASHBOARDS}
PROM_TARGETS = [
    t
    for path in DASHBOARDS
    for t in grafana.iter_targets(path, LOADED[path.name])
    if t.datasource_type == "prometheus"
]
TEMPO_TARGETS = [
    t
    for path in DASHBOARDS
    for t in grafana.iter_targets(path, LOADED[path.name])
    if t.datasource_type == "tempo"
]
SEMCONV_STRINGS = {v for k, v in vars(semconv).items() if k.isupper() and isinstance(v, str)}
SEMCONV_METRICS = {v for k, v in vars(semconv).items() if k.startswith("METRIC_")}
SEMCONV_EVENTS = {v for k, v in vars(semconv).items() if k.startswith("EVENT_")}


def _panels(name: str) -> list[dict[str, Any]]:
    return [p for p in grafana.iter_panels(LOADED[name]) if p.get("type") != "row"]


def test_the_five_dashboards_exist() -> None:
    assert sorted(LOADED) == [
        "budgets.json",
        "reliability.json",
        "session-drilldown.json",
        "sessions-overview.json",
        "tools-permissions.json",
    ]


def test_committed_json_matches_the_generator() -> None:
    spec = importlib.util.spec_from_file_location(
        "dashboards_build", grafana.DASHBOARD_DIR / "build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, build in module.DASHBOARDS.items():
        committed = (grafana.DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert committed == module.render(build), (
            f"dashboards/{name} differs from dashboards/build.py: "
            "run `python dashboards/build.py` and commit the result"
        )


def test_uids_and_titles_are_unique() -> None:
    uids = [d["uid"] for d in LOADED.values()]
    titles = [d["title"] for d in LOADED.values()]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles
    for uid in uids:
        assert re.fullmatch(r"[a-z0-9-]{1,40}", uid), f"uid {uid!r} must be short and url-safe"


@pytest.mark.parametrize("name", sorted(LOADED))
def test_panel_ids_unique_and_grid_sane(name: str) -> None:
    panels = list(grafana.iter_panels(LOADED[name]))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{name}: {p['title']!r} overflows the grid"


@pytest.mark.parametrize("name", sorted(LOADED))
def test_every_panel_has_title_description_and_known_unit(name: str) -> None:
    for panel in grafana.iter_panels(LOADED[name]):
        assert panel.get("title", "").strip(), f"{name}: a panel has no title"
        if panel["type"] == "row":
            continue
        assert len(panel.get("description", "").strip()) >= 30, (
            f"{name}: {panel['title']!r} needs a description saying what it answers"
        )
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"{name}: {panel['title']!r} has no unit"
        assert unit in lint.KNOWN_UNITS, f"{name}: {panel['title']!r} unit {unit!r} unknown"
        assert panel.get("targets"), f"{name}: {panel['title']!r} has no query"


def _datasource_refs(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                found.append((f"{path}.{key}", value))
            found += _datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _datasource_refs(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("name", sorted(LOADED))
def test_datasources_only_by_variable(name: str) -> None:
    dash = LOADED[name]
    ds_vars = {v["name"]: v["query"] for v in grafana.variables(dash) if v["type"] == "datasource"}
    for path, ref in _datasource_refs(dash):
        uid = ref.get("uid", "")
        if ref.get("type") == "grafana" and path.startswith(".annotations"):
            continue  # Grafana's built-in annotation source, not a datasource instance
        m = re.fullmatch(r"\$\{(\w+)\}", uid)
        assert m, f"{name}{path}: hard-coded datasource uid {uid!r}; use a datasource variable"
        var = m.group(1)
        assert var in ds_vars, f"{name}{path}: ${{{var}}} is not a datasource variable"
        assert ref.get("type") == ds_vars[var], f"{name}{path}: type does not match ${{{var}}}"
    for var in ds_vars:
        assert var in grafana.DATASOURCE_VARIABLES, f"{name}: unexpected datasource var {var}"


@pytest.mark.parametrize("name", sorted(LOADED))
def test_filter_variables_come_from_our_metrics(name: str) -> None:
    series = lint.known_series(grafana.load_names())
    for var in grafana.variables(LOADED[name]):
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query == var["definition"], f"{name}: ${var['name']} definition/query differ"
        assert var["datasource"]["uid"] == "${prometheus}", (
            f"{name}: ${var['name']} must query the ${{prometheus}} variable"
        )
        sel, label = promql.parse_label_values(query)
        assert sel is not None, f"{name}: ${var['name']} must name our metrics in label_values()"
        matched, problems = lint.resolve(sel, series)
        assert not problems, f"{name}: ${var['name']}: {problems}"
        for s in matched:
            assert label in s.labels, f"{name}: ${var['name']}: {s.name} has no label {label!r}"
            for m in sel.label_matchers():
                assert m.label in s.labels, f"{name}: ${var['name']}: {s.name} lacks {m.label}"
        if var.get("includeAll"):
            assert var.get("allValue") == ".*", f"{name}: ${var['name']} 'All' must be '.*'"


@pytest.mark.parametrize("name", sorted(LOADED))
def test_every_variable_used_is_declared(name: str) -> None:
    dash = LOADED[name]
    declared = {v["name"] for v in grafana.variables(dash)}
    for target in grafana.iter_targets(Path(name), dash):
        text = target.target.get("expr") or target.target.get("query") or ""
        for var in grafana.variable_names(text):
            assert var in declared or var in lint.GRAFANA_BUILTINS, (
                f"{target.where}: ${var} is not declared"
            )
    for var in grafana.variables(dash):
        for used in grafana.variable_names(str(var.get("definition", ""))):
            assert used in declared, f"{name}: ${var['name']} uses undeclared ${used}"


@pytest.mark.parametrize("target", PROM_TARGETS, ids=lambda t: t.where)
def test_promql_target_follows_the_rules(target: grafana.Target) -> None:
    problems = lint.check_expr(
        target.target["expr"],
        target.panel.get("description", ""),
        target.target.get("legendFormat", ""),
    )
    assert not problems, f"{target.where}: {target.target['expr']}\n  " + "\n  ".join(problems)


def test_promql_targets_exist() -> None:
    assert len(PROM_TARGETS) >= 40


@pytest.mark.parametrize("target", TEMPO_TARGETS, ids=lambda t: t.where)
def test_tempo_target_uses_real_attribute_names(target: grafana.Target) -> None:
    assert target.target.get("queryType") == "traceql", f"{target.where}: use a TraceQL query"
    problems = lint.check_traceql(target.target["query"], SEMCONV_STRINGS, SEMCONV_EVENTS)
    assert not problems, f"{target.where}: {problems}"


def test_overview_has_the_design_kpis() -> None:
    titles = {p["title"] for p in _panels("sessions-overview.json") if p["type"] == "stat"}
    for kpi in (
        "Sessions",
        "Success rate",
        "Cost",
        "Tokens",
        "Cost per session",
        "Tool calls",
        "Permission denials",
        "Budget hits",
        "Iteration-cap hits",
    ):
        assert kpi in titles, f"KPI row lacks {kpi!r}"


def test_budgets_dashboard_answers_the_budget_questions() -> None:
    """Issue 15 point 4: each question has a panel, on the metric that answers it."""
    panels = {p["title"]: p for p in _panels("budgets.json")}
    wanted = {
        "Budget utilisation at session end": "techrevati_budget_utilization_bucket",
        "Budget utilisation (p50 / p95 / p99)": "techrevati_budget_utilization_bucket",
        "Refusals by limit kind": "techrevati_limit_hits_total",
        "Model calls per session": "techrevati_session_iterations_bucket",
        "Cache-hit share of input tokens": "techrevati_token_detail_total",
        "Reasoning share of output tokens": "techrevati_token_detail_total",
        "Calls without usage": "techrevati_usage_missing_total",
        "Unpriced calls": "techrevati_cost_unpriced_calls_total",
        "Fleet spend rate by scope": "techrevati_fleet_cost_USD_total",
        "Fleet refusals by scope and kind": "techrevati_fleet_refusals_total",
        "Fleet store errors": "techrevati_fleet_store_errors_total",
    }
    for title, metric in wanted.items():
        assert title in panels, f"budgets.json lacks {title!r}"
        exprs = " ".join(t["expr"] for t in panels[title]["targets"])
        assert metric in exprs, f"{title!r} does not chart {metric}"
    by_kind = panels["Refusals by limit kind"]["targets"][0]
    assert "sum by (techrevati_limit_kind)" in by_kind["expr"]
    for title in ("Budget utilisation at session end", "Model calls per session"):
        target = panels[title]["targets"][0]
        # Grafana turns cumulative le buckets into per-bucket bars only in heatmap format.
        assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}", title
        assert target["expr"].startswith("sum by (le) ("), title
    for title, kind, token_type in (
        ("Cache-hit share of input tokens", "cache_read", "input"),
        ("Reasoning share of output tokens", "reasoning", "output"),
    ):
        expr = panels[title]["targets"][0]["expr"]
        numerator, denominator = expr.split(" / ")
        assert f'techrevati_token_kind="{kind}"' in numerator, title
        assert f'gen_ai_token_type="{token_type}"' in denominator, title


def test_drilldown_is_a_traceql_table_of_sessions_that_links_to_the_trace() -> None:
    panels = _panels("session-drilldown.json")
    tables = [p for p in panels if p["type"] == "table"]
    sessions = next(p for p in tables if p["title"] == "Sessions")
    query = sessions["targets"][0]["query"]
    assert f'span.{semconv.GEN_AI_OPERATION_NAME} = "{semconv.OP_INVOKE_AGENT}"' in query
    links = [
        link
        for o in sessions["fieldConfig"]["overrides"]
        if o["matcher"]["options"] == "traceID"
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links and "var-trace_id=${__value.raw}" in links[0]["url"]
    trace = next(p for p in panels if p["type"] == "traces")
    assert trace["targets"][0]["query"] == "${trace_id}"


def test_breaker_timeline_maps_the_numeric_states() -> None:
    panel = next(p for p in _panels("reliability.json") if p["type"] == "state-timeline")
    mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {int(k): v["text"].replace("-", "_") for k, v in mapping.items()} == {
        v: k for k, v in semconv.BREAKER_STATE_VALUE.items()
    }


# --- the name table itself -----------------------------------------------------


def test_name_table_covers_exactly_the_semconv_metrics() -> None:
    names = grafana.load_names()
    assert set(names["metrics"]) == SEMCONV_METRICS
    for metric, info in names["metrics"].items():
        for attribute in info["attributes"]:
            assert attribute in SEMCONV_STRINGS, f"{metric}: {attribute} is not in semconv.py"
        assert info["scrape"] == info["collector"] or (
            info["instrument"] == "gauge" and info["unit"] == "1"
        ), f"{metric}: the two paths only differ for unit-1 gauges"


def test_every_metric_is_shown_somewhere() -> None:
    series = lint.known_series(grafana.load_names())
    shown: set[str] = set()
    for target in PROM_TARGETS:
        for sel in promql.selectors(promql.parse(target.target["expr"])):
            matched, _ = lint.resolve(sel, series)
            shown |= {s.metric for s in matched}
    shown.discard(lint.ALERTS)  # the rules' alert states, not an instrument
    assert shown == SEMCONV_METRICS, f"never charted: {sorted(SEMCONV_METRICS - shown)}"


# --- the lint catches the classic mistakes --------------------------------------

BAD_QUERIES = {
    "raw counter summed": "sum(techrevati_cost_usd_USD_total)",
    "guessed metric name": "sum(rate(techrevati_cost_USD_total[$__rate_interval]))",
    "averaged buckets": (
        "avg(rate(gen_ai_client_operation_duration_seconds_bucket[$__rate_interval]))"
    ),
    "quantile without le": (
        "histogram_quantile(0.9, sum by (gen_ai_request_model) "
        "(rate(gen_ai_client_operation_duration_seconds_bucket[$__rate_interval])))"
    ),
    "group by a missing label": (
        "sum by (gen_ai_system) (rate(techrevati_cost_usd_USD_total[$__rate_interval]))"
    ),
    "filter on a missing label": (
        'sum(rate(techrevati_sessions_total{model="x"}[$__rate_interval]))'
    ),
    "hard-coded window": "sum(rate(techrevati_tool_calls_total[5m]))",
    "total without explanation": "sum(last_over_time(techrevati_sessions_total[$__range]))",
    "max_over_time of a counter": "sum(max_over_time(techrevati_sessions_total[$__range]))",
    "fixed-window total": "sum(last_over_time(techrevati_sessions_total[1w]))",
    "fixed-window total offset": "sum(last_over_time(techrevati_sessions_total[1w] offset 1h))",
    "rate of a gauge": 'rate({__name__="techrevati_breaker_state"}[$__rate_interval])',
    "bucket total not summed by le": (
        "sum(last_over_time(techrevati_budget_utilization_bucket[$__range]))"
    ),
    "bucket rate summed by le outside a quantile": (
        "sum by (le) (rate(techrevati_budget_utilization_bucket[$__rate_interval]))"
    ),
}


@pytest.mark.parametrize("expr", BAD_QUERIES.values(), ids=list(BAD_QUERIES))
def test_lint_rejects(expr: str) -> None:
    assert lint.check_expr(expr, "a description that explains nothing in particular")


def test_lint_rejects_legend_label_lost_by_aggregation() -> None:
    expr = "sum(rate(techrevati_sessions_total[$__rate_interval]))"
    assert lint.check_expr(expr, "x", "{{gen_ai_agent_name}}")


def test_lint_rejects_unknown_traceql_attribute() -> None:
    assert lint.check_traceql('{ span.gen_ai.agent = "x" }', SEMCONV_STRINGS, SEMCONV_EVENTS)


def test_drilldown_shows_budget_use_per_session_from_traces() -> None:
    """Metrics carry no session id; the per-session budget view is a TraceQL table."""
    panels = {p["title"]: p for p in _panels("session-drilldown.json")}
    query = panels["Sessions with a budget: spent against limit"]["targets"][0]["query"]
    assert f"span.{semconv.BUDGET_LIMIT_USD} > 0" in query
    for attribute in (
        semconv.BUDGET_SPENT_USD,
        semconv.BUDGET_LIMIT_USD,
        semconv.COST_TREE_USD,
        semconv.SESSION_CALLS_WITHOUT_USAGE,
        semconv.SESSION_UNPRICED_CALLS,
    ):
        assert f"span.{attribute}" in query.split("select(", 1)[1], attribute


# --- alerts and dashboards agree on names ------------------------------------------


def _alert_series() -> dict[str, lint.Series]:
    """What the alert rules may read: the package's series, the collector's own counters,
    and the series the rules file itself records."""
    names = grafana.load_names()
    series = dict(lint.known_series(names))
    own = names["collector_self_metrics"]
    for name, kind in own["metrics"].items():
        labels = frozenset({"job", "instance", *own["labels"][kind]})
        series[name] = lint.Series(name, "otelcol", "counter", labels)
    rules = yaml.safe_load(lint.ALERT_RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                name = rule["record"]
                series[name] = lint.Series(
                    name, "rule", "gauge", frozenset({"techrevati_fleet_scope"})
                )
    return series


def test_alerts_and_dashboards_use_the_same_metric_names() -> None:
    """Every name an alert rule reads is a recorded spelling (prometheus_names.json), the
    collector's own, or recorded by the rules file; every label it matches or groups by
    exists on what it reads; and every package metric an alert watches is on a dashboard."""
    series = _alert_series()
    rules = yaml.safe_load(lint.ALERT_RULES.read_text(encoding="utf-8"))
    watched: set[str] = set()
    problems: list[str] = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            tree = promql.parse(rule["expr"])
            labels: set[str] = set()
            for sel in promql.selectors(tree):
                matched, trouble = lint.resolve(sel, series)
                problems += [f"{name}: {t}" for t in trouble]
                watched |= {s.metric for s in matched}
                for matcher in sel.matchers:
                    if matcher.label != "__name__" and not all(
                        matcher.label in s.labels for s in matched
                    ):
                        problems.append(f"{name}: no label {matcher.label!r} on {sel}")
                labels |= {label for s in matched for label in s.labels}
            for grouping in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                for label in (g.strip() for g in grouping.split(",")):
                    if label not in labels:
                        problems.append(f"{name}: groups by {label!r}, which it never reads")
    assert not problems, "\n".join(problems)
    shown: set[str] = set()
    for target in PROM_TARGETS:
        for sel in promql.selectors(promql.parse(target.target["expr"])):
            shown |= {s.metric for s in lint.resolve(sel, series)[0]}
    package = watched & SEMCONV_METRICS
    assert package, "the alert rules read none of the package's metrics"
    assert package <= shown, f"alerted on but never charted: {sorted(package - shown)}"


def test_the_name_check_catches_an_alert_on_a_misspelt_metric() -> None:
    series = _alert_series()
    (sel,) = promql.selectors(promql.parse("sum(rate(techrevati_fleet_cost_usd_total[5m])) > 0"))
    assert lint.resolve(sel, series)[1], "a misspelt name must be a problem"


#: The "is this series new?" check of a range total or an alert rule: the lookback
#: and the offset of ``unless last_over_time(x[lookback] offset o)``.
NEW_SERIES_CHECK = re.compile(
    r"unless last_over_time\(\w+(?:\{[^}]*\})?\[([^\]]+)\] offset ([^)]+)\)"
)


def test_a_range_total_reads_a_series_as_new_only_when_unseen_for_a_week() -> None:
    """Every range total asks for a sample in the week before the range, as the alerts do.

    Looking back only one range (``x[$__range] unless x[$__range] offset $__range``) read a
    series that resumed after a gap longer than the range (collector restart, Prometheus
    outage, missed scrapes) as new: a $100 lifetime counter resuming in a 1-hour view
    showed $100 spent in that hour (test_dashboard_totals.py runs those cases).
    """
    exprs = [t.target["expr"] for t in PROM_TARGETS]
    checks = [c for e in exprs for c in NEW_SERIES_CHECK.findall(e)]
    totals = sum(e.count("unless last_over_time(") for e in exprs)
    assert checks and len(checks) == totals, "a range total whose new-series check did not parse"
    wrong = sorted({c for c in checks if c != ("1w", "$__range")})
    assert not wrong, f"new-series checks other than [1w] offset $__range: {wrong}"
    rules = yaml.safe_load(lint.ALERT_RULES.read_text(encoding="utf-8"))
    alert_lookbacks = {
        lookback
        for group in rules["groups"]
        for rule in group["rules"]
        for lookback, _ in NEW_SERIES_CHECK.findall(rule["expr"])
    }
    assert alert_lookbacks == {"1w"}, f"the alert rules look back {alert_lookbacks}"
