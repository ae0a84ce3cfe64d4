"""What the HTML report shows beyond the text report: the session tree and timelines.

:func:`build_detail` takes the span records and the :class:`~.model.RunReport`
built from them and adds, per session, where it sits in the session tree
(parent, children, the spend of its whole subtree), and for a bounded sample of
sessions a timeline of its model calls and tool calls with the markers of its
events (limit hits, loops, wrap-ups, handoffs).

Bounded whatever the input: the tree aggregates are computed over every session
(a few numbers each), but only :attr:`Bounds.sessions` sessions are described
in full, each with at most :attr:`Bounds.items` timeline entries, and every
string is cut to :attr:`Bounds.text` characters. The sample keeps the
:attr:`Bounds.expensive` most expensive sessions, then every session with a
limit hit (the most expensive first, up to the bound), then the most expensive
others; which ones were kept is stated in :attr:`RunDetail.sample_note`. Every
session with a limit hit is also listed in one line each (up to
:attr:`Bounds.hit_rows`), sampled or not.

A session whose parent span is not in the records (it lives in another process,
e.g. a shared session's child started from a propagated context) is a root here
with :attr:`SessionNode.remote_parent` set: the same parent link that joins the
tree when both processes' spans files are read together.

Example::

    report = build_report(records)
    detail = build_detail(records, report)
    [node.role for node in detail.sessions if node.parent is None]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import semconv as sc
from ..readings.recognise import is_same_call
from .model import RunReport, SessionRow, SpanTree
from .read import EventRecord, SpanRecord

_Key = tuple[str, str]

#: Events drawn on a timeline, and the word each is shown with.
MARKED_EVENTS: Mapping[str, str] = {
    sc.EVENT_LIMIT_HIT: "limit hit",
    sc.EVENT_LOOP_DETECTED: "loop",
    sc.EVENT_WRAP_UP: "wrap-up",
    sc.EVENT_HANDOFF: "handoff",
    sc.EVENT_GUARDRAIL: "guardrail",
}


@dataclass(frozen=True)
class Bounds:
    """How much of a run the page describes in full (its size follows from these)."""

    #: Sessions described in full (tree node and timeline).
    sessions: int = 100
    #: Of these, always the most expensive ones.
    expensive: int = 20
    #: Sessions with a limit hit listed in one line each.
    hit_rows: int = 2000
    #: Timeline entries per session (model calls and tool calls, in start order).
    items: int = 100
    #: Markers (events) per session.
    markers: int = 30
    #: Characters kept of any string read from spans.
    text: int = 120
    #: Characters kept of each string on a timeline entry or marker (there are many).
    label: int = 60
    #: Rows per aggregate table (models, agents, tools, limit hits, loops).
    rows: int = 100


@dataclass
class TimelineItem:
    """One model call or tool call of a session, for the timeline."""

    kind: str  # "model", "tool" or "session" (a child session)
    name: str
    start_ns: int
    end_ns: int
    #: "ok", "failed" or "refused" (permission denied or guardrail blocked).
    status: str
    error_type: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    price_source: str = ""
    permission: str = ""
    breaker: str = ""
    #: True for a library model span inside one of ours (the same call; not counted twice).
    same_call: bool = False


@dataclass
class Marker:
    """One event of a session (limit hit, loop, wrap-up, handoff, guardrail)."""

    kind: str
    time_ns: int
    label: str


@dataclass
class SessionNode:
    """One session in the tree: its own numbers and its subtree's."""

    id: str  # "<trace id>/<span id>", unique across processes of one trace
    role: str
    outcome: str
    start_ns: int
    end_ns: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    calls: int
    tool_calls: int
    limit_hits: list[str]
    loops: int
    wrap_ups: int
    service: str = ""
    #: The enclosing session's id, when its span is in the records.
    parent: str | None = None
    #: A shared session (its limits hold across processes).
    shared: bool = False
    #: The role of the shared session in another process this one was opened under.
    remote_parent_role: str = ""
    #: Remote children the session span itself reports (shared sessions).
    reported_remote_children: int = 0
    #: The enclosing session's role (shown when that session is not in the sample).
    parent_role: str = ""
    #: The parent span id when that span is not in the records (another process).
    remote_parent: str | None = None
    children: list[str] = field(default_factory=list)
    #: Sessions below this one, at any depth (all of them, not only the sampled).
    descendants: int = 0
    remote_children: int = 0
    #: Own cost plus every descendant's here, or the span's ``techrevati.cost.tree_usd``
    #: when that is larger (it counts remote children whose spans are elsewhere).
    tree_cost_usd: float = 0.0
    reported_tree_cost_usd: float | None = None
    #: Filled for the sampled sessions only.
    items: list[TimelineItem] = field(default_factory=list)
    items_total: int = 0
    markers: list[Marker] = field(default_factory=list)
    markers_total: int = 0
    sampled: bool = False
    #: Sampled ancestors above it (its indent in the tree as shown).
    depth: int = 0


