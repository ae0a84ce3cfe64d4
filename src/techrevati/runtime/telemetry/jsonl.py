"""OTLP JSON lines: spans and metrics written to a local file, one request per line.

Each line is one ``ExportTraceServiceRequest`` (or ``ExportMetricsServiceRequest``)
in the OTLP/JSON encoding: the proto3 JSON mapping with lowerCamelCase keys,
enums as integers and trace/span ids as hex. That is what the collector's
``file`` exporter writes and its ``otlpjsonfile`` receiver reads, so a file made
here can be replayed into a collector, loaded by other OTLP tooling, or turned
into the terminal report with ``techrevati-runtime report PATH``.

Example::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter("spans.jsonl")))
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_logger = logging.getLogger(__name__)

# OTLP/JSON departs from the plain proto3 mapping in one way: these bytes fields
# are hex, not base64 (they appear on spans, links and metric exemplars).
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _ids_to_hex(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                base64.b64decode(value).hex()
                if key in _ID_KEYS and isinstance(value, str)
                else _ids_to_hex(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_ids_to_hex(item) for item in node]
    return node


def otlp_json(message: Message) -> str:
    """One OTLP request message as a single line of OTLP/JSON (no trailing newline)."""
    as_dict = MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_ids_to_hex(as_dict), separators=(",", ":"), ensure_ascii=False)


def spans_to_json_line(spans: Sequence[ReadableSpan]) -> str:
    """Encode finished spans as one ``ExportTraceServiceRequest`` JSON line."""
    return otlp_json(encode_spans(spans))


def read_json_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each JSON object of an OTLP JSON lines file, skipping blank lines.

    A line that is not valid JSON (a run killed mid-write leaves a torn last line)
    is logged and skipped rather than failing the whole replay.
    """
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                _logger.warning("%s:%d is not JSON; skipped", path, number)
                continue
            if isinstance(value, dict):
                yield value


class _LineWriter:
    """Appends lines to a file opened on first use, from any thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def write(self, line: str) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    # One file per run: replaying it then shows this run only.
                    self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
                self._file.write(line + "\n")
                # Flushed per batch so a crash loses at most the batch in flight.
                self._file.flush()
            except OSError as error:
                _logger.error("cannot write telemetry to %s: %s", self.path, error)
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None


class JsonLinesSpanExporter(SpanExporter):
    """A span exporter that appends each batch to ``path`` as one OTLP JSON line.

    The file is created (truncated) at the first export, so a run that records
    nothing leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._writer = _LineWriter(path)

    @property
    def path(self) -> Path:
        """Where the spans go."""
        return self._writer.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = spans_to_json_line(spans)
        except Exception:  # an odd attribute must not kill the export thread
            _logger.exception("could not encode %d spans as OTLP JSON", len(spans))
            return SpanExportResult.FAILURE
        ok = self._writer.write(line)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonLinesMetricExporter(MetricExporter):
    """A metric exporter that appends each collection as one OTLP JSON line.

    Cumulative temporality (the SDK default) is kept, so the last line of the
    file holds the run's totals.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._writer = _LineWriter(path)

    @property
    def path(self) -> Path:
        """Where the metrics go."""
        return self._writer.path

    def export(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,
        **kwargs: Any,
    ) -> MetricExportResult:
        if not metrics_data.resource_metrics:
            return MetricExportResult.SUCCESS
        try:
            line = otlp_json(encode_metrics(metrics_data))
        except Exception:
            _logger.exception("could not encode metrics as OTLP JSON")
            return MetricExportResult.FAILURE
        ok = self._writer.write(line)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._writer.close()


__all__ = [
    "JsonLinesMetricExporter",
    "JsonLinesSpanExporter",
    "otlp_json",
    "read_json_lines",
    "spans_to_json_line",
]
