"""The three ways users run us: no OpenTelemetry, their global SDK, explicit providers.

Global providers can be set once per process, so the first two run in a fresh
interpreter each.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otel_harness import Otel
from techrevati.runtime import (
    AllowAllGuardrail,
    BudgetExceededError,
    GuardrailOutcome,
    MaxIterationsExceededError,
    Orchestrator,
    UsageSnapshot,
    agent_session,
)


def _run(code: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_no_opentelemetry_configured_still_enforces() -> None:
    result = _run(
        """
        import json
        from opentelemetry import trace
        from techrevati.runtime import (Orchestrator, UsageSnapshot, ModelPricing,
            register_pricing, BudgetExceededError, MaxIterationsExceededError)
        register_pricing("m", ModelPricing(1.0, 1.0))
        out = {"proxy": type(trace.get_tracer_provider()).__name__}
        orch = Orchestrator(role="w", phase="p", max_iterations=2)
        try:
            with orch.session() as s:
                for _ in range(3):
                    s.run_turn(lambda: None, model="m")
        except MaxIterationsExceededError:
            out["cap"] = s._iteration_count
        orch = Orchestrator(role="w", phase="p", budget_usd=0.001, enforce_budget=True)
        try:
            with orch.session() as s:
                for _ in range(3):
                    s.run_turn(lambda: None, model="m", usage=UsageSnapshot(800, 0))
        except BudgetExceededError as e:
            out["budget"] = round(e.current_cost_usd, 6)
        out["after"] = type(trace.get_tracer_provider()).__name__
        print(json.dumps(out))
        """
    )
    # the user's global provider is left alone; limits hold anyway
    assert result == {
        "proxy": "ProxyTracerProvider",
        "cap": 2,
        "budget": 0.0016,
        "after": "ProxyTracerProvider",
    }


def test_user_global_sdk_providers_receive_our_telemetry() -> None:
    result = _run(
        """
        import json
        from opentelemetry import trace, metrics
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        exporter = InMemorySpanExporter()
        tp = TracerProvider(); tp.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tp)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

        from techrevati.runtime import (Orchestrator, UsageSnapshot, ModelPricing,
            register_pricing)
        register_pricing("m", ModelPricing(1.0, 1.0))
        orch = Orchestrator(role="w", phase="p")
        lib = trace.get_tracer("third.party")
        with orch.session() as s:
            s.run_turn(lambda: None, model="m", usage=UsageSnapshot(100, 100))
            with lib.start_as_current_span("chat m", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                    "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 0}):
                pass
        names = sorted(x.name for x in exporter.get_finished_spans())
        found = set()
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                found.update(m.name for m in sm.metrics)
        ours = sorted(n for n in found if "techrevati" in n or "gen_ai" in n)
        print(json.dumps({"spans": names, "cost": round(s.tracker.total_cost(), 9),
                          "turns": s.tracker.turn_count, "metrics": ours}))
        """
    )
    assert result["spans"] == ["chat m", "chat m", "invoke_agent w"]
    assert result["cost"] == 0.0005
    assert result["turns"] == 2
    assert set(result["metrics"]) >= {  # type: ignore[arg-type]
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.invoke_agent.duration",
        "techrevati.cost.usd",
        "techrevati.sessions",
    }


def test_explicit_providers_are_used(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=1, **otel.orch_kwargs())
    with orch.session() as s:
        s.run_turn(lambda: None, model="m")
        with pytest.raises(MaxIterationsExceededError):
            s.run_turn(lambda: None, model="m")
    assert sorted(x.name for x in otel.spans()) == ["chat m", "invoke_agent w"]
    assert otel.metric_sum("techrevati.sessions") == 1


class _BrokenExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector is down")

    def shutdown(self) -> None:
        return None


class _BrokenSink:
    calls = 0

    def emit(self, event: object) -> None:
        type(self).calls += 1
        raise RuntimeError("sink down")

    def record(self, model: str, usage: UsageSnapshot, cost_usd: float) -> None:
        type(self).calls += 1
        raise RuntimeError("sink down")


def test_broken_exporter_and_sinks_never_break_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_BrokenExporter()))
    sink = _BrokenSink()
    orch = Orchestrator(
        role="w",
        phase="p",
        budget_usd=0.0,
        event_sink=sink,  # type: ignore[arg-type]
        usage_sink=sink,  # type: ignore[arg-type]
        tracer_provider=provider,
    )
    caplog.set_level(logging.DEBUG)
    with orch.session() as s:
        for _ in range(3):
            s.run_turn(lambda: "ok", model="m", usage=UsageSnapshot(1, 1))
    assert s.worker.status.value == "completed"
    assert _BrokenSink.calls == 4  # three usage records and one agent.completed event
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    usage_errors = [r for r in errors if "usage_sink.record raised" in r.getMessage()]
    event_errors = [r for r in errors if "event_sink.emit raised" in r.getMessage()]
    assert len(usage_errors) == 1  # logged once per failing sink, not once per call
    assert len(event_errors) == 1


def test_bad_orchestrator_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="-1"):
        Orchestrator(role="w", phase="p", budget_usd=-1)
    with pytest.raises(TypeError, match="'5'"):
        Orchestrator(role="w", phase="p", max_iterations="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-2"):
        Orchestrator(role="w", phase="p", max_iterations=-2)
    with pytest.raises(ValueError, match="role"):
        Orchestrator(role="", phase="p")
    # Names go into report tables and log lines; flags that guard money are bools.
    with pytest.raises(TypeError, match="role must be a string, got int: 3"):
        Orchestrator(role=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"role must not contain control characters, got 'a\\nb'"):
        Orchestrator(role="a\nb")
    with pytest.raises(ValueError, match="role must be a non-empty string, got ' '"):
        Orchestrator(role=" ")
    with pytest.raises(TypeError, match="provider_name must be a string, got int: 3"):
        Orchestrator(role="w", provider_name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="project_id must be an int or None, got 'x'"):
        Orchestrator(role="w", project_id="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="enforce_budget must be True or False, got 'no'"):
        agent_session("w", budget_usd=1.0, enforce_budget="no")
    with pytest.raises(TypeError, match="shared must be True or False, got 1"):
        Orchestrator(role="w", shared=1)  # type: ignore[arg-type]
    # Collaborators: a clear error at construction, not a bare AttributeError at first use.
    with pytest.raises(TypeError, match="circuit_breaker must be a CircuitBreaker or None"):
        Orchestrator(role="w", circuit_breaker="api")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guardrails must be a list of guardrails, got None"):
        Orchestrator(role="w", guardrails=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"event_sink must be a sink with emit\(\)"):
        Orchestrator(role="w", event_sink=None)  # type: ignore[arg-type]
    # A guardrail without its checks was accepted, then the first tool call raised a
    # bare AttributeError ('object' object has no attribute 'check_pre').
    bad = object()
    with pytest.raises(TypeError) as caught:
        Orchestrator(role="w", guardrails=[AllowAllGuardrail(), bad])  # type: ignore[list-item]
    assert str(caught.value) == (
        f"guardrails[1] must be a guardrail with check_pre() and check_post(), got object: {bad!r}"
    )

    class PreOnly:
        name = "pre-only"

        def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    with pytest.raises(TypeError, match=r"guardrails\[0\] must be a guardrail .* got PreOnly"):
        Orchestrator(role="w", guardrails=[PreOnly()])  # type: ignore[list-item]

    class AsyncGuard(PreOnly):
        async def check_post(self, value: object, *, role: str, tool: str) -> GuardrailOutcome:
            return GuardrailOutcome(True)

    with pytest.raises(TypeError, match=r"guardrails\[0\].check_post is a coroutine function"):
        Orchestrator(role="w", guardrails=[AsyncGuard()])  # type: ignore[list-item]
    orch = Orchestrator(role="w", guardrails=[AllowAllGuardrail()])
    orch.guardrails.append(bad)  # type: ignore[arg-type]  # set afterwards: refused at opening
    with pytest.raises(TypeError, match=r"guardrails\[1\] must be a guardrail"):
        orch.session().__enter__()
    assert orch.registry.list_active() == []
    with pytest.raises(TypeError, match="registry must be an AgentRegistry, got str: 'shared'"):
        Orchestrator(role="w", registry="shared")  # type: ignore[arg-type]

    class AsyncSink:
        async def emit(self, event: object) -> None:
            return None

    with pytest.raises(TypeError, match=r"event_sink.emit is a coroutine function \(AsyncSink\)"):
        Orchestrator(role="w", event_sink=AsyncSink())  # type: ignore[arg-type]
    orch = Orchestrator(role="w", phase="p")
    with orch.session() as s, pytest.raises(ValueError, match="-3"):
        s.run_turn(lambda: None, model="m", timeout=-3)
    with pytest.raises(BudgetExceededError):
        raise BudgetExceededError(1.0, 2.0)


def test_bad_turn_and_tool_arguments_leave_nothing_recorded(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", **otel.orch_kwargs())
    with orch.session() as s:
        with pytest.raises(TypeError, match="dict"):
            s.run_turn(lambda: None, model="m", usage={"input_tokens": 5})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="None"):
            s.run_turn(lambda: None, model=None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'not callable'"):
            s.run_turn("not callable")  # type: ignore[arg-type]
        # A wrong type is a TypeError, a wrong value of the right type a ValueError: a
        # str timeout raised ValueError and an empty tool name TypeError.
        with pytest.raises(TypeError, match="'soon'"):
            s.run_turn(lambda: None, timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="positive"):
            s.run_turn(lambda: None, timeout=0)
        with pytest.raises(TypeError, match="42"):
            s.run_tool(42, lambda: None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty"):
            s.run_tool("", lambda: None)
        with pytest.raises(TypeError, match="run_tool needs a callable"):
            s.run_tool("t", None)  # type: ignore[arg-type]
        assert s._iteration_count == 0
        assert s.tracker.turn_count == 0
        # A bad estimate is the caller's error, raised after the call returned: the
        # call itself ran (and was billed), so it is booked, as a call without usage.
        with pytest.raises(TypeError, match="must return a UsageSnapshot, got int: 7"):
            s.run_turn(lambda: "x", model="m", estimate_usage=lambda r: 7)  # type: ignore[arg-type,return-value]
        assert s.tracker.turn_count == 1
    names = sorted(span.name for span in otel.spans())
    assert names == ["chat m", "invoke_agent w"]
    (turn,) = [span for span in otel.spans() if span.name == "chat m"]
    assert "error.type" not in dict(turn.attributes or {})


def test_explicit_provider_still_sees_third_party_spans_on_the_global_one() -> None:
    result = _run(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())          # where libraries report
        from techrevati.runtime import (Orchestrator, ModelPricing, register_pricing,
            BudgetExceededError)
        register_pricing("m", ModelPricing(1.0, 1.0))
        lib = trace.get_tracer("opentelemetry.instrumentation.some_llm")
        orch = Orchestrator(role="w", phase="p", budget_usd=0.0015, enforce_budget=True,
                            tracer_provider=TracerProvider())  # ours go elsewhere
        sent = 0
        try:
            with orch.session() as s:
                for _ in range(5):
                    with lib.start_as_current_span("chat m", attributes={
                            "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 0}):
                        sent += 1
        except BudgetExceededError:
            pass
        print(json.dumps({"sent": sent, "turns": s.tracker.turn_count,
                          "cost": round(s.tracker.total_cost(), 9)}))
        """
    )
    assert result == {"sent": 2, "turns": 2, "cost": 0.002}


def test_a_soft_budget_hit_says_it_refused_nothing() -> None:
    """The refusal panels count hits with techrevati.limit.enforced other than false."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from techrevati.runtime import ModelPricing, register_pricing

    register_pricing("soft-model", ModelPricing(1_000_000.0, 0.0))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    one = UsageSnapshot(input_tokens=1, output_tokens=0)
    for enforce in (False, True):
        orch = Orchestrator(
            role="soft" if not enforce else "hard",
            budget_usd=0.5,
            enforce_budget=enforce,
            meter_provider=meters,
        )
        with orch.session() as s:
            try:
                s.run_turn(lambda: "x", model="soft-model", usage=one)  # $1 crosses $0.50
            except BudgetExceededError:
                assert enforce
    data = reader.get_metrics_data()
    hits = {
        (
            dict(p.attributes or {})["gen_ai.agent.name"],
            dict(p.attributes or {})["techrevati.limit.enforced"],
        )
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "techrevati.limit.hits"
        for p in m.data.data_points
    }
    assert hits == {("soft", False), ("hard", True)}
