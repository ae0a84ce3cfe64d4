"""Rules for the bundled dashboards' queries (DESIGN.md §7), as functions.

Each check returns a list of human-readable problems; an empty list is a pass.
The rules work on the parsed query, so they see structure, not spelling:

* every metric is one the package emits, in its observed Prometheus spelling;
* every label used in a matcher, ``by``/``without`` or legend exists on it;
* a counter (``*_total``, ``*_bucket``, ``*_sum``, ``*_count``) appears only as
  ``rate|increase|irate(x[$__rate_interval])`` or as the range-total idiom
  ``last_over_time(x[$__range])`` (whose panel must explain why), with its
  "seen before the range?" check ``last_over_time(x[1w] offset $__range)``;
* ``*_bucket`` appears only as ``histogram_quantile(q, sum by (le, ...) (rate(...)))``,
  or as a distribution over the range: the range-total idiom inside a ``sum by (le, ...)``
  (a bar chart of how many sessions ended in each bucket).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from . import promql
from .grafana import load_names
from .promql import Aggregation, Call, Node, Selector

RATE_FUNCS = frozenset({"rate", "increase", "irate"})
TOTAL_FUNC = "last_over_time"
#: Words a panel description must contain when it shows a range total of a counter.
TOTAL_EXPLANATION = re.compile(r"first sample|short-lived", re.IGNORECASE)
#: Grafana unit ids the dashboards may use (a typo would silently render raw numbers).
KNOWN_UNITS = frozenset(
    {"none", "short", "currencyUSD", "percentunit", "percent", "s", "ms", "reqps", "ops"}
)
GRAFANA_BUILTINS = frozenset(
    {
        "__rate_interval",
        "__range",
        "__range_s",
        "__interval",
        "__interval_ms",
        "__dashboard",
        "__dashboard.uid",
        "__url_time_range",
        "__value.raw",
        "__all",
    }
)


@dataclass(frozen=True)
class Series:
    """One Prometheus series name the package produces."""

    name: str
    metric: str  # the OTel instrument name
    kind: str  # counter | gauge | bucket | sum | count
    labels: frozenset[str]


def prom_label(attribute: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute)


#: Prometheus' series of alert states (one per pending or firing alert), written by the
#: rules of collector-config/alerts.yml; its "metric" is the rules file, not an instrument.
ALERTS = "ALERTS"
ALERT_RULES = Path(__file__).resolve().parents[2] / "collector-config" / "alerts.yml"


def alert_labels() -> frozenset[str]:
    """The labels an ALERTS series of our rules can carry: the alert's own, the ``labels:``
    of each rule and every label an alert expression aggregates by."""
    rules = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    labels = {"alertname", "alertstate"}
    for group in rules["groups"]:
        for rule in group["rules"]:
            labels |= set(rule.get("labels") or {})
            for grouping in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    return frozenset(labels)


def known_series(names: Mapping[str, Any]) -> dict[str, Series]:
    """Every series name (both spellings) with its kind and label set, and ALERTS."""
    common = set(names["resource_labels"]) | set(names["scope_labels"])
    out: dict[str, Series] = {ALERTS: Series(ALERTS, ALERTS, "gauge", alert_labels())}
    for metric, info in names["metrics"].items():
        labels = frozenset(common | {prom_label(a) for a in info["attributes"]})
        for base in {info["scrape"], info["collector"]}:
            if info["instrument"] == "histogram":
                out[base + "_bucket"] = Series(base + "_bucket", metric, "bucket", labels | {"le"})
                out[base + "_sum"] = Series(base + "_sum", metric, "sum", labels)
                out[base + "_count"] = Series(base + "_count", metric, "count", labels)
            else:
                out[base] = Series(base, metric, info["instrument"], labels)
    return out


@cache
def package_series() -> dict[str, Series]:
    """``known_series`` of the recorded name table (read once)."""
    return known_series(load_names())


def needs_what_a_workload_lacks(expr: str) -> bool:
    """True for a query the live tests' workloads cannot make return data: it reads ALERTS
    (those Prometheus instances load no rules; tests/test_alerts_live.py asks it), a
    metric prometheus_names.json lists as not yet observed, or one that stays 0 there."""
    names = load_names()
    unobserved = (
        set(names["not_yet_observed"]["metrics"])
        | set(names["zero_in_live_workloads"]["metrics"])
        | {ALERTS}
    )
    return any(
        s.metric in unobserved
        for sel in promql.selectors(promql.parse(expr))
        for s in resolve(sel, package_series())[0]
    )


def resolve(sel: Selector, series: Mapping[str, Series]) -> tuple[list[Series], list[str]]:
    """The series a selector can match, and problems with its name."""
    problems: list[str] = []
    candidates = set(series)
    constraints = sel.name_matchers()
    if not constraints:
        return [], ["selector has no metric name"]
    for m in constraints:
        if m.op == "=":
            if m.value not in series:
                problems.append(f"unknown metric {m.value!r} (not in prometheus_names.json)")
            candidates &= {m.value}
        elif m.op == "=~":
            rx = re.compile(m.value)
            candidates = {n for n in candidates if rx.fullmatch(n)}
        else:
            problems.append(f"negative __name__ matcher {m.op!r} is not allowed")
    if not candidates and not problems:
        problems.append(f"__name__ regex matches no metric the package emits: {constraints}")
    return [series[n] for n in sorted(candidates)], problems


#: A fixed lookback such as ``1w``: the range total's "seen before the range?" check.
DURATION = re.compile(r"(\d+(ms|[smhdwy]))+")


def _range_total_ok(sel: Selector, parents: tuple[Node, ...]) -> bool:
    """``last_over_time(x[$__range])`` (with or without ``offset $__range``), or the
    check whether a series was seen before the range, ``last_over_time(x[1w] offset
    $__range)``: a fixed lookback, always ending where the range starts."""
    return (
        bool(parents)
        and isinstance(parents[-1], Call)
        and parents[-1].func == TOTAL_FUNC
        and (
            sel.range == "$__range"
            or (
                sel.offset == "$__range"
                and sel.range is not None
                and DURATION.fullmatch(sel.range) is not None
            )
        )
    )


def check_expr(expr: str, description: str, legend: str = "") -> list[str]:
    """All §7 problems of one PromQL target."""
    try:
        tree = promql.parse(expr)
    except promql.PromQLSyntaxError as exc:
        return [f"does not parse: {exc}"]
    series = package_series()
    problems: list[str] = []
    labels_of: dict[int, frozenset[str]] = {}

    for node, parents in promql.walk(tree):
        if isinstance(node, Selector):
            matched, name_problems = resolve(node, series)
            problems += name_problems
            if not matched:
                continue
            available = frozenset.intersection(*(s.labels for s in matched))
            labels_of[id(node)] = available
            for m in node.label_matchers():
                if m.label not in available:
                    problems.append(f"label {m.label!r} does not exist on {node.name_matchers()}")
            kinds = {s.kind for s in matched}
            parent = parents[-1] if parents else None
            if kinds & {"counter", "bucket", "sum", "count"}:
                if isinstance(parent, Call) and parent.func in RATE_FUNCS:
                    # increase() over the range is the range total's third part: a
                    # restarted counter (scrape path), in a panel that explains totals.
                    range_total = (
                        parent.func == "increase"
                        and node.range == "$__range"
                        and TOTAL_EXPLANATION.search(description) is not None
                    )
                    if node.range != "$__rate_interval" and not range_total:
                        problems.append(
                            f"{parent.func}() over [{node.range}]: use [$__rate_interval]"
                        )
                elif _range_total_ok(node, parents):
                    if not TOTAL_EXPLANATION.search(description):
                        problems.append(
                            "range total via last_over_time() but the panel description does "
                            "not explain it (mention the first sample / short-lived processes)"
                        )
                else:
                    where = f"{parent.func}()" if isinstance(parent, Call) else "bare"
                    problems.append(
                        f"counter {node.name_matchers()[0].value!r} used {where}: counters only "
                        "inside rate()/increase() or the last_over_time(...[$__range]) total"
                    )
            in_range_total = _range_total_ok(node, parents) or (
                isinstance(parent, Call) and parent.func == "increase" and node.range == "$__range"
            )
            if "bucket" in kinds and not (in_range_total and _summed_by_le(parents)):
                problems += _check_bucket_chain(parents)
            if "gauge" in kinds and isinstance(parent, Call) and parent.func in RATE_FUNCS:
                problems.append("rate() of a gauge")
        elif isinstance(node, Call) and node.func == "histogram_quantile":
            problems += _check_quantile_call(node)

    # labels used by grouping clauses must exist on every series below them
    for node, _ in promql.walk(tree):
        if isinstance(node, Aggregation) and node.grouping:
            below = [labels_of[id(s)] for s in promql.selectors(node.expr) if id(s) in labels_of]
            for label in node.grouping:
                missing = [lbls for lbls in below if label not in lbls]
                if missing:
                    problems.append(f"groups by {label!r}, which a metric below does not have")
    problems += _check_legend(tree, legend)
    return problems


def _summed_by_le(parents: tuple[Node, ...]) -> bool:
    """The nearest aggregation above a selector is ``sum by (le, ...)``."""
    for node in reversed(parents):
        if isinstance(node, Aggregation):
            return (
                node.op == "sum"
                and not node.without
                and node.grouping is not None
                and "le" in node.grouping
            )
    return False


def _check_bucket_chain(parents: tuple[Node, ...]) -> list[str]:
    chain = list(reversed(parents))  # innermost first
    if (
        len(chain) >= 3
        and isinstance(chain[0], Call)
        and chain[0].func == "rate"
        and isinstance(chain[1], Aggregation)
        and chain[1].op == "sum"
        and not chain[1].without
        and chain[1].grouping is not None
        and "le" in chain[1].grouping
        and isinstance(chain[2], Call)
        and chain[2].func == "histogram_quantile"
    ):
        return []
    return [
        "a _bucket series must appear only as "
        "histogram_quantile(q, sum by (le, ...) (rate(..._bucket[$__rate_interval]))) "
        "or as a range total summed by (le, ...)"
    ]


def _check_quantile_call(node: Call) -> list[str]:
    if len(node.args) != 2 or not isinstance(node.args[0], promql.Number):
        return ["histogram_quantile needs a literal quantile and a vector"]
    q = node.args[0].value
    if not 0 < q < 1:
        return [f"quantile {q} outside (0, 1)"]
    return []


def _outer_groupings(node: Node) -> list[Aggregation]:
    """Aggregations that decide the result's labels (not nested in another one)."""
    if isinstance(node, Aggregation):
        return [node]
    found: list[Aggregation] = []
    for child in node.children():
        found += _outer_groupings(child)
    return found