@dataclass
class Loop:
    """A loop seen in a session (span event ``techrevati.loop.detected``)."""

    session: str
    role: str
    tool: str
    pattern: str
    count: int = 1


@dataclass
class RunDetail:
    """The tree and the sampled sessions, with what was left out said in words."""

    #: Sampled sessions, in tree order (a parent before its children).
    sessions: list[SessionNode]
    sessions_total: int
    sample_note: str
    #: Every session with a limit hit (up to Bounds.hit_rows), most expensive first.
    hit_sessions: list[SessionNode]
    hit_sessions_total: int
    #: Cost by agent role: (role, sessions, calls, cost), most expensive first.
    agents: list[tuple[str, int, int, float]]
    agents_total: int
    #: Every session's own cost, summed (the run's total less calls outside sessions).
    sessions_cost_usd: float
    loops: list[Loop]
    loops_total: int
    wrap_ups: list[tuple[str, str]]  # (session role, what was wrapped up)
    wrap_ups_total: int
    bounds: Bounds


def clip(value: object, limit: int) -> str:
    """``value`` as one line of at most ``limit`` characters, control characters dropped."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit * 4:
        text = text[: limit * 4]  # bound the work below on huge strings
    text = "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if number == number and abs(number) != float("inf") else 0.0


def _node_id(key: _Key) -> str:
    return f"{key[0]}/{key[1]}"


def _status(record: SpanRecord) -> str:
    attrs = record.attributes
    if attrs.get(sc.PERMISSION_DECISION) == sc.PERMISSION_DENY:
        return "refused"
    if attrs.get(sc.GUARDRAIL_OUTCOME) == sc.GUARDRAIL_BLOCKED:
        return "refused"
    if record.error or sc.ERROR_TYPE in attrs:
        return "failed"
    return "ok"


def _item(record: SpanRecord, tree: SpanTree, key: _Key, same: bool, text: int) -> TimelineItem:
    attrs = record.attributes
    breaker = attrs.get(sc.BREAKER_NAME)
    breaker_text = (
        f"{clip(breaker, text)}: {clip(attrs.get(sc.BREAKER_STATE) or 'unknown', 20)}"
        if breaker
        else ""
    )
    reading = tree.readings.get(key)
    if record.operation == sc.OP_INVOKE_AGENT:
        role = attrs.get(sc.GEN_AI_AGENT_NAME) or record.subject
        return TimelineItem(
            kind="session",
            name=clip(role, text),
            start_ns=record.start_ns,
            end_ns=record.end_ns,
            status="failed" if record.error or sc.ERROR_TYPE in attrs else "ok",
            error_type=clip(attrs.get(sc.ERROR_TYPE) or "", text),
            cost_usd=_num(attrs[sc.COST_USD]) if sc.COST_USD in attrs else None,
        )
    if reading is None:
        tool = attrs.get(sc.GEN_AI_TOOL_NAME) or record.subject
        return TimelineItem(
            kind="tool",
            name=clip(tool, text),
            start_ns=record.start_ns,
            end_ns=record.end_ns,
            status=_status(record),
            error_type=clip(attrs.get(sc.ERROR_TYPE) or "", text),
            permission=clip(attrs.get(sc.PERMISSION_DECISION) or "", 20),
            breaker=breaker_text,
        )
    usage = reading.usage
    response_model = attrs.get(sc.GEN_AI_RESPONSE_MODEL)
    model = (response_model if isinstance(response_model, str) else "") or reading.model
    return TimelineItem(
        kind="model",
        name=clip(model or record.subject or "(unknown)", text),
        start_ns=record.start_ns,
        end_ns=record.end_ns,
        status=_status(record),
        error_type=clip(attrs.get(sc.ERROR_TYPE) or "", text),
        input_tokens=(
            usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            if usage is not None
            else 0
        ),
        output_tokens=usage.output_tokens if usage is not None else 0,
        cost_usd=_num(attrs[sc.COST_USD]) if sc.COST_USD in attrs else None,
        price_source=clip(attrs.get(sc.COST_SOURCE) or "", 40),
        breaker=breaker_text,
        same_call=same,
    )


def _marker(event: EventRecord, record: SpanRecord, text: int) -> Marker | None:
    kind = MARKED_EVENTS.get(event.name)
    if kind is None:
        return None
    attrs = event.attributes
    if event.name == sc.EVENT_LIMIT_HIT:
        detail = str(attrs.get(sc.LIMIT_KIND) or "unknown")
        if attrs.get(sc.ERROR_TYPE):
            detail += f" ({attrs.get(sc.ERROR_TYPE)})"
    elif event.name == sc.EVENT_LOOP_DETECTED:
        detail = _loop_words(attrs)
    elif event.name == sc.EVENT_GUARDRAIL:
        detail = str(attrs.get(sc.GUARDRAIL_NAME) or "")
    else:
        detail = _words(attrs)
    return Marker(kind, event.time_ns or record.end_ns, clip(f"{kind}: {detail}", text))


def _loop_tool(attrs: Mapping[str, Any]) -> str:
    tools = attrs.get(sc.LOOP_TOOLS)
    if isinstance(tools, tuple | list) and tools:
        return " → ".join(str(tool) for tool in tools[:3])
    return str(attrs.get(sc.GEN_AI_TOOL_NAME) or "?")


def _loop_words(attrs: Mapping[str, Any]) -> str:
    return f"{_loop_tool(attrs)} ({attrs.get(sc.LOOP_PATTERN) or 'repeat'})"


def _words(attrs: Mapping[str, Any]) -> str:
    """Event attributes as ``key=value`` with our prefixes dropped (for a hover text)."""
    return ", ".join(
        f"{key.removeprefix('techrevati.').removeprefix('wrap_up.')}={value}"
        for key, value in sorted(attrs.items())
    )


def _parent_session(tree: SpanTree, key: _Key) -> tuple[_Key | None, str | None]:
    """The enclosing session, or the missing parent span's id when it is elsewhere."""
    record = tree.by_id[key]
    if record.parent_id is None:
        return None, None
    parent = (record.trace_id, record.parent_id)
    if parent not in tree.by_id or parent == key:
        return None, record.parent_id
    owner = tree.session.get(parent)
    if owner is None:
        # The chain above ends without a session: report where it leaves the file.
        node: _Key | None = parent
        seen: set[_Key] = set()
        while node is not None and node in tree.by_id and node not in seen:
            seen.add(node)
            above = tree.by_id[node].parent_id
            if above is None:
                return None, None
            node = (record.trace_id, above)
        return None, node[1] if node is not None and node not in tree.by_id else None
    return (owner, None) if owner != key else (None, None)


