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
from collections import deque
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..export.forking import after_fork_in_child
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

    def records(self) -> tuple[list[SpanRecord], int]:
        """The records kept so far, and how many older ones were pushed out."""
        with self._lock:
            return list(self._records), self._evicted

    def build(self) -> RunReport:
        """The report over the spans seen so far."""
        records, evicted = self.records()
        return build_report(records, evicted=evicted)


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
