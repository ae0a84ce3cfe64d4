"""configure() against real OTLP receivers on 127.0.0.1, over HTTP and gRPC.

Spans are made with the plain OpenTelemetry API here, on the provider that
configure() built, so these tests pin the wire format independently of the core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_receiver import GrpcReceiver, HttpReceiver, Received, attributes

from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.setup.configure import TelemetryHandle, configure


@contextmanager
def receiver_for(protocol: str) -> Iterator[HttpReceiver | GrpcReceiver]:
    with HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver() as receiver:
        yield receiver


def _make_session(handle: TelemetryHandle) -> None:
    """One session with a model call and a tool call, as the core shapes them."""
    assert handle.tracer_provider is not None
    tracer = handle.tracer_provider.get_tracer("export-test")
    with tracer.start_as_current_span(
        "invoke_agent researcher",
        attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "researcher"},
    ) as session:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
                sc.GEN_AI_USAGE_INPUT_TOKENS: 1200,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 85,
                sc.COST_USD: 0.00023,
                sc.BREAKER_STATE: "closed",
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool web_search",
            attributes={
                sc.GEN_AI_OPERATION_NAME: "execute_tool",
                sc.GEN_AI_TOOL_NAME: "web_search",
                sc.PERMISSION_DECISION: "deny",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "denied"))
        session.add_event(sc.EVENT_LIMIT_HIT, {sc.LIMIT_KIND: "budget"})
        session.set_attribute(sc.SESSION_TURNS, 1)


def _by_name(received: Received) -> dict[str, tuple[dict[str, Any], PbSpan]]:
    return {span.name: (resource, span) for resource, span in received.spans()}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_exact_spans_and_resource_arrive(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "research-agent")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=agents")
    with receiver_for(protocol) as receiver:
        handle = configure(
            endpoint=receiver.endpoint, protocol=protocol, set_global=False, metrics=False
        )
        try:
            _make_session(handle)
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(lambda r: len(r.spans()) >= 3)
        finally:
            handle.shutdown(timeout_s=3)

    spans = _by_name(receiver.received)
    assert sorted(spans) == [
        "chat gpt-4o-mini",
        "execute_tool web_search",
        "invoke_agent researcher",
    ]
    resource, session = spans["invoke_agent researcher"]
    _, chat = spans["chat gpt-4o-mini"]
    _, tool = spans["execute_tool web_search"]

    assert resource["service.name"] == "research-agent"
    assert resource["deployment.environment"] == "test"
    assert resource["team"] == "agents"

    # Parent/child: one trace, the session is the root, the others its children.
    assert session.parent_span_id == b""
    assert chat.trace_id == session.trace_id == tool.trace_id
    assert chat.parent_span_id == session.span_id
    assert tool.parent_span_id == session.span_id

    assert session.kind == PbSpan.SPAN_KIND_INTERNAL
    assert chat.kind == PbSpan.SPAN_KIND_CLIENT
    assert tool.kind == PbSpan.SPAN_KIND_INTERNAL

    assert attributes(chat.attributes) == {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 1200,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 85,
        sc.COST_USD: pytest.approx(0.00023),
        sc.BREAKER_STATE: "closed",
    }
    assert attributes(tool.attributes)[sc.PERMISSION_DECISION] == "deny"
    assert tool.status.code == tool.status.STATUS_CODE_ERROR
    assert attributes(session.attributes)[sc.SESSION_TURNS] == 1
    assert [event.name for event in session.events] == [sc.EVENT_LIMIT_HIT]
    assert attributes(session.events[0].attributes) == {sc.LIMIT_KIND: "budget"}
    assert handle.stats()["otlp"].exported == 3


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_metrics_arrive_with_names_units_and_points(protocol: str) -> None:
    with receiver_for(protocol) as receiver:
        handle = configure(
            endpoint=receiver.endpoint,
            protocol=protocol,
            service_name="metrics-agent",
            set_global=False,
        )
        try:
            assert handle.meter_provider is not None
            meter = handle.meter_provider.get_meter("export-test")
            tokens = meter.create_histogram(
                sc.METRIC_TOKEN_USAGE,
                unit="{token}",
                explicit_bucket_boundaries_advisory=list(sc.TOKEN_BUCKETS),
            )
            cost = meter.create_counter(sc.METRIC_COST, unit="USD")
            tokens.record(1200, {sc.GEN_AI_TOKEN_TYPE: "input", sc.GEN_AI_REQUEST_MODEL: "m"})
            tokens.record(85, {sc.GEN_AI_TOKEN_TYPE: "output", sc.GEN_AI_REQUEST_MODEL: "m"})
            cost.add(0.25, {sc.GEN_AI_REQUEST_MODEL: "m"})
            cost.add(0.5, {sc.GEN_AI_REQUEST_MODEL: "m"})
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(lambda r: sc.METRIC_COST in r.metrics_by_name())
        finally:
            handle.shutdown(timeout_s=3)

    found = receiver.received.metrics_by_name()
    resource, usage = found[sc.METRIC_TOKEN_USAGE]
    assert resource["service.name"] == "metrics-agent"
    assert usage.unit == "{token}"
    points = {
        attributes(point.attributes)[sc.GEN_AI_TOKEN_TYPE]: point
        for point in usage.histogram.data_points
    }
    assert points["input"].count == 1 and points["input"].sum == 1200
    assert points["output"].count == 1 and points["output"].sum == 85
    assert list(points["input"].explicit_bounds) == list(sc.TOKEN_BUCKETS)
    # 1200 lands in the (1024, 4096] bucket, the 7th.
    assert points["input"].bucket_counts[6] == 1

    _, total = found[sc.METRIC_COST]
    assert total.unit == "USD"
    assert total.sum.is_monotonic
    [point] = total.sum.data_points
    assert point.as_double == pytest.approx(0.75)
    assert attributes(point.attributes) == {sc.GEN_AI_REQUEST_MODEL: "m"}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_endpoint_protocol_and_headers_from_environment(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver_for(protocol) as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20t0k")
        handle = configure(set_global=False, metrics=False)
        try:
            assert [(d.kind, d.protocol) for d in handle.destinations] == [("otlp", protocol)]
            assert handle.spans_file is None  # a collector is configured: no local file
            _make_session(handle)
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(lambda r: len(r.spans()) >= 3)
        finally:
            handle.shutdown(timeout_s=3)
    headers = receiver.received.headers[0]
    assert headers["x-tenant"] == "acme"
    assert headers["authorization"] == "Bearer t0k"


def test_explicit_headers_and_signal_specific_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with HttpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.endpoint}/v1/traces")
        handle = configure(set_global=False, metrics=False, headers={"X-Api-Key": "k1"})
        try:
            _make_session(handle)
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(lambda r: len(r.spans()) >= 3)
        finally:
            handle.shutdown(timeout_s=3)
    assert receiver.received.headers[0]["x-api-key"] == "k1"
    assert handle.destinations[0].target == f"{receiver.endpoint}/v1/traces"


def test_sampler_from_environment_keeps_spans_recorded_but_unexported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with HttpReceiver() as receiver:
        handle = configure(endpoint=receiver.endpoint, set_global=False, metrics=False)
        try:
            assert handle.tracer_provider is not None
            tracer = handle.tracer_provider.get_tracer("export-test")
            with tracer.start_as_current_span("invoke_agent r") as span:
                # Recorded, so span processors (budgets, caps) still see it ...
                assert span.is_recording()
                assert not span.get_span_context().trace_flags.sampled
            assert handle.force_flush(timeout_s=5)
        finally:
            handle.shutdown(timeout_s=3)
    # ... but the sampler's "no" still means nothing is exported.
    assert receiver.received.spans() == []
    assert handle.stats()["otlp"].accepted == 0
