"""The terminal report: what a run did, rebuilt from its spans alone.

Three parts, each in its own module: reading spans (from the SDK or from a
file nobody vouches for) in :mod:`.report_read`, the report as data in
:mod:`.report_model`, and its text in :mod:`.report_text`. This module keeps
the in-memory source used during a run (:class:`ReportExporter`) and the names
0.1.0 code imported from here.

The same code serves both sources, so ``techrevati-runtime report PATH`` after
the fact prints what the run printed at exit.

Example::

    loaded = load_spans_file("telemetry-out/spans.jsonl")
    print(render_report(build_report(loaded.records)))
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import semconv as sc
from ..export.forking import after_fork_in_child
from .fold import combined, empty_report, fold_into
from .model import ModelRow, RunReport, SessionRow, ToolRow, build_report
from .read import (
    EventRecord,
    Loaded,
    Problems,
    SpanRecord,
    load_spans_file,
    record_from_span,
    records_from_file,
    records_from_otlp_json,
)
from .text import render_report


class ReportExporter(SpanExporter):
    """Keeps what the end-of-run report needs, in bounded memory, with exact totals.

    Used as an exporter (behind a batch processor) so the conversion runs on the
    export thread, not on the agent's. Spans are grouped as they arrive: when a
    session's span arrives (it ends after its calls), the session and the spans
    under it form one unit; when a trace's root arrives, the rest of that trace
    does. The latest units are kept as records, at most ``max_spans`` of them
    (a bounded sample: their sessions are listed row by row); older units are
    folded into running totals (``report/fold.py``), so model, tool, limit and
    cost totals cover the whole run while memory stays flat. Spans whose unit
    never completes (their root is in another process) are folded by age once
    the bound is reached; only a bound reached by a single unfinished trace
    evicts spans uncounted, and the report says how many.

    Example::

        keeper = ReportExporter(max_spans=10_000)
        keeper.export(spans)
        print(render_report(keeper.build()))
    """

    def __init__(self, max_spans: int = 10_000) -> None:
        self._max = max(1, max_spans)
        self._lock = threading.Lock()
        self._reset()
        after_fork_in_child(self._forget)

    def _reset(self) -> None:
        #: Spans of each trace not yet in a unit, by span id (oldest trace first).
        self._open: OrderedDict[str, dict[str, SpanRecord]] = OrderedDict()
        #: Complete units (a session and its spans, or the rest of a trace), oldest first.
        self._units: deque[list[SpanRecord]] = deque()
        self._kept = 0
        self._folded: RunReport | None = None
        self._folded_spans = 0
        self._evicted = 0

    def _forget(self) -> None:
        # A forked worker reports its own spans, not the parent's copy of them.
        self._lock = threading.Lock()
        self._reset()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        converted = [r for r in (record_from_span(span) for span in spans) if r is not None]
        folds: list[list[SpanRecord]] = []
        with self._lock:
            for record in converted:
                self._add(record)
            while self._kept > self._max:
                unit = self._oldest_unit()
                if unit is None:
                    break
                self._kept -= len(unit)
                folds.append(unit)
        # Folding builds a report per unit: done outside the lock, in arrival order.
        for unit in folds:
            self._fold(unit)
        return SpanExportResult.SUCCESS

    def _add(self, record: SpanRecord) -> None:
        group = self._open.get(record.trace_id)
        if group is None:
            group = self._open[record.trace_id] = {}
        else:
            self._open.move_to_end(record.trace_id)
        group[record.span_id] = record
        self._kept += 1
        if record.operation == sc.OP_INVOKE_AGENT:
            unit = _claim_session(group, record)
            if unit:
                self._units.append(unit)
        if record.parent_id is None or record.parent_id == record.span_id:
            rest = list(group.values())
            del self._open[record.trace_id]
            if rest:
                self._units.append(rest)
        elif not group:
            del self._open[record.trace_id]

    def _oldest_unit(self) -> list[SpanRecord] | None:
        if self._units:
            return self._units.popleft()
        if len(self._open) > 1:
            # No complete unit: the least recently active trace goes, as it is.
            _, group = self._open.popitem(last=False)
            return list(group.values())
        if self._open:
            # One trace holds every kept span: evict its oldest span, uncounted.
            group = next(iter(self._open.values()))
            oldest = next(iter(group))
            del group[oldest]
            self._kept -= 1
            self._evicted += 1
        return None

    def _fold(self, unit: list[SpanRecord]) -> None:
        part = build_report(unit)
        with self._lock:
            if self._folded is None:
                self._folded = empty_report()
            fold_into(self._folded, part)
            self._folded_spans += len(unit)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def records(self) -> tuple[list[SpanRecord], int]:
        """The records kept, and how many older spans are not among them (folded or evicted)."""
        with self._lock:
            kept = [r for unit in self._units for r in unit]
            kept += [r for group in self._open.values() for r in group.values()]
            return kept, self._folded_spans + self._evicted

    def build(self) -> RunReport:
        """The report over the whole run so far: kept spans listed, older ones in the totals."""
        with self._lock:
            kept = [r for unit in self._units for r in unit]
            kept += [r for group in self._open.values() for r in group.values()]
            folded, evicted = self._folded, self._evicted
            folded_copy = None
            if folded is not None:
                folded_copy = empty_report()
                fold_into(folded_copy, folded)
        return combined(build_report(kept, evicted=evicted), folded_copy)


def _claim_session(group: dict[str, SpanRecord], session: SpanRecord) -> list[SpanRecord]:
    """Take the session span and every span of ``group`` whose nearest session it is."""
    owner: dict[str, str | None] = {}

    def nearest(span_id: str) -> str | None:
        chain: list[str] = []
        node: str | None = span_id
        found: str | None = None
        while node is not None:
            if node in owner:
                found = owner[node]
                break
            record = group.get(node)
            if record is None:
                break
            if record.operation == sc.OP_INVOKE_AGENT and node != span_id:
                found = node
                break
            if node == session.span_id:
                found = node
                break
            chain.append(node)
            if len(chain) > len(group):  # a parent cycle: stop
                break
            node = record.parent_id
        for link in chain:
            owner[link] = found
        return found

    taken = [span_id for span_id in group if nearest(span_id) == session.span_id]
    return [group.pop(span_id) for span_id in taken]


__all__ = [
    "EventRecord",
    "Loaded",
    "ModelRow",
    "Problems",
    "ReportExporter",
    "RunReport",
    "SessionRow",
    "SpanRecord",
    "ToolRow",
    "build_report",
    "load_spans_file",
    "record_from_span",
    "records_from_file",
    "records_from_otlp_json",
    "render_report",
]
