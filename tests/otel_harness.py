"""A real OpenTelemetry SDK pipeline kept in memory, shared by the test packages.

``ended`` counts every ``on_end`` per span id, so a test can prove that a span
ended exactly once whichever way a call or a stream stopped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class EndCounter(SpanProcessor):
    """Counts ``on_end`` per span id (a second ``end()`` would show as 2)."""

    def __init__(self) -> None:
        self.ends: Counter[int] = Counter()

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ends[span.context.span_id] += 1


@dataclass
class Otel:
    """Explicit tracer and meter providers with in-memory exporters."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    counter: EndCounter = field(default_factory=EndCounter)

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"expected one {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def ended_once(self, span: ReadableSpan) -> bool:
        assert span.context is not None
        return self.counter.ends[span.context.span_id] == 1

    def metric_points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) for every data point of metric ``name``."""
        data = self.reader.get_metrics_data()
        points: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(
                            (dict(p.attributes or {}), p) for p in metric.data.data_points
                        )
        return points

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum (or value) over the points whose labels match (``a__b`` means ``a.b``)."""
        total = 0.0
        for attrs, point in self.metric_points(name):
            if all(attrs.get(k.replace("__", ".")) == v for k, v in labels.items()):
                total += point.sum if hasattr(point, "sum") else point.value
        return total

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments that send an Orchestrator's telemetry here."""
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    orch_kwargs = kwargs

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def make_otel() -> Otel:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    counter = EndCounter()
    provider.add_span_processor(counter)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Otel(provider, MeterProvider(metric_readers=[reader]), exporter, reader, counter)


def loop_detections(otel: Otel) -> list[dict[str, Any]]:
    """The attributes of every loop-detection event on the session spans exported so far."""
    from techrevati.runtime.telemetry import semconv as sc  # (the package after the harness)

    return [
        dict(event.attributes or {})
        for span in otel.spans("invoke_agent")
        for event in span.events
        if event.name == sc.EVENT_LOOP_DETECTED
    ]
