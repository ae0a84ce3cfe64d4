"""The report as text for a terminal: fixed columns, no colours, bounded length.

Every token column says which count it shows: ``input incl. cached`` is
``gen_ai.usage.input_tokens`` (uncached input plus cache reads and writes, as
the GenAI conventions define it), which is *not* ``summary()``'s uncached
``total_input_tokens``.

Example::

    print(render_report(build_report(records), source="telemetry-out/spans.jsonl"))
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import semconv as sc
from .model import RunReport, unpriced_note

_MAX_SESSION_ROWS = 50
#: The column header of every input-token count the report prints.
INPUT_LABEL = "input incl. cached"
UNATTRIBUTED_LABEL = "(session roll-ups, no call span)"


#: C0 controls but newline, DEL and C1 controls (ESC starts every terminal escape
#: sequence; C1's CSI does on some terminals): each becomes "?".
_CONTROLS = {c: "?" for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if c != 0x0A}


def terminal_safe(text: str) -> str:
    """``text`` with every control character but newline replaced by ``?``.

    Names in a report come from spans (model and role names, files nobody
    vouches for): an escape sequence there could clear the screen, retitle
    the window or write the clipboard. Lone surrogates, which no terminal
    encoding can write, become ``?`` too. One character for one keeps columns.

    Example::

        >>> terminal_safe("gpt-4o\x1b]52;c;aGk=\x07")
        'gpt-4o?]52;c;aGk=?'
    """
    safe = text.translate(_CONTROLS)
    try:
        safe.encode("utf-8")
    except UnicodeEncodeError:
        safe = "".join("?" if "\ud800" <= ch <= "\udfff" else ch for ch in safe)
    return safe


def _usd(value: float) -> str:
    return f"{value:.6f}"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Aligned text columns; ``align`` has one letter per column, ``l`` or ``r``."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(cells, widths, align, strict=True)
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


_EVENT_LABELS = {
    sc.EVENT_HANDOFF: "handoff",
    sc.EVENT_POLICY: "policy evaluation",
    sc.EVENT_QUALITY_GATE: "quality gate",
    sc.EVENT_RECOVERY: "recovery attempt",
}


def render_report(report: RunReport, *, source: str | None = None, runs: str | None = None) -> str:
    """The report as text for a terminal (no colours, fits 100 columns for few tools)."""
    calls = report.model_calls
    tool_calls = sum(row.calls for row in report.tools)
    left_out = unpriced_note(report)
    out = [
        "techrevati-runtime telemetry report: "
        f"{_plural(len(report.sessions) + report.earlier_sessions, 'session')}, "
        f"{_plural(calls, 'model call')}, "
        f"{_plural(tool_calls, 'tool call')}, total cost ${_usd(report.total_cost_usd)}"
        + (f" ({left_out})" if left_out else "")
    ]
    if report.services:
        out.append(f"service: {', '.join(report.services)}")
    if runs:
        out.append(runs)
    if report.span_count == 0:
        out.append("no spans recorded")

    if report.sessions:
        shown = report.sessions[-_MAX_SESSION_ROWS:]
        out += ["", "Sessions"]
        out += _table(
            [
                "role",
                "outcome",
                "duration",
                "turns",
                INPUT_LABEL,
                "output",
                "cost USD",
                "limit hits",
            ],
            [
                [
                    row.role,
                    row.outcome,
                    _duration(row.duration_s),
                    str(row.turns),
                    str(row.input_tokens),
                    str(row.output_tokens),
                    _usd(row.cost_usd),
                    ", ".join(sorted(set(row.limit_hits))) or "-",
                ]
                for row in shown
            ],
            "llrrrrrl",
        )
        earlier = len(report.sessions) - len(shown) + report.earlier_sessions
        if earlier:
            out.append(f"  ... and {_plural(earlier, 'earlier session')}")
        shared = [row for row in report.sessions if row.shared or row.remote_parent]
        if shared:
            out += ["", "Session trees across processes"]
            out += _table(
                ["role", "shared", "remote sessions", "tree cost USD", "remote parent"],
                [
                    [
                        row.role,
                        "yes" if row.shared else "-",
                        str(row.remote_children) if row.shared else "-",
                        _usd(row.tree_cost_usd) if row.tree_cost_usd is not None else "-",
                        row.remote_parent or "-",
                    ]
                    for row in shared[-_MAX_SESSION_ROWS:]
                ],
                "llrrl",
            )

    if report.models or report.unattributed_cost_usd or report.unattributed_calls:
        out += ["", "Model calls (cost per model)"]
        out += _table(
            ["model", "calls", INPUT_LABEL, "output", "cost USD", "errors"],
            [
                *(
                    [
                        row.model,
                        str(row.calls),
                        str(row.input_tokens) if row.tokens_known else "-",
                        str(row.output_tokens) if row.tokens_known else "-",
                        _usd(row.cost_usd),
                        str(row.errors),
                    ]
                    for row in report.models
                ),
                *(
                    [
                        [
                            UNATTRIBUTED_LABEL,
                            str(report.unattributed_calls) if report.unattributed_calls else "-",
                            "-",
                            "-",
                            _usd(report.unattributed_cost_usd),
                            "-",
                        ]
                    ]
                    if report.unattributed_cost_usd or report.unattributed_calls
                    else []
                ),
            ],
            "lrrrrr",
        )

    if report.tools:
        out += ["", "Tools and permission decisions"]
        out += _table(
            ["tool", "calls", "allowed", "denied", "errors", "guardrail blocked"],
            [
                [
                    row.tool,
                    str(row.calls),
                    str(row.allowed),
                    str(row.denied),
                    str(row.errors),
                    str(row.blocked),
                ]
                for row in report.tools
            ],
            "lrrrrr",
        )

    if report.breakers:
        out += ["", "Circuit breakers (state seen on calls)"]
        out += _table(
            ["breaker", "states"],
            [
                [name, ", ".join(f"{state} x{count}" for state, count in sorted(states.items()))]
                for name, states in sorted(report.breakers.items())
            ],
            "ll",
        )

    if report.unpriced_models:
        listed = ", ".join(
            f"{model} ({_plural(count, 'call')})" for model, count in report.unpriced_models.items()
        )
        out += ["", f"Unpriced models (no known price; booked at $0): {listed}"]
    if report.calls_without_usage:
        estimated = min(report.calls_estimated, report.calls_without_usage)
        rest = report.calls_without_usage - estimated
        how = (
            f"{estimated} booked at an estimate, {rest} at $0"
            if estimated
            else "booked at $0: their tokens and cost are not known"
        )
        out += [
            "",
            f"Calls without usage: {report.calls_without_usage} (the response carried no token "
            f"counts; {how})",
        ]
    if report.calls_estimated:
        out.append(
            f"Booked at an estimate: {_plural(report.calls_estimated, 'call')}, $"
            f"{_usd(report.estimated_cost_usd)} (usage never arrived; a budget counted them "
            "from their request and streamed text, else the model's learned cost, else the "
            "session's call_estimate_usd)"
        )

    looped = [(n, row) for n, row in enumerate(report.sessions, 1) if row.loops]
    if looped:
        out += ["", "Loops (repeated tool calls with the same result)"]
        out += _table(
            ["session", "pattern", "tools", "then"],
            [
                [
                    f"{row.role} #{n}",
                    loop.pattern,
                    " -> ".join(loop.tools),
                    "refused" if loop.action == "raise" else "warned",
                ]
                for n, row in looped
                for loop in row.loops
            ],
            "llll",
        )

    out += ["", "Limit hits"]
    if report.limit_hits:
        out += _table(
            ["limit", "session role", "hits"],
            [[kind, role, str(n)] for (kind, role), n in sorted(report.limit_hits.items())],
            "llr",
        )
    else:
        out.append("  none")

    if report.fleet:
        out += ["", "Fleet scopes (shared limits; spend here is what these sessions booked)"]
        out += _table(
            ["scope", "sessions", "cost USD", "refusals"],
            [
                [
                    row.scope,
                    str(row.sessions),
                    _usd(row.cost_usd),
                    ", ".join(f"{kind} {n}" for kind, n in sorted(row.refusals.items())) or "-",
                ]
                for row in report.fleet.values()
            ],
            "lrrl",
        )

    out += ["", "Guardrail violations"]
    if report.guardrail_violations:
        out += _table(
            ["guardrail", "session role", "violations"],
            [
                [name, role, str(n)]
                for (name, role), n in sorted(report.guardrail_violations.items())
            ],
            "llr",
        )
    else:
        out.append("  none")

    if report.other_events:
        counted = [
            _plural(report.other_events[name], label)
            for name, label in _EVENT_LABELS.items()
            if report.other_events[name]
        ]
        if counted:
            out += ["", "Events: " + ", ".join(counted)]

    if report.earlier_sessions:
        out += [
            "",
            f"note: {_plural(report.earlier_sessions, 'earlier session')} "
            f"{'is' if report.earlier_sessions == 1 else 'are'} counted in the totals "
            "above but not listed (the in-memory report keeps a bounded sample of the "
            f"latest); the spans file has {'it' if report.earlier_sessions == 1 else 'them all'}",
        ]
    if report.evicted:
        out += [
            "",
            (
                "note: the oldest span was left out of this in-memory report to bound memory; "
                "the spans file has it"
                if report.evicted == 1
                else f"note: the oldest {report.evicted} spans were left out of this in-memory "
                "report to bound memory; the spans file has them all"
            ),
        ]
    for note in report.notes:
        out += ["", f"note: {note}"]
    if source:
        out += ["", f"spans: {source}"]
    return terminal_safe("\n".join(out) + "\n")


__all__ = ["INPUT_LABEL", "UNATTRIBUTED_LABEL", "render_report", "terminal_safe"]
