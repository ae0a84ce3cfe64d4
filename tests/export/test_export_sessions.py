"""Real Orchestrator sessions through configure(), to real OTLP receivers.

What the user runs (a session with priced turns, an allowed and a denied tool, a
breaker) must arrive at the collector as the exact spans and metrics the
dashboards read; and message content must stay out unless asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from otlp_receiver import GrpcReceiver, HttpReceiver, attributes

from techrevati.runtime.circuit_breaker import CircuitBreaker
from techrevati.runtime.orchestrator import Orchestrator
from techrevati.runtime.permissions import (
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
)
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.limits.errors import PermissionDeniedError
from techrevati.runtime.telemetry.setup.configure import TelemetryHandle, configure
from techrevati.runtime.usage_tracking import (
    BudgetExceededError,
    ModelPricing,
    UsageSnapshot,
    register_pricing,
)

SECRET = "sk-live-4f1c9e-do-not-log"


@contextmanager
def receiver_for(protocol: str) -> Iterator[HttpReceiver | GrpcReceiver]:
    with HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver() as receiver:
        yield receiver


def _orchestrator(handle: TelemetryHandle, **overrides: Any) -> Orchestrator:
    register_pricing("model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))
    policy = PermissionPolicy(
        role_configs={
            "researcher": RolePermissionConfig(
                "researcher", PermissionMode.READ_ONLY, denied_tools=["shell"]
            )
        }
    )
    options: dict[str, Any] = {
        "role": "researcher",
        "phase": "draft",
        "permissions": PermissionEnforcer(policy),
        "circuit_breaker": CircuitBreaker("model-api", failure_threshold=3),
        "tracer_provider": handle.tracer_provider,
        "meter_provider": handle.meter_provider,
    }
    options.update(overrides)
    return Orchestrator(**options)


def _run_session(orch: Orchestrator) -> None:
    with orch.session() as session:
        session.run_turn(lambda: "draft", model="model-a", usage=UsageSnapshot(1000, 200))
        session.run_turn(lambda: "final", model="model-a", usage=UsageSnapshot(2000, 100))
        assert session.run_tool("search", lambda: "3 hits") == "3 hits"
        with pytest.raises(PermissionDeniedError):
            session.run_tool("shell", lambda: "never runs")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_real_session_arrives_as_spans_and_metrics(protocol: str) -> None:
    with receiver_for(protocol) as receiver:
        handle = configure(
            endpoint=receiver.endpoint,
            protocol=protocol,
            service_name="session-export",
            set_global=False,
        )
        try:
            _run_session(_orchestrator(handle))
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(
                lambda r: len(r.spans()) >= 5 and sc.METRIC_COST in r.metrics_by_name()
            )
        finally:
            handle.shutdown(timeout_s=3)

    spans = [span for _, span in receiver.received.spans()]
    assert sorted(span.name for span in spans) == [
        "chat model-a",
        "chat model-a",
        "execute_tool search",
        "execute_tool shell",
        "invoke_agent researcher",
    ]
    [session] = [s for s in spans if s.name == "invoke_agent researcher"]
    resource = next(res for res, s in receiver.received.spans() if s is not None)
    assert resource["service.name"] == "session-export"
    assert session.kind == PbSpan.SPAN_KIND_INTERNAL
    for child in spans:
        if child is not session:
            assert child.parent_span_id == session.span_id
            assert child.trace_id == session.trace_id

    turns = [attributes(s.attributes) for s in spans if s.name == "chat model-a"]
    assert all(s.kind == PbSpan.SPAN_KIND_CLIENT for s in spans if s.name == "chat model-a")
    # 1000 in at $3/M + 200 out at $15/M, then 2000 in + 100 out.
    assert sorted(t[sc.COST_USD] for t in turns) == pytest.approx([0.006, 0.0075])
    assert sorted(t[sc.GEN_AI_USAGE_INPUT_TOKENS] for t in turns) == [1000, 2000]
    assert sorted(t[sc.GEN_AI_USAGE_OUTPUT_TOKENS] for t in turns) == [100, 200]
    assert {t[sc.GEN_AI_REQUEST_MODEL] for t in turns} == {"model-a"}
    assert {(t[sc.BREAKER_NAME], t[sc.BREAKER_STATE]) for t in turns} == {("model-api", "closed")}

    tools = {s.name: s for s in spans if s.name.startswith("execute_tool")}
    assert attributes(tools["execute_tool search"].attributes)[sc.PERMISSION_DECISION] == "allow"
    denied = attributes(tools["execute_tool shell"].attributes)
    assert denied[sc.PERMISSION_DECISION] == "deny"
    assert (
        tools["execute_tool shell"].status.code
        == tools["execute_tool shell"].status.STATUS_CODE_ERROR
    )

    rollup = attributes(session.attributes)
    assert rollup[sc.GEN_AI_AGENT_NAME] == "researcher"
    assert rollup[sc.SESSION_TURNS] == 2
    assert rollup[sc.COST_USD] == pytest.approx(0.0135)
    assert rollup[sc.SESSION_OUTCOME] == sc.OUTCOME_COMPLETED

    metrics = receiver.received.metrics_by_name()
    _, cost = metrics[sc.METRIC_COST]
    assert cost.unit == "USD"
    assert sum(p.as_double for p in cost.sum.data_points) == pytest.approx(0.0135)
    _, tokens = metrics[sc.METRIC_TOKEN_USAGE]
    assert tokens.unit == "{token}"
    by_type: dict[str, float] = {}
    for point in tokens.histogram.data_points:
        kind = attributes(point.attributes)[sc.GEN_AI_TOKEN_TYPE]
        by_type[kind] = by_type.get(kind, 0) + point.sum
    assert by_type == {"input": 3000, "output": 300}
    _, duration = metrics[sc.METRIC_OPERATION_DURATION]
    assert duration.unit == "s"
    assert sum(p.count for p in duration.histogram.data_points) == 2
    _, tool_calls = metrics[sc.METRIC_TOOL_CALLS]
    decisions = {
        attributes(p.attributes)[sc.PERMISSION_DECISION]: p.as_int
        for p in tool_calls.sum.data_points
    }
    assert decisions == {"allow": 1, "deny": 1}


def test_embedded_default_report_and_file_agree(tmp_path: Any) -> None:
    spans_path = tmp_path / "spans.jsonl"
    handle = configure(set_global=False, spans_file=spans_path, report=True)
    try:
        orch = _orchestrator(handle, budget_usd=0.005, enforce_budget=True)
        with pytest.raises(BudgetExceededError), orch.session() as session:
            session.run_turn(lambda: "x", model="model-a", usage=UsageSnapshot(1000, 200))
        live = handle.report()
    finally:
        handle.shutdown(timeout_s=3)

    from techrevati.runtime.__main__ import main as cli

    assert "Limit hits\n  limit   session role  hits\n  budget  researcher       1" in live
    assert live.startswith(
        "techrevati-runtime telemetry report: 1 session, 1 model call, 0 tool calls, "
        "total cost $0.006000"
    )
    assert spans_path.exists()
    replayed = handle.report()  # after shutdown: same in-memory spans, same text
    assert replayed == live
    assert cli(["report", str(spans_path)]) == 0


@pytest.mark.parametrize(
    ("how", "expect_secret"),
    [("default", False), ("argument", True), ("environment", True), ("argument-off", False)],
)
def test_message_content_reaches_the_collector_only_when_asked(
    how: str, expect_secret: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture: bool | None = None
    if how == "argument":
        capture = True
    elif how == "environment":
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    elif how == "argument-off":
        # The explicit argument wins over the variable.
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        capture = False
    with HttpReceiver() as receiver:
        handle = configure(
            endpoint=receiver.endpoint, set_global=False, metrics=False, capture_content=capture
        )
        try:
            orch = _orchestrator(handle)
            prompt = f"Summarise the incident. Use the key {SECRET}."
            with orch.session() as session:
                # The model echoes the prompt; the tool returns it: both are content.
                session.run_turn(lambda: f"You said: {prompt}", model="model-a")
                session.run_tool("search", lambda: prompt)
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(lambda r: len(r.spans()) >= 3)
        finally:
            handle.shutdown(timeout_s=3)

    wire = b"".join(receiver.received.bodies)
    assert (SECRET.encode() in wire) is expect_secret
    spans = {span.name: attributes(span.attributes) for _, span in receiver.received.spans()}
    if expect_secret:
        assert SECRET in spans["chat model-a"][sc.GEN_AI_OUTPUT_MESSAGES]
        assert SECRET in spans["execute_tool search"][sc.GEN_AI_TOOL_CALL_RESULT]
    else:
        assert sc.GEN_AI_OUTPUT_MESSAGES not in spans["chat model-a"]
        assert sc.GEN_AI_TOOL_CALL_RESULT not in spans["execute_tool search"]


@pytest.mark.parametrize(
    ("how", "expect_secret"), [("default", False), ("argument", True), ("environment", True)]
)
def test_a_prompt_passed_to_a_decorated_turn_is_content_too(
    how: str, expect_secret: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from techrevati.runtime.decorators import agent_session, agent_turn

    if how == "environment":
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")

    @agent_turn("model-a", usage=UsageSnapshot(10, 2))
    def ask(prompt: str) -> str:
        return "ok"  # the answer carries no secret: only the prompt does

    with HttpReceiver() as receiver:
        handle = configure(
            endpoint=receiver.endpoint,
            set_global=False,
            metrics=False,
            capture_content=True if how == "argument" else None,
        )
        try:
            with agent_session("researcher", tracer_provider=handle.tracer_provider):
                assert ask(f"Log in with {SECRET} and summarise") == "ok"
            assert handle.force_flush(timeout_s=5)
            receiver.received.wait_for(lambda r: len(r.spans()) >= 2)
        finally:
            handle.shutdown(timeout_s=3)

    assert (SECRET.encode() in b"".join(receiver.received.bodies)) is expect_secret
    [turn] = [
        attributes(s.attributes) for _, s in receiver.received.spans() if s.name == "chat model-a"
    ]
    assert (SECRET in str(turn.get(sc.GEN_AI_INPUT_MESSAGES, ""))) is expect_secret