def _most_expensive(count: int) -> str:
    """``the most expensive`` (one), ``the 3 most expensive``."""
    return "the most expensive" if count == 1 else f"the {count} most expensive"


def _sample(nodes: Mapping[str, SessionNode], limits: Bounds) -> tuple[list[str], str]:
    bound = limits.sessions
    by_cost = sorted(nodes.values(), key=lambda n: (-n.cost_usd, n.start_ns))
    kept = [n.id for n in by_cost[: min(limits.expensive, bound)]]
    chosen = set(kept)
    hits = [n for n in by_cost if n.limit_hits]
    kept += [n.id for n in hits if n.id not in chosen][: max(0, bound - len(kept))]
    chosen = set(kept)
    kept += [n.id for n in by_cost if n.id not in chosen][: max(0, bound - len(kept))]
    total = len(nodes)
    if len(kept) == total:
        return kept, "the 1 session is shown" if total == 1 else f"all {total} sessions are shown"
    chosen = set(kept)
    kept_hits = sum(1 for n in hits if n.id in chosen)
    words = (
        f"{len(kept)} of {total} sessions {'is' if len(kept) == 1 else 'are'} shown in full: "
        f"{_most_expensive(min(limits.expensive, bound))}, then the sessions with a limit hit "
        f"({kept_hits} of {len(hits)} in full; all are listed below), then the next most "
        "expensive. Totals, tables and tree costs count every session."
    )
    return kept, words


