"""Reading spans for the report: from the SDK, or from a file nobody vouches for.

A spans file may come from an older version, a collector, a crash mid-write or
someone hostile. Reading it must stay bounded whatever it holds:

* the file is read as a stream, one line at a time, and a line longer than
  ``max_line_bytes`` is skipped without ever being held whole;
* bytes that are not UTF-8 are replaced, JSON nested too deeply or malformed
  is skipped, and every field is type-checked before it is used: a bad record
  costs itself and one line in :class:`Problems`, never a traceback;
* :class:`Problems` keeps at most :data:`MAX_PROBLEM_LINES` messages, each
  short, and counts the rest.

Example::

    loaded = load_spans_file("telemetry-out/spans.jsonl")
    print(len(loaded.records), loaded.problems.lines())
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from .. import semconv as sc
from ..readings.recognise import READ_ATTRIBUTES

#: A line longer than this is skipped (our own lines are one export batch: far less).
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
#: Problems printed; the rest are counted.
MAX_PROBLEM_LINES = 20
_MAX_MESSAGE = 200
_MAX_VALUE_DEPTH = 8
_CHUNK = 1024 * 1024
_HEX = re.compile(r"[0-9a-fA-F]+")

# Only what the report reads is kept: this bounds the memory per span and keeps
# captured content (prompts, tool arguments) out of the in-memory copy.
KEPT_ATTRIBUTES = frozenset(
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
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        sc.GEN_AI_TOOL_NAME,
        sc.ERROR_TYPE,
        sc.COST_USD,
        sc.COST_SOURCE,
        sc.COST_TREE_USD,
        sc.COST_MODELS,
        sc.COST_MODEL_USD,
        sc.USAGE_MISSING,
        sc.SESSION_TURNS,
        sc.SESSION_ITERATION,  # a session's admitted calls: failed ones too
        sc.SESSION_OUTCOME,
        sc.SESSION_CALLS_WITHOUT_USAGE,
        sc.SESSION_CALLS_ESTIMATED,
        sc.SESSION_ESTIMATED_USD,
        sc.SESSION_UNPRICED_CALLS,
        sc.SESSION_UNPRICED_MODELS,
        sc.SESSION_UNPRICED_MODEL_CALLS,
        sc.PERMISSION_DECISION,
        sc.GUARDRAIL_OUTCOME,
        sc.GUARDRAIL_NAME,
        sc.GUARDRAIL_STAGE,
        sc.BREAKER_NAME,
        sc.BREAKER_STATE,
        sc.LIMIT_KIND,
        sc.FLEET_SCOPE,
        sc.FLEET_SCOPES,
        sc.PHASE,
        sc.COST_TREE_USD,
        sc.SESSION_SHARED,
        sc.SESSION_REMOTE_CHILDREN,
        sc.SESSION_REMOTE_PARENT_ROLE,
        sc.LOOP_PATTERN,
        sc.LOOP_TOOLS,
        sc.LOOP_ACTION,
        *READ_ATTRIBUTES,  # whatever recognise reads to tell a model call and its usage
    }
)
KEPT_EVENTS = frozenset(
    {
        sc.EVENT_LIMIT_HIT,
        sc.EVENT_GUARDRAIL,
        sc.EVENT_HANDOFF,
        sc.EVENT_POLICY,
        sc.EVENT_QUALITY_GATE,
        sc.EVENT_RECOVERY,
        sc.EVENT_LOOP_DETECTED,
        sc.EVENT_WRAP_UP,
    }
)


#: Event attributes kept beyond KEPT_ATTRIBUTES: what a loop or a wrap-up was (the HTML
#: report shows them); by prefix, so a new field of these events needs no change here.
KEPT_EVENT_PREFIXES = ("techrevati.loop.", "techrevati.wrap_up.")


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A span event the report knows about."""

    name: str
    attributes: Mapping[str, Any]
    #: When it happened (ns since the epoch; 0 when the source did not say).
    time_ns: int = 0


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
    #: The instrumentation scope that made the span (ours is ``techrevati.runtime``).
    scope: str | None = None

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

    @property
    def ours(self) -> bool:
        """True for spans this package made (its instrumentation scope)."""
        return self.scope == sc.INSTRUMENTATION_SCOPE


