"""Fixtures for the telemetry-core tests: a real SDK pipeline kept in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techrevati.runtime import ModelPricing, register_pricing


@dataclass
class Otel:
    """An explicit tracer and meter provider with in-memory exporters."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

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
        total = 0.0
        for attrs, point in self.metric_points(name):
            if all(attrs.get(k.replace("__", ".")) == v for k, v in labels.items()):
                total += point.sum if hasattr(point, "sum") else point.value
        return total

    def orch_kwargs(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    yield Otel(provider, meters, exporter, reader)
    provider.shutdown()
    meters.shutdown()


@pytest.fixture
def priced() -> None:
    """Two priced models (the root conftest restores the price table afterwards)."""
    register_pricing(
        "model-a", ModelPricing(3.0, 15.0, cache_write_per_million=3.75, cache_read_per_million=0.3)
    )
    register_pricing("model-b", ModelPricing(1.0, 2.0))