def build_detail(
    records: Sequence[SpanRecord],
    report: RunReport,
    *,
    bounds: Bounds | None = None,
    tree: SpanTree | None = None,
) -> RunDetail:
    """The session tree, the sampled timelines and the per-agent costs of a run."""
    limits = bounds or Bounds()
    tree = tree if tree is not None else SpanTree(records)
    rows: dict[_Key, SessionRow] = {(r.trace_id, r.span_id): r for r in report.sessions}
    nodes: dict[str, SessionNode] = {}
    for key, row in rows.items():
        record = tree.by_id.get(key)
        if record is None:
            continue
        parent, remote = _parent_session(tree, key)
        nodes[_node_id(key)] = SessionNode(
            id=_node_id(key),
            role=clip(row.role, limits.text),
            outcome=clip(row.outcome, 40),
            start_ns=record.start_ns,
            end_ns=max(record.end_ns, record.start_ns),
            cost_usd=row.cost_usd,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            calls=row.turns,
            tool_calls=0,
            limit_hits=sorted(set(row.limit_hits)),
            loops=0,
            wrap_ups=0,
            service=clip(record.service or "", limits.text),
            parent=_node_id(parent) if parent is not None and parent in rows else None,
            remote_parent=remote,
            reported_tree_cost_usd=row.tree_cost_usd,
            shared=row.shared,
            remote_parent_role=clip(row.remote_parent or "", limits.text),
            reported_remote_children=row.remote_children,
        )

    # One pass over the spans: tool counts, loops and wrap-ups for every session,
    # timeline entries kept per session until the sample is known.
    owned: dict[str, list[_Key]] = {}
    loops: dict[tuple[str, str, str], Loop] = {}
    wrap_ups: list[tuple[str, str]] = []
    wrap_total = 0
    for key, record in tree.by_id.items():
        owner = tree.session.get(key)
        node = nodes.get(_node_id(owner)) if owner is not None else None
        if node is None:
            continue
        if record.operation == sc.OP_EXECUTE_TOOL:
            node.tool_calls += 1
        if key == owner and node.parent is not None:
            # A child session is drawn on its parent's timeline too, as one bar.
            owned.setdefault(node.parent, []).append(key)
        if key != owner and (record.operation == sc.OP_EXECUTE_TOOL or key in tree.readings):
            owned.setdefault(node.id, []).append(key)
        for event in record.events:
            if event.name == sc.EVENT_LOOP_DETECTED:
                node.loops += 1
                attrs = event.attributes
                tool = clip(_loop_tool(attrs), limits.text)
                pattern = clip(attrs.get(sc.LOOP_PATTERN) or "repeat", 40)
                found = loops.get((node.id, tool, pattern))
                if found is None:
                    loops[(node.id, tool, pattern)] = Loop(node.id, node.role, tool, pattern)
                else:
                    found.count += 1
            elif event.name == sc.EVENT_WRAP_UP:
                node.wrap_ups += 1
                wrap_total += 1
                if len(wrap_ups) < limits.rows:
                    what = _words(event.attributes)
                    wrap_ups.append((node.role, clip(what or "wrap-up", limits.text)))

    for node in nodes.values():
        if node.parent is not None:
            node.parent_role = nodes[node.parent].role
    _roll_up(nodes)
    kept, note = _sample(nodes, limits)
    for node_id in kept:
        node = nodes[node_id]
        node.sampled = True
        keys = sorted(owned.get(node_id, []), key=lambda k: (tree.by_id[k].start_ns, k))
        node.items_total = len(keys)
        taken: set[_Key] = set()
        for key in keys:
            record = tree.by_id[key]
            same = False
            if key in tree.readings and record.operation != sc.OP_INVOKE_AGENT:
                enclosing = tree.enclosing_call.get(key)
                enclosing_ours = tree.by_id[enclosing].ours if enclosing is not None else None
                same = is_same_call(
                    ours=record.ours,
                    enclosing_ours=enclosing_ours,
                    enclosing_taken=enclosing in taken,
                )
                if same and enclosing is not None and enclosing_ours:
                    taken.add(enclosing)
            if len(node.items) < limits.items:
                node.items.append(_item(record, tree, key, same, limits.label))
        session_key = (node_id.split("/", 1)[0], node_id.split("/", 1)[1])
        marked: list[Marker] = []
        for key in [session_key, *keys]:
            record = tree.by_id[key]
            if key != session_key and record.operation == sc.OP_INVOKE_AGENT:
                continue  # a child's events are on the child's own timeline
            for event in record.events:
                marker = _marker(event, record, limits.label * 2)
                if marker is not None:
                    node.markers_total += 1
                    if len(marked) < limits.markers:
                        marked.append(marker)
        node.markers = sorted(marked, key=lambda m: m.time_ns)

    agents: dict[str, list[float]] = {}
    for node in nodes.values():
        entry = agents.setdefault(node.role, [0, 0, 0.0])
        entry[0] += 1
        entry[1] += node.calls
        entry[2] += node.cost_usd
    agent_rows = sorted(
        ((role, int(v[0]), int(v[1]), float(v[2])) for role, v in agents.items()),
        key=lambda row: (-row[3], row[0]),
    )
    hit_nodes = sorted(
        (n for n in nodes.values() if n.limit_hits), key=lambda n: (-n.cost_usd, n.start_ns)
    )
    loop_rows = sorted(loops.values(), key=lambda loop: (-loop.count, loop.role, loop.tool))
    return RunDetail(
        sessions=_tree_order(nodes, kept),
        sessions_total=len(nodes),
        sample_note=note,
        hit_sessions=hit_nodes[: limits.hit_rows],
        hit_sessions_total=len(hit_nodes),
        agents=agent_rows[: limits.rows],
        agents_total=len(agent_rows),
        sessions_cost_usd=sum(node.cost_usd for node in nodes.values()),
        loops=loop_rows[: limits.rows],
        loops_total=sum(loop.count for loop in loop_rows),
        wrap_ups=wrap_ups,
        wrap_ups_total=wrap_total,
        bounds=limits,
    )