def _check_legend(tree: Node, legend: str) -> list[str]:
    used = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
    if not used:
        return []
    problems = []
    for agg in _outer_groupings(tree):
        if agg.op in ("topk", "bottomk", "limitk") or agg.without:
            continue
        have = set(agg.grouping or [])
        for label in sorted(used - have):
            problems.append(
                f"legend uses {{{{{label}}}}} but the result is grouped by {sorted(have)}"
            )
    return problems


# --- TraceQL (Tempo targets) ------------------------------------------------------

_TRACEQL_ATTR = re.compile(r"\b(span|resource)\.([A-Za-z_][A-Za-z0-9_.]*)")
_TRACEQL_EVENT = re.compile(r'event:name\s*=\s*"([^"]+)"')
RESOURCE_ATTRIBUTES = frozenset({"service.name", "service.namespace", "service.version"})


def check_traceql(query: str, span_attributes: Iterable[str], events: Iterable[str]) -> list[str]:
    """Attribute and event names in a TraceQL query must be ones the package writes."""
    attrs = set(span_attributes)
    problems = []
    if query.count("{") != query.count("}"):
        problems.append("unbalanced braces")
    for scope, name in _TRACEQL_ATTR.findall(query):
        allowed = attrs if scope == "span" else RESOURCE_ATTRIBUTES
        if name not in allowed:
            problems.append(f"{scope}.{name} is not an attribute techrevati.runtime writes")
    for event in _TRACEQL_EVENT.findall(query):
        if event not in set(events):
            problems.append(f"event {event!r} is not one techrevati.runtime emits")
    return problems
