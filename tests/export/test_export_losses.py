"""Spans a process could not export, as the ``techrevati.export.spans_lost`` counter.

A real OTLP/HTTP exporter sends to a real receiver that answers 503 (failed spans),
and a one-span queue drops the rest of a burst (dropped spans); the counter, read
by the SDK's in-memory reader, equals the pipeline's own statistics.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from otlp_receiver import HttpReceiver

from techrevati.runtime.telemetry.calls.metrics import count_export_losses
from techrevati.runtime.telemetry.export.pipeline import BoundedSpanProcessor


def _lost(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        (p.attributes["techrevati.export.pipeline"], p.attributes["techrevati.export.reason"]): int(
            p.value
        )
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "techrevati.export.spans_lost"
        for p in m.data.data_points
    }


def test_failed_and_dropped_spans_are_counted_per_pipeline_and_reason() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    with HttpReceiver(mode="503") as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces", timeout=1)
        pipeline = BoundedSpanProcessor(
            exporter, name="otlp", max_queue_size=1, shutdown_timeout_s=3
        )
        count_export_losses(meters, [pipeline])
        count_export_losses(meters, [pipeline])  # a second configure(): still one series set
        assert _lost(reader) == {
            ("otlp", "dropped"): 0,
            ("otlp", "failed"): 0,
            ("otlp", "abandoned"): 0,
        }
        tracer = TracerProvider()
        tracer.add_span_processor(pipeline)
        for i in range(50):
            tracer.get_tracer("t").start_span(f"s{i}").end()
        tracer.shutdown()
    stats = pipeline.stats()
    lost = _lost(reader)
    assert stats.dropped > 0 and stats.failed > 0, stats
    assert lost == {
        ("otlp", "dropped"): stats.dropped,
        ("otlp", "failed"): stats.failed,
        ("otlp", "abandoned"): stats.abandoned,
    }
    assert sum(lost.values()) == stats.lost == 50 - stats.exported
    meters.shutdown()