def _roll_up(nodes: Mapping[str, SessionNode]) -> None:
    """Children, descendants and tree cost of every node (iterative, cycle-proof)."""
    for node in nodes.values():
        if node.parent is not None and node.parent in nodes:
            nodes[node.parent].children.append(node.id)
    for node in nodes.values():
        node.tree_cost_usd = node.cost_usd
    # Walk each node's ancestors once, adding its cost and count to each of them.
    for node in nodes.values():
        seen = {node.id}
        above = node.parent
        while above is not None and above in nodes and above not in seen:
            seen.add(above)
            ancestor = nodes[above]
            ancestor.descendants += 1
            ancestor.tree_cost_usd += node.cost_usd
            if node.service != ancestor.service:
                ancestor.remote_children += int(node.parent == above)
            above = ancestor.parent
    for node in nodes.values():
        # The session span's tree roll-up counts shared sessions' children in
        # processes whose spans are not in these records; the sum here counts
        # children in other files that the ledger did not link (no shared session).
        # Each misses what the other saw, so the larger one is shown.
        if node.reported_tree_cost_usd is not None:
            node.tree_cost_usd = max(node.tree_cost_usd, node.reported_tree_cost_usd)
        node.remote_children = max(node.remote_children, node.reported_remote_children)


def _tree_order(nodes: Mapping[str, SessionNode], kept: Sequence[str]) -> list[SessionNode]:
    """The sampled nodes, each after its nearest sampled ancestor (depth-first, by start)."""
    chosen = set(kept)

    def sampled_parent(node: SessionNode) -> str | None:
        seen = {node.id}
        above = node.parent
        while above is not None and above in nodes and above not in seen:
            if above in chosen:
                return above
            seen.add(above)
            above = nodes[above].parent
        return None

    under: dict[str | None, list[SessionNode]] = {}
    for node_id in kept:
        node = nodes[node_id]
        under.setdefault(sampled_parent(node), []).append(node)
    ordered: list[SessionNode] = []
    roots = sorted(under.get(None, []), key=lambda n: (n.start_ns, n.id), reverse=True)
    stack = [(node, 0) for node in roots]
    placed: set[str] = set()
    while stack:
        node, depth = stack.pop()
        if node.id in placed:
            continue
        placed.add(node.id)
        node.depth = depth
        ordered.append(node)
        below = sorted(under.get(node.id, []), key=lambda n: (n.start_ns, n.id), reverse=True)
        stack.extend((child, depth + 1) for child in below)
    # Anything left (only possible with a parent cycle) goes last rather than missing.
    ordered += [nodes[i] for i in kept if i not in placed]
    return ordered


__all__ = [
    "MARKED_EVENTS",
    "Bounds",
    "Loop",
    "Marker",
    "RunDetail",
    "SessionNode",
    "TimelineItem",
    "build_detail",
    "clip",
]
