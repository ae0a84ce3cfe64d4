"""The report as one self-contained HTML page: open it from disk, no server, no network.

Beside :mod:`.text`, and built from the same :class:`~.model.RunReport`, so the
page's totals and tables are the text report's numbers (same rounding: USD to 6
decimals, tokens as integers). It adds what a terminal cannot show well: the
session tree with each subtree's cost, a timeline per session (model calls and
tool calls; refused and failed ones marked; permission decision, breaker state
and price source on hover) and cost by agent, from :mod:`.detail`.

Safe with any input:

* every string from spans reaches the page either through :func:`html.escape`
  or, for the timelines, as JSON in a ``<script type="application/json">``
  block with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc., so no span
  can close the block or open a tag; the script builds nodes with
  ``textContent`` only;
* the page's Content-Security-Policy allows no network at all and runs only the
  one inline script whose hash it names;
* its size is bounded by :class:`~.detail.Bounds` (a sample of sessions, capped
  rows and strings), whatever the size of the spans file.

Example::

    report = build_report(records)
    page = render_html(report, build_detail(records, report), source="spans.jsonl")
    Path("report.html").write_text(page, encoding="utf-8")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from .detail import Bounds, RunDetail, SessionNode, TimelineItem, build_detail, clip
from .html_assets import SCRIPT, STYLE
from .model import RunReport, SpanTree, build_report, unpriced_note
from .read import SpanRecord
from .text import INPUT_LABEL, UNATTRIBUTED_LABEL

_TEXT = 120


def _e(value: object) -> str:
    """Text for an element or attribute (quotes escaped too); long strings cut."""
    return escape(clip(value, _TEXT), quote=True)


def _usd(value: float) -> str:
    return f"{value:.6f}"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``ensure_ascii`` writes U+2028/U+2029 as escapes; ``<``, ``>`` and ``&``
    become ``\\u003c``, ``\\u003e`` and ``\\u0026``, so neither ``</script>`` nor
    ``<!--`` can appear, and ``JSON.parse`` returns the original strings.

    Example::

        >>> script_json({"tool": "</script><b>"})
        '{"tool":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
    """
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(
    table_id: str,
    headers: Sequence[tuple[str, bool]],
    rows: Iterable[Sequence[str]],
    *,
    raw: bool = False,
) -> str:
    """A sortable table; ``headers`` are (label, numeric). Cells are escaped unless ``raw``."""
    head = "".join(
        f'<th class="n">{escape(label)}</th>' if numeric else f"<th>{escape(label)}</th>"
        for label, numeric in headers
    )
    body = []
    for row in rows:
        cells = []
        for (_, numeric), cell in zip(headers, row, strict=True):
            content = cell if raw else _e(cell)
            cells.append(f'<td class="n">{content}</td>' if numeric else f"<td>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _counted(count: int, noun: str) -> str:
    """``1 session``, ``2 sessions``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _earlier(report: RunReport) -> int:
    # Sessions counted in the totals but not listed (a bounded in-memory report
    # folds old traces into totals); absent from reports that list every session.
    earlier = getattr(report, "earlier_sessions", 0)
    return earlier if isinstance(earlier, int) else 0


def _kpis(report: RunReport, detail: RunDetail) -> str:
    calls = report.model_calls
    tool_calls = sum(row.calls for row in report.tools)
    limit_hits = sum(report.limit_hits.values())
    cards = [
        ("sessions", "Sessions", str(len(report.sessions) + _earlier(report)), False),
        ("model-calls", "Model calls", str(calls), False),
        ("tool-calls", "Tool calls", str(tool_calls), False),
        ("total-cost", "Total cost USD", _usd(report.total_cost_usd), False),
        (
            "input-tokens",
            f"Input tokens ({INPUT_LABEL})",
            str(sum(r.input_tokens for r in report.models)),
            False,
        ),
        ("output-tokens", "Output tokens", str(sum(r.output_tokens for r in report.models)), False),
        ("limit-hits", "Limit hits", str(limit_hits), limit_hits > 0),
        ("loops", "Loops", str(detail.loops_total), detail.loops_total > 0),
    ]
    # The total leaves unpriced models' calls out: the card says so, as the text header does.
    left_out = unpriced_note(report)
    notes = {"total-cost": f'<div class="label">{escape(left_out)}</div>'} if left_out else {}
    return "".join(
        f'<div class="kpi{" alert" if alert else ""}" id="kpi-{key}">'
        f'<div class="label">{escape(label)}</div><div class="num">{escape(value)}</div>'
        f"{notes.get(key, '')}</div>"
        for key, label, value, alert in cards
    )


_TREE_COLUMNS = (
    ("role", False),
    ("outcome", False),
    ("cost USD", True),
    ("tree cost USD", True),
    (INPUT_LABEL, True),
    ("output", True),
    ("model calls", True),
    ("tool calls", True),
    ("limit hits, loops", False),
)


def _badges(node: SessionNode) -> str:
    parts = [f'<span class="badge">{_e(kind)}</span>' for kind in node.limit_hits]
    if node.loops:
        parts.append(f'<span class="badge loop">loop x{node.loops}</span>')
    if node.wrap_ups:
        parts.append('<span class="badge wrap">wrap-up</span>')
    if node.shared:
        parts.append('<span class="badge remote" title="a shared session">shared</span>')
    if node.remote_parent_role:
        parts.append(
            '<span class="badge remote" title="opened under a shared session of another '
            f'process">under {_e(node.remote_parent_role)}</span>'
        )
    elif node.remote_parent:
        parts.append(
            f'<span class="badge remote" title="parent span {_e(node.remote_parent)} '
            'is in another process">remote parent</span>'
        )
    return "".join(parts) or "-"


def _session_row(node: SessionNode, index: int) -> str:
    below = (
        _counted(node.descendants, "session") + " below"
        if node.descendants
        else "no child sessions"
    )
    if node.remote_children:
        below += f", {node.remote_children} in another process or service"
    if node.parent is not None and node.depth == 0:
        below += f", child of a {node.parent_role} session not in the sample"
    hover = (
        f"{node.role} · {node.outcome} · {_duration((node.end_ns - node.start_ns) / 1e9)}"
        f" · {below}" + (f" · service {node.service}" if node.service else "")
    )
    indent = min(node.depth, 12) * 18
    cells = [
        f'<span class="role" style="padding-left:{indent}px" title="{_e(hover)}">'
        f"{_e(node.role)}</span>",
        f'<span class="outcome-{_e(node.outcome)}">{_e(node.outcome)}</span>',
        f'<span class="n">{_usd(node.cost_usd)}</span>',
        f'<span class="n">{_usd(node.tree_cost_usd)}</span>',
        f'<span class="n">{node.input_tokens}</span>',
        f'<span class="n">{node.output_tokens}</span>',
        f'<span class="n">{node.calls}</span>',
        f'<span class="n">{node.tool_calls}</span>',
        f"<span>{_badges(node)}</span>",
    ]
    opened = " open" if index == 0 else ""
    return (
        f'<details class="session" id="session-{index}" data-depth="{node.depth}"{opened}>'
        f"<summary>{''.join(cells)}</summary>"
        f'<div class="timeline" id="timeline-{index}"></div></details>'
    )


def _tip(item: TimelineItem, duration_ms: float) -> str:
    # The script puts the kind and name in front (they are in the data already).
    parts = [item.status, f"{duration_ms:.1f} ms"]
    if item.kind == "session":
        if item.cost_usd is not None:
            parts.append(f"own cost ${item.cost_usd:.6f}")
        if item.error_type:
            parts.append(f"error: {item.error_type}")
        return " · ".join(parts)
    if item.kind == "model":
        parts.append(f"tokens in {item.input_tokens} / out {item.output_tokens}")
        if item.cost_usd is not None:
            parts.append(f"cost ${item.cost_usd:.6f}")
        parts.append(f"price source: {item.price_source or 'unknown'}")
        if item.same_call:
            parts.append("the same call as the enclosing turn (counted once)")
    else:
        parts.append(f"permission: {item.permission or 'not checked'}")
    parts.append(f"breaker: {item.breaker or 'none'}")
    if item.error_type:
        parts.append(f"error: {item.error_type}")
    return " · ".join(parts)


def _timeline_data(node: SessionNode) -> dict[str, Any]:
    origin = node.start_ns
    end = max(
        [node.end_ns, *(item.end_ns for item in node.items), *(m.time_ns for m in node.markers)]
    )
    items = []
    for item in node.items:
        length = max(0, item.end_ns - item.start_ns) / 1e6
        items.append(
            {
                "kind": item.kind,
                "name": item.name,
                "status": item.status,
                "same": item.same_call,
                "at_ms": round(max(0, item.start_ns - origin) / 1e6, 3),
                "ms": round(length, 3),
                "tip": _tip(item, length),
            }
        )
    return {
        "role": node.role,
        "duration_ms": round(max(0, end - origin) / 1e6, 3),
        "items": items,
        "more": node.items_total - len(node.items),
        "markers": [
            {
                "kind": marker.kind.replace(" ", "-"),
                "at_ms": round(max(0, marker.time_ns - origin) / 1e6, 3),
                "label": marker.label,
            }
            for marker in node.markers
        ],
    }


def _bar(value: float, largest: float, css: str = "") -> str:
    width = 0 if largest <= 0 else max(1, round(120 * value / largest))
    return f'<span class="bar{css}" style="width:{width}px"></span>'


def _models(report: RunReport, rows: int) -> str:
    if not report.models and not report.unattributed_cost_usd and not report.unattributed_calls:
        return '<p class="empty">no model calls</p>'
    largest = max([r.cost_usd for r in report.models] + [report.unattributed_cost_usd, 0.0])
    shown = report.models[:rows]
    body = [
        [
            _e(r.model),
            str(r.calls),
            str(r.input_tokens) if r.tokens_known else "-",
            str(r.output_tokens) if r.tokens_known else "-",
            _usd(r.cost_usd),
            str(r.errors),
            _bar(r.cost_usd, largest),
        ]
        for r in shown
    ]
    if report.unattributed_cost_usd or report.unattributed_calls:
        body.append(
            [
                escape(UNATTRIBUTED_LABEL),
                str(report.unattributed_calls) if report.unattributed_calls else "-",
                "-",
                "-",
                _usd(report.unattributed_cost_usd),
                "-",
                _bar(report.unattributed_cost_usd, largest),
            ]
        )
    table = _table(
        "models",
        [
            ("model", False),
            ("calls", True),
            (INPUT_LABEL, True),
            ("output", True),
            ("cost USD", True),
            ("errors", True),
            ("", False),
        ],
        body,
        raw=True,
    )
    return table + _more(len(report.models), len(shown), "models")


def _more(total: int, shown: int, what: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="note">{shown} of {total} {escape(what)} listed (largest first)</p>'


def _agents(report: RunReport, detail: RunDetail) -> str:
    outside = report.total_cost_usd - detail.sessions_cost_usd
    if abs(outside) < 5e-7:  # below the 6 printed decimals
        outside = 0.0
    if not detail.agents and not outside:
        return '<p class="empty">no sessions</p>'
    largest = max([n[3] for n in detail.agents] + [outside])
    body = [
        [_e(role), str(sessions), str(calls), _usd(cost), _bar(cost, largest, " agent")]
        for role, sessions, calls, cost in detail.agents
    ]
    if outside:
        # Folded earlier sessions are in the totals but not in the per-agent rows.
        label = (
            "(earlier sessions, and calls outside any session)"
            if _earlier(report)
            else "(outside any session)"
        )
        body.append([label, "-", "-", _usd(outside), _bar(outside, largest, " agent")])
    table = _table(
        "agents",
        [
            ("agent (session role)", False),
            ("sessions", True),
            ("model calls", True),
            ("cost USD", True),
            ("", False),
        ],
        body,
        raw=True,
    )
    return table + _more(detail.agents_total, len(detail.agents), "agents")


def _tools(report: RunReport, rows: int) -> str:
    if not report.tools:
        return '<p class="empty">no tool calls</p>'
    shown = report.tools[:rows]
    table = _table(
        "tools",
        [
            ("tool", False),
            ("calls", True),
            ("allowed", True),
            ("denied", True),
            ("errors", True),
            ("guardrail blocked", True),
        ],
        [
            [r.tool, str(r.calls), str(r.allowed), str(r.denied), str(r.errors), str(r.blocked)]
            for r in shown
        ],
    )
    return table + _more(len(report.tools), len(shown), "tools")


def _limits(report: RunReport, detail: RunDetail, rows: int) -> str:
    out = ["<h2>Limit hits</h2>"]
    if report.limit_hits:
        ordered = sorted(report.limit_hits.items())
        out.append(
            _table(
                "limit-hits",
                [("limit", False), ("session role", False), ("hits", True)],
                [[kind, role, str(n)] for (kind, role), n in ordered[:rows]],
            )
        )
        out.append(_more(len(ordered), min(rows, len(ordered)), "limit kinds and roles"))
    else:
        out.append('<p class="empty" id="no-limit-hits">none</p>')
    if detail.hit_sessions:
        out.append(_hit_sessions(detail))
    out.append("<h2>Loops</h2>")
    if detail.loops:
        out.append(
            _table(
                "loops",
                [("session role", False), ("tool", False), ("pattern", False), ("seen", True)],
                [[loop.role, loop.tool, loop.pattern, str(loop.count)] for loop in detail.loops],
            )
        )
    else:
        out.append('<p class="empty">none detected</p>')
    if detail.wrap_ups_total:
        out.append("<h2>Wrap-ups</h2>")
        out.append(
            _table(
                "wrap-ups",
                [("session role", False), ("detail", False)],
                [list(row) for row in detail.wrap_ups],
            )
        )
        out.append(_more(detail.wrap_ups_total, len(detail.wrap_ups), "wrap-ups"))
    if report.guardrail_violations:
        out.append("<h2>Guardrail violations</h2>")
        out.append(
            _table(
                "guardrails",
                [("guardrail", False), ("session role", False), ("violations", True)],
                [
                    [name, role, str(n)]
                    for (name, role), n in sorted(report.guardrail_violations.items())[:rows]
                ],
            )
        )
    if report.breakers:
        out.append("<h2>Circuit breakers (state seen on calls)</h2>")
        out.append(
            _table(
                "breakers",
                [("breaker", False), ("states", False)],
                [
                    [name, ", ".join(f"{s} x{c}" for s, c in sorted(states.items()))]
                    for name, states in sorted(report.breakers.items())[:rows]
                ],
            )
        )
    if report.fleet:
        out.append("<h2>Fleet scopes</h2>")
        out.append(
            _table(
                "fleet",
                [("scope", False), ("sessions", True), ("cost USD", True), ("refusals", False)],
                [
                    [
                        row.scope,
                        str(row.sessions),
                        _usd(row.cost_usd),
                        ", ".join(f"{k} {n}" for k, n in sorted(row.refusals.items())) or "-",
                    ]
                    for row in list(report.fleet.values())[:rows]
                ],
            )
        )
    return "".join(out)


def _hit_sessions(detail: RunDetail) -> str:
    """One line per session with a limit hit, sampled or not (the sample may not hold all)."""
    shown = {node.id for node in detail.sessions}
    total = detail.hit_sessions_total
    head = f"<h2>Sessions with a limit hit ({total})</h2>"
    table = _table(
        "hit-sessions",
        [
            ("session role", False),
            ("outcome", False),
            ("limits hit", False),
            ("cost USD", True),
            ("model calls", True),
            ("timeline", False),
        ],
        [
            [
                node.role,
                node.outcome,
                ", ".join(node.limit_hits),
                _usd(node.cost_usd),
                str(node.calls),
                "in the tree above" if node.id in shown else "-",
            ]
            for node in detail.hit_sessions
        ],
    )
    return head + table + _more(total, len(detail.hit_sessions), "sessions with a limit hit")


def _notes(report: RunReport) -> list[str]:
    notes = []
    if report.unpriced_models:
        listed = ", ".join(
            f"{clip(model, _TEXT)} ({count})"
            for model, count in list(report.unpriced_models.items())[:20]
        )
        notes.append(f"Unpriced models (no known price; booked at $0): {listed}")
    if report.calls_without_usage:
        notes.append(
            f"Calls without usage: {report.calls_without_usage} (the response carried no "
            "token counts, so their tokens and cost are not known)"
        )
    if report.evicted:
        notes.append(
            "The oldest span was left out of the in-memory report to bound memory; the "
            "spans file has it"
            if report.evicted == 1
            else f"The oldest {report.evicted} spans were left out of the in-memory report "
            "to bound memory; the spans file has them all"
        )
    notes += report.notes
    return notes


_LEGEND = (
    '<p class="legend"><span><i style="background:var(--model)"></i>model call</span>'
    '<span><i style="background:var(--tool)"></i>tool call</span>'
    '<span><i style="background:var(--failed)"></i>failed</span>'
    '<span><i style="border:2px dashed var(--refused)"></i>refused</span>'
    '<span><i style="background:var(--same)"></i>same call as its turn</span>'
    '<span><i style="background:var(--session)"></i>child session</span>'
    '<span><i style="background:var(--limit)"></i>limit hit</span>'
    '<span><i style="background:var(--loop)"></i>loop</span>'
    '<span><i style="background:var(--wrap)"></i>wrap-up</span>'
    "<span>hover a bar or marker for details</span></p>"
)


def render_html(
    report: RunReport,
    detail: RunDetail,
    *,
    source: str | None = None,
    runs: str | None = None,
) -> str:
    """The whole page as a string (UTF-8 when written)."""
    calls = report.model_calls
    sessions = len(report.sessions) + _earlier(report)
    title = (
        f"techrevati-runtime report: {_counted(sessions, 'session')}, "
        f"{_counted(calls, 'model call')}, "
        f"${_usd(report.total_cost_usd)}"
    )
    meta = []
    if report.services:
        meta.append("service: " + ", ".join(clip(s, _TEXT) for s in report.services[:10]))
    if runs:
        meta.append(runs)
    if source:
        meta.append(f"spans: {source}")
    meta.append(f"{_counted(report.span_count, 'span')} read")
    data = {"sessions": [_timeline_data(node) for node in detail.sessions]}
    tree_head = "".join(
        f'<span class="n">{escape(label)}</span>' if numeric else f"<span>{escape(label)}</span>"
        for label, numeric in _TREE_COLUMNS
    )
    tree = "".join(_session_row(node, i) for i, node in enumerate(detail.sessions))
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    policy = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
    rows = detail.bounds.rows
    notes = "".join(f'<p class="note">{escape(clip(n, 400))}</p>' for n in _notes(report))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        "<header><h1>techrevati-runtime report</h1>"
        + "".join(f'<p class="meta">{escape(clip(line, 400))}</p>' for line in meta)
        + "</header><main>"
        f'<section class="kpis" id="kpis">{_kpis(report, detail)}</section>'
        '<section id="tree"><h2>Sessions</h2>'
        f'<p class="note" id="sample-note">{escape(detail.sample_note)}'
        + (
            f" ({_counted(_earlier(report), 'earlier session')} "
            f"{'is' if _earlier(report) == 1 else 'are'} counted in the totals only)"
            if _earlier(report)
            else ""
        )
        + ". Click a session for its timeline; the tree cost is the session's own plus "
        "every session below it.</p>"
        f"{_LEGEND}"
        f'<div class="tree-head">{tree_head}</div>{tree}'
        + ("" if detail.sessions else '<p class="empty">no sessions</p>')
        + "</section>"
        f'<section id="by-model"><h2>Cost by model</h2>{_models(report, rows)}</section>'
        f'<section id="by-agent"><h2>Cost by agent</h2>{_agents(report, detail)}</section>'
        f'<section id="by-tool"><h2>Tools and permission decisions</h2>{_tools(report, rows)}'
        "</section>"
        f'<section id="limits">{_limits(report, detail, rows)}</section>'
        + (f'<section id="notes"><h2>Notes</h2>{notes}</section>' if notes else "")
        + "</main>"
        f'<script type="application/json" id="trr-data">{script_json(data)}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_html(
    path: str | os.PathLike[str],
    records: Sequence[SpanRecord],
    *,
    source: str | None = None,
    runs: str | None = None,
    evicted: int = 0,
    bounds: Bounds | None = None,
    report: RunReport | None = None,
) -> int:
    """Build the report of ``records`` and write its page to ``path``; returns its bytes.

    Written to a new temporary file beside ``path`` (created exclusively, owner-only
    like the spans file it comes from) and renamed over ``path``, so a reader never
    sees half a page and a symlink at ``path`` is replaced, not followed. Raises
    ``OSError`` when the file cannot be written.

    ``report``: the totals, when the caller has them for more spans than
    ``records`` holds (the in-memory report folds old traces into totals); the
    sessions drawn are those of ``records``.
    """
    tree = SpanTree(records)
    if report is None:
        report = build_report(records, evicted=evicted, tree=tree)
    detail = build_detail(records, report, bounds=bounds, tree=tree)
    page = render_html(report, detail, source=source, runs=runs).encode("utf-8")
    target = Path(path)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(page)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return len(page)


__all__ = ["render_html", "script_json", "write_html"]
