"""The 0.1.0 OpenTelemetry sinks (API_CONTRACT.md §14)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techrevati.runtime import ModelPricing, Orchestrator, UsageSnapshot, register_pricing
from techrevati.runtime import otel as otel_module
from techrevati.runtime.otel import DEFAULT_PROVIDER_NAME, OpenTelemetrySink, OpenTelemetryUsageSink


def _tracer() -> tuple[InMemorySpanExporter, OpenTelemetrySink]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, OpenTelemetrySink(tracer=provider.get_tracer("t"), agent_id="abc")


def test_event_sink_spans_carry_provider_and_agent_id() -> None:
    exporter, sink = _tracer()
    with Orchestrator(role="w", phase="p", event_sink=sink).session() as s:
        s.run_turn(lambda: None, model="m")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["invoke_agent w"]
    attrs = dict(spans[0].attributes or {})
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.provider.name"] == DEFAULT_PROVIDER_NAME == "techrevati"
    assert attrs["gen_ai.agent.id"] == "abc"
    assert attrs["gen_ai.agent.name"] == "w"
    assert attrs["techrevati.phase"] == "p"


def test_failed_session_span_has_error_type_and_data_attributes() -> None:
    exporter, sink = _tracer()
    with pytest.raises(RuntimeError), Orchestrator(role="w", phase="p", event_sink=sink).session():
        raise RuntimeError("bad")
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {})["error.type"] == "llm_error"
    with Orchestrator(role="w", phase="p", event_sink=sink, budget_usd=0.0).session() as s:
        register_pricing("priced", ModelPricing(1.0, 1.0))
        s.run_turn(lambda: None, model="priced", usage=UsageSnapshot(10, 0))
    budget = [
        x
        for x in exporter.get_finished_spans()
        if "techrevati.data.budget_usd" in (x.attributes or {})
    ]
    assert dict(budget[0].attributes or {})["techrevati.data.budget_usd"] == 0.0


@pytest.mark.parametrize("capture", [False, True], ids=["capture off", "capture on"])
def test_event_details_that_hold_content_stay_off_spans_with_capture_off(capture: bool) -> None:
    # The exception's message and the handoff's reason reached techrevati.detail with
    # content capture off (API contract 14.2, our change).
    from techrevati.runtime.telemetry.calls.content import set_capture_content

    set_capture_content(capture)
    try:
        exporter, sink = _tracer()
        orch = Orchestrator(role="w", phase="p", event_sink=sink, budget_usd=0.0)
        with pytest.raises(ValueError), orch.session():
            raise ValueError("customer SSN 123-45-6789")
        with orch.session() as s:
            s.handoff_to("editor", reason="the user's secret plan")
        with orch.session() as s:
            register_pricing("priced", ModelPricing(1.0, 1.0))
            s.run_turn(lambda: None, model="priced", usage=UsageSnapshot(10, 0))
    finally:
        set_capture_content(None)
    details = [
        (span.attributes or {}).get("techrevati.detail") for span in exporter.get_finished_spans()
    ]
    if capture:
        assert "customer SSN 123-45-6789" in details
        assert "handoff \u2192 editor: the user's secret plan" in details
    else:
        assert not any("SSN" in str(d) or "secret" in str(d) for d in details), details
        assert "handoff \u2192 editor" in details  # the target role is not content
    assert "budget exceeded: $0.0000" in details  # the package's own detail: kept
    # An event of a kind the package writes, with a caller's text: content all the same.
    from techrevati.runtime import AgentEvent

    before = len(exporter.get_finished_spans())
    set_capture_content(capture)
    try:
        sink.emit(AgentEvent.gate_passed("p", "customer SSN 123-45-6789"))
        sink.emit(AgentEvent.gate_passed("p", "observed=GREEN"))
    finally:
        set_capture_content(None)
    emitted = [
        (span.attributes or {}).get("techrevati.detail")
        for span in exporter.get_finished_spans()[before:]
    ]
    assert emitted == (
        ["customer SSN 123-45-6789", "observed=GREEN"] if capture else [None, "observed=GREEN"]
    )


def test_operation_mapping() -> None:
    from techrevati.runtime import AgentEvent, AgentEventName, AgentEventStatus

    exporter, sink = _tracer()
    sink.emit(AgentEvent.started("w", "p"))
    sink.emit(AgentEvent.phase_started("p"))
    sink.emit(AgentEvent(AgentEventName.AGENT_TOOL_CALLED, AgentEventStatus.RUNNING, role="w"))
    sink.emit(AgentEvent(AgentEventName.HOOK_PRE_TOOL, AgentEventStatus.RUNNING))
    assert [s.name for s in exporter.get_finished_spans()] == [
        "create_agent w",
        "invoke_workflow",
        "execute_tool w",
        "invoke_agent",
    ]


def test_usage_sink_records_tokens_and_cost() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    register_pricing("m", ModelPricing(3.0, 15.0))
    sink = OpenTelemetryUsageSink(meter=meter)
    with Orchestrator(role="w", phase="p", usage_sink=sink).session() as s:
        s.run_turn(lambda: None, model="m", usage=UsageSnapshot(1000, 500))
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert set(metrics) == {"gen_ai.client.token.usage", "techrevati.cost.usd"}
    tokens = {
        dict(p.attributes or {})["gen_ai.token.type"]: p.sum
        for p in metrics["gen_ai.client.token.usage"].data.data_points
    }
    assert tokens == {"input": 1000, "output": 500}
    (cost,) = metrics["techrevati.cost.usd"].data.data_points
    assert cost.value == pytest.approx(0.0105)
    assert metrics["techrevati.cost.usd"].unit == "USD"


def test_import_guard_raises_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ImportError("no otel here")
    monkeypatch.setattr(otel_module, "_OTEL_AVAILABLE", False)
    monkeypatch.setattr(otel_module, "_OTEL_IMPORT_ERROR", fake)
    with pytest.raises(ImportError, match=r"techrevati-runtime\[otel\]") as err:
        OpenTelemetrySink()
    assert err.value.__cause__ is fake
    with pytest.raises(ImportError):
        OpenTelemetryUsageSink()


def test_session_spans_on_the_sinks_global_provider_carry_its_names() -> None:
    """When the sink's tracer is the global provider's, our own spans land beside its spans."""
    code = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider(); provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
from techrevati.runtime import Orchestrator
from techrevati.runtime.otel import OpenTelemetrySink
sink = OpenTelemetrySink(tracer=trace.get_tracer("test"), agent_id="abc")
with Orchestrator(role="w", phase="p", event_sink=sink).session() as s:
    s.run_turn(lambda: None, model="m")
    s.run_tool("t", lambda: 1)
def names(x):
    attrs = x.attributes or {}
    return x.name, attrs.get("gen_ai.provider.name"), attrs.get("gen_ai.agent.id")
print(json.dumps(sorted(names(x) for x in exporter.get_finished_spans())))
"""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    spans = json.loads(out.strip().splitlines()[-1])
    assert [name for name, _, _ in spans] == [
        "chat m",
        "execute_tool t",
        "invoke_agent w",
        "invoke_agent w",
    ]
    assert all(provider == "techrevati" for _, provider, _ in spans), spans
    assert all(agent == "abc" for _, _, agent in spans)


def test_the_package_does_not_import_the_otel_module_itself() -> None:
    import subprocess
    import sys

    code = "import sys, techrevati.runtime; print('techrevati.runtime.otel' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "False"