def _keep(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {key: value for key, value in attributes.items() if key in KEPT_ATTRIBUTES}


def _keep_event(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {
        key: value
        for key, value in attributes.items()
        if key in KEPT_ATTRIBUTES or key.startswith(KEPT_EVENT_PREFIXES)
    }


def record_from_span(span: ReadableSpan) -> SpanRecord | None:
    """A report record for a finished SDK span (None for a span without context)."""
    context = span.context
    if context is None:
        return None
    parent = span.parent
    resource = span.resource.attributes if span.resource else {}
    service = resource.get("service.name")
    run = resource.get(sc.RUN_ID)
    scope = span.instrumentation_scope
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
            EventRecord(event.name, _keep_event(event.attributes), event.timestamp or 0)
            for event in span.events
            if event.name in KEPT_EVENTS
        ),
        service=service if isinstance(service, str) else None,
        run=run if isinstance(run, str) else None,
        scope=scope.name if scope is not None else None,
    )


# --- problems -------------------------------------------------------------------------
@dataclass
class Problems:
    """What could not be read, as short one-line messages (bounded)."""

    count: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        """Note one bad record; ``where`` names it (file and line)."""
        self.count += 1
        if len(self.messages) < MAX_PROBLEM_LINES:
            text = f"{where}: {what}"
            if len(text) > _MAX_MESSAGE:
                text = text[: _MAX_MESSAGE - 1] + "…"
            self.messages.append(text)

    def lines(self) -> list[str]:
        """The messages to print, with a last line for those left out."""
        hidden = self.count - len(self.messages)
        more = "1 more problem" if hidden == 1 else f"{hidden} more problems"
        return [*self.messages, *([f"... and {more}"] if hidden else [])]


