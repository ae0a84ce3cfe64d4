"""The terminal report: what a run did, rebuilt from its spans alone.

The same code serves two sources: finished SDK spans kept in memory during a run
(``ReportExporter``), and OTLP JSON lines read back from a file
(``records_from_otlp_json``), so ``techrevati-runtime report PATH`` after the fact
prints exactly what the run printed at exit.

Example::

    records = list(records_from_file("telemetry-out/spans.jsonl"))
    print(render_report(build_report(records)))
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from . import semconv as sc
from .forking import after_fork_in_child
from .jsonl import read_json_lines

# Only what the report reads is kept: this bounds the memory per span and keeps
# captured content (prompts, tool arguments) out of the in-memory copy.
_KEPT_ATTRIBUTES = frozenset(
    {
        sc.GEN_AI_OPERATION_NAME,
        sc.GEN_AI_AGENT_NAME,
        sc.GEN_AI_AGENT_ID,
        sc.GEN_AI_REQUEST_MODEL,
        sc.GEN_AI_RESPONSE_MODEL,
        sc.GEN_AI_PROVIDER_NAME,
        sc.GEN_AI_SYSTEM,
        sc.GEN_AI_USAGE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS,
        sc.GEN_AI_TOOL_NAME,
        sc.ERROR_TYPE,
        sc.COST_USD,
        sc.SESSION_TURNS,
        sc.SESSION_OUTCOME,
        sc.PERMISSION_DECISION,
        sc.GUARDRAIL_OUTCOME,
        sc.GUARDRAIL_NAME,
        sc.GUARDRAIL_STAGE,
        sc.BREAKER_NAME,
        sc.BREAKER_STATE,
        sc.LIMIT_KIND,
        sc.PHASE,
    }
)
_KEPT_EVENTS = frozenset(
    {
        sc.EVENT_LIMIT_HIT,
        sc.EVENT_GUARDRAIL,
        sc.EVENT_HANDOFF,
        sc.EVENT_POLICY,
        sc.EVENT_QUALITY_GATE,
        sc.EVENT_RECOVERY,
    }
)
_MAX_SESSION_ROWS = 50


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A span event the report knows about."""

    name: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """The part of one finished span the report needs, whatever its source."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    error: bool
    attributes: Mapping[str, Any]
    events: tuple[EventRecord, ...] = ()
    service: str | None = None
    #: The run (``techrevati.run.id`` resource attribute) the span came from, if known.
    run: str | None = None

    @property
    def operation(self) -> str:
        """``gen_ai.operation.name``, or the first word of the span name."""
        value = self.attributes.get(sc.GEN_AI_OPERATION_NAME)
        if isinstance(value, str) and value:
            return value
        return self.name.split(" ", 1)[0]

    @property
    def subject(self) -> str:
        """What the span name is about: the role, model or tool after the operation."""
        parts = self.name.split(" ", 1)
        return parts[1] if len(parts) == 2 else self.name


def _keep(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {key: value for key, value in attributes.items() if key in _KEPT_ATTRIBUTES}


def record_from_span(span: ReadableSpan) -> SpanRecord | None:
    """A report record for a finished SDK span (None for a span without context)."""
    context = span.context
    if context is None:
        return None
    parent = span.parent
    service = span.resource.attributes.get("service.name") if span.resource else None
    return SpanRecord(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        error=span.status.status_code is StatusCode.ERROR,
        attributes=_keep(span.attributes),
        events=tuple(
            EventRecord(event.name, _keep(event.attributes))
            for event in span.events
            if event.name in _KEPT_EVENTS
        ),
        service=service if isinstance(service, str) else None,
    )


# --- OTLP JSON --------------------------------------------------------------------
def _any_value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return tuple(_any_value(item) for item in value["arrayValue"].get("values", []))
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _any_value(item.get("value", {})) for item in items if "key" in item}


def _is_error_status(status: Mapping[str, Any] | None) -> bool:
    code = (status or {}).get("code")
    return code in (2, "STATUS_CODE_ERROR")


def records_from_otlp_json(request: Mapping[str, Any]) -> Iterator[SpanRecord]:
    """Report records from one decoded OTLP/JSON ``ExportTraceServiceRequest``."""
    for resource_spans in request.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = resource.get("service.name")
        run = resource.get(sc.RUN_ID)
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                start = int(span.get("startTimeUnixNano", 0))
                yield SpanRecord(
                    trace_id=str(span.get("traceId", "")),
                    span_id=str(span.get("spanId", "")),
                    parent_id=span.get("parentSpanId") or None,
                    name=str(span.get("name", "")),
                    start_ns=start,
                    end_ns=int(span.get("endTimeUnixNano", start)),
                    error=_is_error_status(span.get("status")),
                    attributes=_keep(_attributes(span.get("attributes", []))),
                    events=tuple(
                        EventRecord(
                            event.get("name", ""), _keep(_attributes(event.get("attributes", [])))
                        )
                        for event in span.get("events", [])
                        if event.get("name") in _KEPT_EVENTS
                    ),
                    service=service if isinstance(service, str) else None,
                    run=run if isinstance(run, str) else None,
                )


def records_from_file(
    path: str | os.PathLike[str], *, run: str | None = None
) -> Iterator[SpanRecord]:
    """Report records from an OTLP JSON lines spans file (ours or a collector's).

    With ``run``, only the spans of that run (``techrevati.run.id``) are kept.
    """
    for request in read_json_lines(path):
        for record in records_from_otlp_json(request):
            if run is None or record.run == run:
                yield record


# --- the report -----------------------------------------------------------------------
@dataclass
class SessionRow:
    """One agent session (an ``invoke_agent`` span)."""

    role: str
    outcome: str
    duration_s: float
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    limit_hits: list[str] = field(default_factory=list)
    start_ns: int = 0


@dataclass
class ModelRow:
    """Model calls of one model across the run."""

    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0


@dataclass
class ToolRow:
    """Calls of one tool across the run, with their permission decisions."""

    tool: str
    calls: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    blocked: int = 0


@dataclass
class RunReport:
    """Everything the terminal report shows, as data."""

    sessions: list[SessionRow]
    models: list[ModelRow]
    tools: list[ToolRow]
    breakers: dict[str, Counter[str]]
    limit_hits: Counter[tuple[str, str]]
    guardrail_violations: Counter[tuple[str, str]]
    other_events: Counter[str]
    services: list[str]
    span_count: int
    evicted: int = 0

    @property
    def total_cost_usd(self) -> float:
        """Cost of every model call in the run."""
        return sum(row.cost_usd for row in self.models)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    return 0.0


class _Tree:
    """Parent links for a set of spans, to find the session each span belongs to."""

    def __init__(self, records: Sequence[SpanRecord]) -> None:
        self.by_id = {(r.trace_id, r.span_id): r for r in records}
        self._session: dict[tuple[str, str], SpanRecord | None] = {}

    def parent(self, record: SpanRecord) -> SpanRecord | None:
        if record.parent_id is None:
            return None
        return self.by_id.get((record.trace_id, record.parent_id))

    def session_of(self, record: SpanRecord) -> SpanRecord | None:
        """The nearest ``invoke_agent`` span at or above ``record``."""
        key = (record.trace_id, record.span_id)
        if key in self._session:
            return self._session[key]
        chain: list[tuple[str, str]] = []
        node: SpanRecord | None = record
        found: SpanRecord | None = None
        while node is not None:
            node_key = (node.trace_id, node.span_id)
            if node_key in self._session:
                found = self._session[node_key]
                break
            chain.append(node_key)
            if node.operation == sc.OP_INVOKE_AGENT:
                found = node
                break
            node = self.parent(node)
            if len(chain) > 10_000:  # a corrupt file with a parent cycle
                break
        for item in chain:
            self._session[item] = found
        return found

    def inside_model_call(self, record: SpanRecord) -> bool:
        """True when a model-call ancestor already describes this model call.

        Our ``chat`` span and a GenAI library's ``chat`` span beneath it are one
        call: counting both would double the cost.
        """
        node = self.parent(record)
        while node is not None and node.operation != sc.OP_INVOKE_AGENT:
            if node.operation in sc.MODEL_OPERATIONS:
                return True
            node = self.parent(node)
        return False


def build_report(records: Iterable[SpanRecord], *, evicted: int = 0) -> RunReport:
    """Aggregate span records into a :class:`RunReport`."""
    spans = list(records)
    tree = _Tree(spans)
    sessions: dict[tuple[str, str], SessionRow] = {}
    computed: dict[tuple[str, str], SessionRow] = {}
    models: dict[str, ModelRow] = {}
    tools: dict[str, ToolRow] = {}
    breakers: dict[str, Counter[str]] = {}
    limit_hits: Counter[tuple[str, str]] = Counter()
    violations: Counter[tuple[str, str]] = Counter()
    other_events: Counter[str] = Counter()
    reported_violations: set[tuple[str, str] | None] = set()
    blocked: list[tuple[tuple[str, str] | None, str, str]] = []
    services = sorted({r.service for r in spans if r.service})

    for record in spans:
        if record.operation != sc.OP_INVOKE_AGENT:
            continue
        role = record.attributes.get(sc.GEN_AI_AGENT_NAME) or record.subject
        outcome = record.attributes.get(sc.SESSION_OUTCOME) or (
            sc.OUTCOME_FAILED if record.error else "ended"
        )
        sessions[(record.trace_id, record.span_id)] = SessionRow(
            role=str(role),
            outcome=str(outcome),
            duration_s=max(0, record.end_ns - record.start_ns) / 1e9,
            start_ns=record.start_ns,
        )
        computed[(record.trace_id, record.span_id)] = SessionRow(role="", outcome="", duration_s=0)

    for record in spans:
        owner = tree.session_of(record)
        owner_key = (owner.trace_id, owner.span_id) if owner is not None else None
        role = sessions[owner_key].role if owner_key in sessions else "(no session)"
        attrs = record.attributes

        if record.operation in sc.MODEL_OPERATIONS and not tree.inside_model_call(record):
            model = str(
                attrs.get(sc.GEN_AI_RESPONSE_MODEL)
                or attrs.get(sc.GEN_AI_REQUEST_MODEL)
                or record.subject
            )
            row = models.setdefault(model, ModelRow(model))
            tokens_in = int(_number(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)))
            tokens_out = int(_number(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)))
            cost = _number(attrs.get(sc.COST_USD))
            row.calls += 1
            row.input_tokens += tokens_in
            row.output_tokens += tokens_out
            row.cost_usd += cost
            row.errors += int(record.error or sc.ERROR_TYPE in attrs)
            if owner_key in computed:
                total = computed[owner_key]
                total.turns += 1
                total.input_tokens += tokens_in
                total.output_tokens += tokens_out
                total.cost_usd += cost

        if record.operation == sc.OP_EXECUTE_TOOL:
            tool = str(attrs.get(sc.GEN_AI_TOOL_NAME) or record.subject)
            tool_row = tools.setdefault(tool, ToolRow(tool))
            tool_row.calls += 1
            decision = attrs.get(sc.PERMISSION_DECISION)
            tool_row.allowed += int(decision == sc.PERMISSION_ALLOW)
            tool_row.denied += int(decision == sc.PERMISSION_DENY)
            tool_row.errors += int(record.error or sc.ERROR_TYPE in attrs)
            tool_row.blocked += int(attrs.get(sc.GUARDRAIL_OUTCOME) == sc.GUARDRAIL_BLOCKED)

        breaker = attrs.get(sc.BREAKER_NAME)
        if breaker:
            state = str(attrs.get(sc.BREAKER_STATE) or "unknown")
            breakers.setdefault(str(breaker), Counter())[state] += 1

        for event in record.events:
            if event.name == sc.EVENT_LIMIT_HIT:
                kind = str(event.attributes.get(sc.LIMIT_KIND) or "unknown")
                limit_hits[(kind, role)] += 1
                if owner_key in sessions:
                    sessions[owner_key].limit_hits.append(kind)
            elif event.name == sc.EVENT_GUARDRAIL:
                reported_violations.add(owner_key)
                violations[(_guardrail_label(event.attributes, record), role)] += 1
            else:
                other_events[event.name] += 1
        if attrs.get(sc.GUARDRAIL_OUTCOME) == sc.GUARDRAIL_BLOCKED:
            blocked.append((owner_key, _guardrail_label(attrs, record), role))

    # A blocked span is the same violation as the session's event about it; it is
    # counted on its own only for sources that do not emit the event.
    for owner_key, label, role in blocked:
        if owner_key not in reported_violations:
            violations[(label, role)] += 1

    for key, session in sessions.items():
        source = tree.by_id.get(key)
        attrs = source.attributes if source is not None else {}
        totals = computed[key]
        # The session span's own roll-ups win: they still count turns whose spans
        # were dropped or sampled away. Children are the fallback for sessions
        # written by other instrumentations.
        session.turns = int(_rollup(attrs, sc.SESSION_TURNS, totals.turns))
        session.input_tokens = int(
            _rollup(attrs, sc.GEN_AI_USAGE_INPUT_TOKENS, totals.input_tokens)
        )
        session.output_tokens = int(
            _rollup(attrs, sc.GEN_AI_USAGE_OUTPUT_TOKENS, totals.output_tokens)
        )
        session.cost_usd = _rollup(attrs, sc.COST_USD, totals.cost_usd)

    return RunReport(
        sessions=sorted(sessions.values(), key=lambda row: row.start_ns),
        models=sorted(models.values(), key=lambda row: (-row.cost_usd, row.model)),
        tools=sorted(tools.values(), key=lambda row: (-row.calls, row.tool)),
        breakers=breakers,
        limit_hits=limit_hits,
        guardrail_violations=violations,
        other_events=other_events,
        services=services,
        span_count=len(spans),
        evicted=evicted,
    )


def _rollup(attributes: Mapping[str, Any], key: str, fallback: float) -> float:
    return _number(attributes[key]) if key in attributes else fallback


def _guardrail_label(attributes: Mapping[str, Any], record: SpanRecord) -> str:
    name = attributes.get(sc.GUARDRAIL_NAME) or record.subject
    stage = attributes.get(sc.GUARDRAIL_STAGE)
    return f"{name} ({stage})" if stage else str(name)


# --- rendering ------------------------------------------------------------------------
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


def render_report(report: RunReport, *, source: str | None = None) -> str:
    """The report as text for a terminal (no colours, fits 100 columns for few tools)."""
    calls = sum(row.calls for row in report.models)
    tool_calls = sum(row.calls for row in report.tools)
    out = [
        "techrevati-runtime telemetry report: "
        f"{_plural(len(report.sessions), 'session')}, {_plural(calls, 'model call')}, "
        f"{_plural(tool_calls, 'tool call')}, total cost ${_usd(report.total_cost_usd)}"
    ]
    if report.services:
        out.append(f"service: {', '.join(report.services)}")
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
                "input tok",
                "output tok",
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
        if len(report.sessions) > len(shown):
            out.append(f"  ... and {len(report.sessions) - len(shown)} earlier sessions")

    if report.models:
        out += ["", "Model calls (cost per model)"]
        out += _table(
            ["model", "calls", "input tok", "output tok", "cost USD", "errors"],
            [
                [
                    row.model,
                    str(row.calls),
                    str(row.input_tokens),
                    str(row.output_tokens),
                    _usd(row.cost_usd),
                    str(row.errors),
                ]
                for row in report.models
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

    out += ["", "Limit hits"]
    if report.limit_hits:
        out += _table(
            ["limit", "session role", "hits"],
            [[kind, role, str(n)] for (kind, role), n in sorted(report.limit_hits.items())],
            "llr",
        )
    else:
        out.append("  none")

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

    if report.evicted:
        out += [
            "",
            f"note: the oldest {report.evicted} spans were left out of this in-memory report "
            "to bound memory; the spans file has them all",
        ]
    if source:
        out += ["", f"spans: {source}"]
    return "\n".join(out) + "\n"


class ReportExporter(SpanExporter):
    """Keeps compact records of the most recent spans for the end-of-run report.

    Used as an exporter (behind a batch processor) so the conversion runs on the
    export thread, not on the agent's. Memory is bounded by ``max_spans``; the
    number of records pushed out is reported.
    """

    def __init__(self, max_spans: int = 20_000) -> None:
        self._records: deque[SpanRecord] = deque(maxlen=max(1, max_spans))
        self._evicted = 0
        self._lock = threading.Lock()
        after_fork_in_child(self._forget)

    def _forget(self) -> None:
        # A forked worker reports its own spans, not the parent's copy of them.
        self._lock = threading.Lock()
        self._records.clear()
        self._evicted = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        converted = [r for r in (record_from_span(span) for span in spans) if r is not None]
        with self._lock:
            overflow = len(self._records) + len(converted) - (self._records.maxlen or 0)
            self._evicted += max(0, overflow)
            self._records.extend(converted)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def build(self) -> RunReport:
        """The report over the spans seen so far."""
        with self._lock:
            records = list(self._records)
            evicted = self._evicted
        return build_report(records, evicted=evicted)
