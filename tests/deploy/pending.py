"""Metrics the dashboards chart that the package does not record yet on this branch.

The dashboards chart every metric in telemetry/semconv.py (the lint insists);
the live tests ask every target for data except those reading a metric or a
limit kind listed here. The core records budget utilisation and iterations at
session end and token detail, usage gaps and unpriced calls per call; the fleet
level records fleet_*; the core raises UnpricedModelError (limit kind
"unpriced"). Each entry leaves this file when main records it: keep it empty.
"""

from __future__ import annotations

from . import lint, promql
from .grafana import Target

NOT_YET_RECORDED: frozenset[str] = frozenset(
    {
        "techrevati.budget.utilization",
        "techrevati.session.iterations",
        "techrevati.token.detail",
        "techrevati.usage.missing",
        "techrevati.cost.unpriced_calls",
        "techrevati.fleet.cost",
        "techrevati.fleet.refusals",
        "techrevati.fleet.store_errors",
    }
)
KINDS_NOT_YET_RECORDED: frozenset[str] = frozenset({"unpriced"})


def charts_only_recorded(target: Target) -> bool:
    """Whether every metric and limit kind ``target`` reads is recorded already."""
    expr: str = target.target["expr"]
    if any(f'techrevati_limit_kind="{kind}"' in expr for kind in KINDS_NOT_YET_RECORDED):
        return False
    series = lint.package_series()
    for sel in promql.selectors(promql.parse(expr)):
        matched, _ = lint.resolve(sel, series)
        if any(s.metric in NOT_YET_RECORDED for s in matched):
            return False
    return True