class BadRecord(ValueError):
    """One record of a file has a field of the wrong kind."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


# --- OTLP JSON, checked -----------------------------------------------------------------
def _any_value(value: object, depth: int = 0) -> Any:
    if not isinstance(value, dict) or depth > _MAX_VALUE_DEPTH:
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        return text if isinstance(text, str) else None
    if "intValue" in value:
        return _int_or_none(value["intValue"])
    if "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, bool):
            return None
        if isinstance(number, int | float):
            return float(number)
        try:
            return float(number) if isinstance(number, str) else None
        except ValueError:
            return None
    if "boolValue" in value:
        flag = value["boolValue"]
        return flag if isinstance(flag, bool) else None
    if "arrayValue" in value:
        items = value["arrayValue"]
        values = items.get("values", []) if isinstance(items, dict) else []
        if not isinstance(values, list):
            return None
        return tuple(_any_value(item, depth + 1) for item in values)
    if "kvlistValue" in value:
        items = value["kvlistValue"]
        values = items.get("values", []) if isinstance(items, dict) else []
        return _attributes(values, depth + 1) if isinstance(values, list) else None
    return None


def _int_or_none(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.lstrip("-").isdigit() and len(raw) <= 20:
        return int(raw)
    return None


def _attributes(items: object, depth: int = 0) -> dict[str, Any]:
    if not isinstance(items, list):
        raise BadRecord(f"attributes is {_short(items)}, not a list")
    found: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise BadRecord(f"an attribute is {_short(item)}, not a key and value")
        found[item["key"]] = _any_value(item.get("value", {}), depth)
    return found


def _text(span: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = span.get(key)
    if value is None or value == "":
        if required:
            raise BadRecord(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{key} is {_short(value)}, not a string")
    return value


def _hex_id(span: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = _text(span, key, required=required)
    if value is not None and (len(value) > 32 or not _HEX.fullmatch(value)):
        raise BadRecord(f"{key} is {_short(value)}, not a hex id")
    return value.lower() if value is not None else None


def _time(span: Mapping[str, Any], key: str, default: int) -> int:
    if key not in span:
        return default
    value = _int_or_none(span[key])
    if value is None or value < 0:
        raise BadRecord(f"{key} is {_short(span[key])}, not a time in nanoseconds")
    return value


def _list(node: Mapping[str, Any], key: str) -> list[Any]:
    value = node.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRecord(f"{key} is {_short(value)}, not a list")
    return value


def _span_record(
    span: object, service: str | None, run: str | None, scope: str | None
) -> SpanRecord:
    if not isinstance(span, dict):
        raise BadRecord(f"a span is {_short(span)}, not an object")
    trace_id = _hex_id(span, "traceId")
    span_id = _hex_id(span, "spanId")
    assert trace_id is not None and span_id is not None
    name = _text(span, "name", required=False) or ""
    start = _time(span, "startTimeUnixNano", 0)
    end = _time(span, "endTimeUnixNano", start)
    status = span.get("status") or {}
    if not isinstance(status, dict):
        raise BadRecord(f"status is {_short(status)}, not an object")
    events: list[EventRecord] = []
    for event in _list(span, "events"):
        if not isinstance(event, dict):
            raise BadRecord(f"an event is {_short(event)}, not an object")
        event_name = event.get("name")
        if isinstance(event_name, str) and event_name in KEPT_EVENTS:
            attributes = _keep_event(_attributes(_list(event, "attributes")))
            events.append(EventRecord(event_name, attributes, _time(event, "timeUnixNano", 0)))
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=_hex_id(span, "parentSpanId", required=False),
        name=name,
        start_ns=start,
        end_ns=end,
        error=status.get("code") in (2, "STATUS_CODE_ERROR"),
        attributes=_keep(_attributes(_list(span, "attributes"))),
        events=tuple(events),
        service=service,
        run=run,
        scope=scope,
    )


def records_from_otlp_json(
    request: object, problems: Problems | None = None, where: str = "request"
) -> Iterator[SpanRecord]:
    """Report records from one decoded OTLP/JSON ``ExportTraceServiceRequest``.

    A span with a field of the wrong kind is left out and noted in ``problems``
    (one line each); without ``problems`` it is left out silently.
    """
    sink = problems if problems is not None else Problems()
    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
        sink.add(where, "not an OTLP trace request (no resourceSpans list); skipped")
        return
    for resource_spans in request["resourceSpans"]:
        try:
            if not isinstance(resource_spans, dict):
                raise BadRecord(f"a resourceSpans entry is {_short(resource_spans)}")
            resource_node = resource_spans.get("resource") or {}
            if not isinstance(resource_node, dict):
                raise BadRecord(f"resource is {_short(resource_node)}, not an object")
            resource = _attributes(_list(resource_node, "attributes"))
            scope_list = _list(resource_spans, "scopeSpans")
        except BadRecord as error:
            sink.add(where, f"{error}; its spans skipped")
            continue
        service = resource.get("service.name")
        run = resource.get(sc.RUN_ID)
        for scope_spans in scope_list:
            try:
                if not isinstance(scope_spans, dict):
                    raise BadRecord(f"a scopeSpans entry is {_short(scope_spans)}")
                scope_node = scope_spans.get("scope") or {}
                scope_name = scope_node.get("name") if isinstance(scope_node, dict) else None
                spans = _list(scope_spans, "spans")
            except BadRecord as error:
                sink.add(where, f"{error}; its spans skipped")
                continue
            for index, span in enumerate(spans):
                try:
                    yield _span_record(
                        span,
                        service if isinstance(service, str) else None,
                        run if isinstance(run, str) else None,
                        scope_name if isinstance(scope_name, str) else None,
                    )
                except BadRecord as error:
                    label = span.get("name") if isinstance(span, dict) else None
                    named = f" ({_short(label)})" if isinstance(label, str) else ""
                    sink.add(f"{where}, span {index + 1}{named}", f"{error}; span skipped")


# --- the file ---------------------------------------------------------------------------
@dataclass
class Loaded:
    """What a spans file held: records, the runs seen (in order), and what was wrong."""

    records: list[SpanRecord]
    runs: list[str | None]
    problems: Problems
    #: The run the records were narrowed to ("all" when none was chosen).
    shown_run: str | None = "all"


def iter_lines(
    path: str | os.PathLike[str], problems: Problems, max_line_bytes: int
) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a file, skipping (and noting) lines over the cap.

    Reads fixed chunks and never holds more than ``max_line_bytes`` of a line
    plus one chunk. Raises ``OSError`` when the file cannot be opened or read.
    """
    name = os.fspath(path)
    with open(path, "rb", buffering=0) as handle:
        line = bytearray()
        number = 0
        skipped = -1  # bytes of the line being skipped, or -1 when not skipping
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                piece = view[start : newline if newline >= 0 else len(chunk)]
                if skipped >= 0:
                    skipped += len(piece)
                elif len(line) + len(piece) > max_line_bytes:
                    skipped = len(line) + len(piece)
                    line = bytearray()  # let the partial line go now
                else:
                    line += piece
                if newline < 0:
                    break
                number += 1
                if skipped >= 0:
                    problems.add(
                        f"{name}:{number}",
                        f"line of {skipped + 1} bytes is over the {max_line_bytes} byte "
                        "limit; skipped",
                    )
                    skipped = -1
                else:
                    yield number, bytes(line)
                line = bytearray()
                start = newline + 1
        if skipped >= 0:
            problems.add(
                f"{name}:{number + 1}",
                f"line of {skipped} bytes is over the {max_line_bytes} byte limit; skipped",
            )
        elif line:
            yield number + 1, bytes(line)


