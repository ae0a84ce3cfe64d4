"""The limits processor reads the SDK span's own fields, and still works on any other span.

``LimitsProcessor.on_start`` / ``on_end`` read a span's scope, name, parent and
context with ``sdk_attributes.span_fields``: from the SDK's fields
(``_instrumentation_scope``, ``_name``, ...), not through its properties (a
Python call each, on every span), and fall back to the public properties for a
span of another shape. The first test pins that the pinned SDK has those
fields, equal to what its properties say, so the direct path is the one taken;
the second runs a whole model call through the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanContext, Status, StatusCode

from techrevati.runtime import UsageSnapshot, agent_session
from techrevati.runtime.telemetry.limits.processor import LimitsProcessor, ensure_limits_processor


class _Fields(SpanProcessor):
    """Records, for every span, the fields the limits processor reads and the properties."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, object]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span._instrumentation_scope
        direct = (scope._name if scope else None, span._name, span._parent, span._context)
        public = (
            span.instrumentation_scope.name if span.instrumentation_scope else None,
            span.name,
            span.parent,
            span.context,
        )
        self.seen.append((direct, public))

    def on_end(self, span: ReadableSpan) -> None:
        scope = span._instrumentation_scope
        direct = (scope._name if scope else None, span._name, span._context)
        public = (
            span.instrumentation_scope.name if span.instrumentation_scope else None,
            span.name,
            span.context,
        )
        self.seen.append((direct, public))


def test_the_pinned_sdk_span_has_the_fields_the_processor_reads() -> None:
    provider = TracerProvider()
    fields = _Fields()
    provider.add_span_processor(fields)
    tracer = provider.get_tracer("some.instrumentation", "1.0")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("chat m"):
        pass
    assert len(fields.seen) == 4
    for direct, public in fields.seen:
        assert direct == public
    # The inner span's parent is the outer span: the field is not a stale default.
    assert fields.seen[1][0][2] == fields.seen[0][0][3]


class _Scope:
    def __init__(self, name: str) -> None:
        self.name = name


class _PlainSpan:
    """A span with the public surface only (no SDK fields): another SDK, a test double."""

    def __init__(self, name: str, context: SpanContext, attributes: dict[str, Any]) -> None:
        self._values = {
            "instrumentation_scope": _Scope("opentelemetry.instrumentation.genai.openai"),
            "name": name,
            "parent": None,
            "context": context,
        }
        self.store = dict(attributes)
        self.status = Status(StatusCode.UNSET)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self.store)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.store.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.store[key] = value


def test_a_span_without_the_sdk_fields_is_admitted_and_booked() -> None:
    provider = TracerProvider()
    processor = ensure_limits_processor(provider)
    assert isinstance(processor, LimitsProcessor)
    context = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False)
    span = _PlainSpan(
        "chat gpt-4o-mini",
        context,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
        },
    )
    with agent_session("plain", max_iterations=5, budget_usd=1.0, enforce_budget=True) as session:
        processor.on_start(span)  # type: ignore[arg-type]
        assert session._iteration_count == 1
        assert span.store["techrevati.session.iteration"] == 1
        span.store.update({"gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0})
        processor.on_end(span)  # type: ignore[arg-type]
    assert session.tracker.turns == [("gpt-4o-mini", UsageSnapshot(1_000_000, 0))]
    # gpt-4o-mini's bundled input price: $0.15 per million tokens.
    assert session.tracker.total_cost() == pytest.approx(0.15)
