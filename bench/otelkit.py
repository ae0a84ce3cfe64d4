"""The raw-OpenTelemetry floors and the SDK set-up every suite shares.

Only the OpenTelemetry SDK is imported here (not techrevati), so the 0.4.0
suite, which runs in its own venv, measures exactly the same floors.

B  — one ``start_as_current_span`` with 8 attributes through a
     BatchSpanProcessor into an exporter that drops everything.
BM — B plus the naive four SDK metric records a turn needs: token usage
     (input, output), operation duration and cost, each with its own
     attribute dict built on the spot, recorded after the span ends.

Both run under an open parent span (an agent's session span), as the turns
they are compared with do: a model call happens inside an agent run, and the
SDK's default trace-based exemplar filter then samples exemplars for BM's
records just as it does for ours. ``bm_bare`` is BM with no parent span at all
(no exemplars), reported for reference.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

MODEL = "bench-model"
INPUT_TOKENS = 1200
OUTPUT_TOKENS = 300
# Prices chosen so every turn's cost is an exact binary fraction: sums of any
# number of turns compare exactly (1200 * 2.5e-6 + 300 * 10e-6 = 0.006).
INPUT_PER_MILLION = 2.5
OUTPUT_PER_MILLION = 10.0

# GenAI semconv bucket advice (same lists the package passes).
TOKEN_BUCKETS = [4.0**i for i in range(14)]
DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]

ATTRS8: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": MODEL,
    "gen_ai.provider.name": "bench",
    "gen_ai.agent.name": "writer",
    "gen_ai.response.model": MODEL,
    "gen_ai.usage.input_tokens": INPUT_TOKENS,
    "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
    "techrevati.cost.usd": 0.006,
}


#: A turn span's shape: what is known when it starts (the sampler sees these) ...
TURN_START: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": MODEL,
    "gen_ai.provider.name": "bench",
    "gen_ai.agent.name": "writer",
}
#: ... and what only its end knows, written in one ``set_attributes``.
TURN_END: dict[str, AttributeValue] = {
    "gen_ai.usage.input_tokens": INPUT_TOKENS,
    "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
    "techrevati.cost.usd": 0.006,
    "techrevati.cost.source": "registered",
    "gen_ai.response.model": MODEL,
    "techrevati.session.iteration": 1,
}


class DropSpans(SpanExporter):
    """Accepts every batch and keeps nothing."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class DropMetrics(MetricExporter):
    """Accepts every collection and keeps nothing."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={})

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        return None


def tracer_provider() -> tuple[TracerProvider, DropSpans]:
    """A user's SDK provider: BatchSpanProcessor (default sizes) into a dropping exporter."""
    exporter = DropSpans()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def meter_provider(reader: MetricReader | None = None) -> MeterProvider:
    """A user's SDK meter provider; by default a periodic reader into a dropping exporter."""
    if reader is None:
        reader = PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=60_000)
    return MeterProvider(metric_readers=[reader])


def in_memory_reader() -> InMemoryMetricReader:
    """A reader whose ``get_metrics_data()`` lets a suite check metric sums exactly."""
    return InMemoryMetricReader()


class Floors:
    """B and BM on their own providers (no techrevati processor anywhere near them)."""

    def __init__(self) -> None:
        self.provider, self.exporter = tracer_provider()
        self.tracer: Tracer = self.provider.get_tracer("bench.floor")
        self.meters = meter_provider()
        meter = self.meters.get_meter("bench.floor")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter("techrevati.cost.usd", unit="USD")
        self.parent = self.tracer.start_span(
            "invoke_agent writer", attributes={"gen_ai.operation.name": "invoke_agent"}
        )
        self.parent_context = trace.set_span_in_context(self.parent)

    def b(self, n: int) -> None:
        token = otel_context.attach(self.parent_context)
        try:
            self._b(n)
        finally:
            otel_context.detach(token)

    def bm(self, n: int) -> None:
        token = otel_context.attach(self.parent_context)
        try:
            self._bm(n)
        finally:
            otel_context.detach(token)

    def bm_bare(self, n: int) -> None:
        self._bm(n)

    def turn_shape(self, n: int) -> None:
        """The SDK work of a turn's span alone: 4 attributes at start, 6 at end, no techrevati.

        What a turn cannot avoid paying the SDK: its span, current while the
        call runs, and the second attribute write (usage and cost are known
        only when the call returns). The gap between a turn and this row is
        ours.
        """
        token = otel_context.attach(self.parent_context)
        try:
            tracer = self.tracer
            client = SpanKind.CLIENT
            for _ in range(n):
                here = otel_context.get_current()
                span = tracer.start_span(
                    "chat bench-model", context=here, kind=client, attributes=TURN_START
                )
                inner = otel_context.attach(trace.set_span_in_context(span, here))
                otel_context.detach(inner)
                span.set_attributes(TURN_END)
                span.end()
        finally:
            otel_context.detach(token)

    def _b(self, n: int) -> None:
        tracer = self.tracer
        attrs = ATTRS8
        client = SpanKind.CLIENT
        for _ in range(n):
            with tracer.start_as_current_span("chat bench-model", kind=client, attributes=attrs):
                pass

    def _bm(self, n: int) -> None:
        tracer = self.tracer
        attrs = ATTRS8
        client = SpanKind.CLIENT
        perf = time.perf_counter
        tokens, duration, cost = self.tokens, self.duration, self.cost
        for _ in range(n):
            start = perf()
            with tracer.start_as_current_span("chat bench-model", kind=client, attributes=attrs):
                pass
            base = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": MODEL,
                "gen_ai.provider.name": "bench",
            }
            tokens.record(INPUT_TOKENS, {**base, "gen_ai.token.type": "input"})
            tokens.record(OUTPUT_TOKENS, {**base, "gen_ai.token.type": "output"})
            duration.record(perf() - start, base)
            cost.add(0.006, {"gen_ai.request.model": MODEL, "gen_ai.provider.name": "bench"})

    def flush(self) -> None:
        self.provider.force_flush()