def decode_line(raw: bytes, where: str, problems: Problems) -> object | None:
    """One line as JSON, or None (noted in ``problems``) when it cannot be."""
    import json

    text = raw.strip()
    if not text:
        return None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        problems.add(where, "bytes that are not UTF-8 were replaced")
        decoded = text.decode("utf-8", "replace")
    try:
        value: object = json.loads(decoded)
    except RecursionError:
        problems.add(where, "JSON nested too deeply; skipped")
    except ValueError as error:  # JSONDecodeError, or an int too long to convert
        problems.add(where, f"not JSON ({str(error).splitlines()[0][:80]}); skipped")
    else:
        return value
    return None


def load_spans_file(
    path: str | os.PathLike[str],
    *,
    run: str | None = "last",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    problems: Problems | None = None,
) -> Loaded:
    """Every span record of an OTLP JSON lines file, narrowed to one run.

    ``run`` is a run id, ``"last"`` (the run of the last span in the file; the
    default, as runs are appended) or ``"all"`` / None. Raises ``OSError`` when
    the file cannot be read at all; anything wrong inside it is in
    ``Loaded.problems``.
    """
    sink = problems if problems is not None else Problems()
    records: list[SpanRecord] = []
    runs: dict[str | None, None] = {}
    name = os.fspath(path)
    for number, raw in iter_lines(path, sink, max_line_bytes):
        where = f"{name}:{number}"
        request = decode_line(raw, where, sink)
        if request is None:
            continue
        for record in records_from_otlp_json(request, sink, where):
            runs.pop(record.run, None)  # keep the order of last appearance
            runs[record.run] = None
            records.append(record)
    order = list(runs)
    chosen: str | None = None if run in (None, "all") else run
    if run == "last":
        chosen = order[-1] if order else None
        if len(order) <= 1:
            chosen = None  # one run (or none): nothing to narrow
    if chosen is not None:
        records = [record for record in records if record.run == chosen]
    return Loaded(records, order, sink, "all" if chosen is None else chosen)


def records_from_file(
    path: str | os.PathLike[str], *, run: str | None = None
) -> Iterator[SpanRecord]:
    """Report records from an OTLP JSON lines spans file (ours or a collector's).

    With ``run``, only the spans of that run (``techrevati.run.id``) are kept.
    Bad records are skipped; use :func:`load_spans_file` to see why.
    """
    yield from load_spans_file(path, run=run or "all").records


def as_records(items: Iterable[SpanRecord | None]) -> list[SpanRecord]:
    """The records of ``items``, without the Nones."""
    return [item for item in items if item is not None]


__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "KEPT_ATTRIBUTES",
    "KEPT_EVENTS",
    "MAX_PROBLEM_LINES",
    "BadRecord",
    "EventRecord",
    "Loaded",
    "Problems",
    "SpanRecord",
    "as_records",
    "decode_line",
    "iter_lines",
    "load_spans_file",
    "record_from_span",
    "records_from_file",
    "records_from_otlp_json",
]
