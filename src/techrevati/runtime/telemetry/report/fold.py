"""Folding old traces into totals, so the in-memory report stays bounded and exact.

The embedded report (``ReportExporter``) keeps the most recent spans as records
(a bounded sample: their sessions are listed row by row) and folds every older
*complete trace* into a running :class:`RunReport` of totals: model, tool,
breaker, limit, guardrail, event and fleet counts and costs stay exact for the
whole run, and the folded sessions are counted (``earlier_sessions``) but not
listed. Tables keyed by names that come from outside (model, tool and role
names) are bounded too: past ``MAX_ROWS`` distinct names, the rest are added to
one ``(other)`` row.

Example::

    total = empty_report()
    fold_into(total, build_report(trace_records))
"""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

from .model import FleetRow, ModelRow, RunReport, ToolRow

#: Distinct names kept per table of folded totals; the rest share one row.
MAX_ROWS = 1_000
OTHER = "(other)"

K = TypeVar("K")


def empty_report() -> RunReport:
    """A report with nothing in it, to fold parts into."""
    return RunReport(
        sessions=[],
        models=[],
        tools=[],
        breakers={},
        limit_hits=Counter(),
        guardrail_violations=Counter(),
        other_events=Counter(),
        services=[],
        span_count=0,
    )


def fold_into(total: RunReport, part: RunReport) -> None:
    """Add ``part``'s counts and costs to ``total``; its sessions are counted, not kept."""
    total.earlier_sessions += len(part.sessions) + part.earlier_sessions
    total.span_count += part.span_count
    total.total_cost_usd += part.total_cost_usd
    total.unattributed_cost_usd += part.unattributed_cost_usd
    total.unattributed_calls += part.unattributed_calls
    total.calls_without_usage += part.calls_without_usage
    models = {row.model: row for row in total.models}
    for row in part.models:
        name = row.model if row.model in models or len(models) < MAX_ROWS else OTHER
        into = models.setdefault(name, ModelRow(name))
        into.calls += row.calls
        into.input_tokens += row.input_tokens
        into.output_tokens += row.output_tokens
        into.cost_usd += row.cost_usd
        into.errors += row.errors
        into.calls_without_usage += row.calls_without_usage
        into.unpriced_calls += row.unpriced_calls
        into.rollup_calls += row.rollup_calls
    total.models = list(models.values())
    tools = {row.tool: row for row in total.tools}
    for tool_row in part.tools:
        name = tool_row.tool if tool_row.tool in tools or len(tools) < MAX_ROWS else OTHER
        into_tool = tools.setdefault(name, ToolRow(name))
        into_tool.calls += tool_row.calls
        into_tool.allowed += tool_row.allowed
        into_tool.denied += tool_row.denied
        into_tool.errors += tool_row.errors
        into_tool.blocked += tool_row.blocked
    total.tools = list(tools.values())
    for breaker, states in part.breakers.items():
        key = breaker if breaker in total.breakers or len(total.breakers) < MAX_ROWS else OTHER
        total.breakers.setdefault(key, Counter()).update(states)
    _add_counts(total.limit_hits, part.limit_hits, (OTHER, OTHER))
    _add_counts(total.guardrail_violations, part.guardrail_violations, (OTHER, OTHER))
    _add_counts(total.other_events, part.other_events, OTHER)
    for model, count in part.unpriced_models.items():
        key = (
            model
            if model in total.unpriced_models or len(total.unpriced_models) < MAX_ROWS
            else OTHER
        )
        total.unpriced_models[key] = total.unpriced_models.get(key, 0) + count
    for scope, fleet_row in part.fleet.items():
        key = scope if scope in total.fleet or len(total.fleet) < MAX_ROWS else OTHER
        into_fleet = total.fleet.setdefault(key, FleetRow(key))
        into_fleet.sessions += fleet_row.sessions
        into_fleet.cost_usd += fleet_row.cost_usd
        into_fleet.refusals.update(fleet_row.refusals)
    for service in part.services:
        if service not in total.services and len(total.services) < MAX_ROWS:
            total.services.append(service)
    for note in part.notes:
        if note not in total.notes and len(total.notes) < 16:
            total.notes.append(note)


def _add_counts(total: Counter[K], part: Counter[K], other: K) -> None:
    for key, count in part.items():
        total[key if key in total or len(total) < MAX_ROWS else other] += count


def combined(recent: RunReport, folded: RunReport | None) -> RunReport:
    """The report of the kept spans with the folded totals added (a new object)."""
    if folded is None or not folded.span_count:
        return recent
    out = empty_report()
    fold_into(out, folded)
    sessions, earlier = recent.sessions, out.earlier_sessions
    fold_into(out, recent)
    # The kept spans' sessions are listed; only the folded ones are "earlier".
    out.sessions = sessions
    out.earlier_sessions = earlier + recent.earlier_sessions
    out.evicted = recent.evicted
    out.models.sort(key=lambda row: (-row.cost_usd, row.model))
    out.tools.sort(key=lambda row: (-row.calls, row.tool))
    out.services.sort()
    out.unpriced_models = dict(sorted(out.unpriced_models.items()))
    out.fleet = dict(sorted(out.fleet.items()))
    return out
