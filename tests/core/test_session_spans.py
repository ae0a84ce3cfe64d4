"""Sessions, turns and tools as spans: names, kinds, nesting, attributes, roll-ups."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from otel_harness import Otel
from techrevati.runtime import (
    CircuitBreaker,
    GuardrailOutcome,
    GuardrailViolatedError,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    QualityGate,
    QualityLevel,
    RolePermissionConfig,
    UsageSnapshot,
)

pytestmark = pytest.mark.usefixtures("priced")


def _perms() -> PermissionEnforcer:
    return PermissionEnforcer(
        PermissionPolicy(
            role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )


def test_session_turn_and_tool_spans(otel: Otel) -> None:
    breaker = CircuitBreaker("model-api", failure_threshold=3)
    orch = Orchestrator(
        role="writer",
        phase="draft",
        project_id=42,
        circuit_breaker=breaker,
        permissions=_perms(),
        budget_usd=1.0,
        max_iterations=5,
        provider_name="openai",
        **otel.orch_kwargs(),
    )
    with orch.session() as session:
        session.run_turn(
            lambda: "a",
            model="model-a",
            usage=UsageSnapshot(input_tokens=1000, output_tokens=100, cache_read_tokens=4000),
        )
        session.run_turn(lambda: "b", model="model-b", usage=UsageSnapshot(2000, 500))
        assert session.run_tool("lookup", lambda: 7) == 7

    root = otel.span("invoke_agent writer")
    chat_a = otel.span("chat model-a")
    chat_b = otel.span("chat model-b")
    tool = otel.span("execute_tool lookup")
    assert root.kind == SpanKind.INTERNAL and root.parent is None
    assert chat_a.kind == SpanKind.CLIENT
    for child in (chat_a, chat_b, tool):
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id

    a = dict(chat_a.attributes or {})
    # semconv input_tokens includes cached tokens; cost prices them at the cache-read rate
    assert a["gen_ai.usage.input_tokens"] == 5000
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert a["gen_ai.usage.output_tokens"] == 100
    expected_a = (1000 * 3.0 + 100 * 15.0 + 4000 * 0.3) / 1e6
    assert a["techrevati.cost.usd"] == pytest.approx(expected_a, rel=1e-12)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "model-a"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["techrevati.breaker.name"] == "model-api"
    assert a["techrevati.breaker.state"] == "closed"
    assert a["techrevati.session.iteration"] == 1
    assert dict(chat_b.attributes or {})["techrevati.session.iteration"] == 2

    r = dict(root.attributes or {})
    assert r["gen_ai.operation.name"] == "invoke_agent"
    assert r["gen_ai.agent.name"] == "writer"
    assert r["gen_ai.agent.id"] == session.worker.worker_id
    assert r["techrevati.project.id"] == 42
    assert r["techrevati.phase"] == "draft"
    assert r["techrevati.session.turns"] == 2
    assert r["techrevati.session.outcome"] == "completed"
    # roll-up agrees with the tracker to the last digit
    assert r["techrevati.cost.usd"] == session.tracker.total_cost()
    assert r["techrevati.cost.usd"] == pytest.approx(expected_a + (2000 * 1.0 + 500 * 2.0) / 1e6)
    assert r["gen_ai.usage.input_tokens"] == 5000 + 2000
    assert r["gen_ai.usage.output_tokens"] == 600
    # Unset, not Ok: instrumentation leaves Ok to the application (trace API spec).
    assert root.status.status_code == StatusCode.UNSET

    t = dict(tool.attributes or {})
    assert t["gen_ai.tool.name"] == "lookup"
    assert t["techrevati.permission.decision"] == "allow"
    assert t["techrevati.permission.required_mode"] == "READ_ONLY"
    assert t["techrevati.permission.granted_mode"] == "READ_ONLY"


def test_denied_tool_span_is_error_and_body_never_runs(otel: Otel) -> None:
    orch = Orchestrator(role="writer", phase="draft", permissions=_perms(), **otel.orch_kwargs())
    ran: list[int] = []
    with orch.session() as session, pytest.raises(PermissionDeniedError):
        session.run_tool("write_db", lambda: ran.append(1))
    assert ran == []
    span = otel.span("execute_tool write_db")
    attrs = dict(span.attributes or {})
    assert span.status.status_code == StatusCode.ERROR
    assert attrs["techrevati.permission.decision"] == "deny"
    assert attrs["techrevati.permission.required_mode"] == "FULL_ACCESS"
    assert attrs["techrevati.permission.granted_mode"] == "READ_ONLY"
    assert "FULL_ACCESS" in attrs["techrevati.permission.reason"]
    assert attrs["error.type"] == "PermissionDeniedError"
    assert otel.metric_sum("techrevati.tool.calls", techrevati__permission__decision="deny") == 1


@dataclass
class _NoSecrets:
    name: str = "no_secrets"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed=True)

    def check_post(self, value: object, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed="secret" not in str(value), reason="leaks a secret")


def test_guardrail_outcomes_on_tool_spans(otel: Otel) -> None:
    orch = Orchestrator(
        role="writer", phase="draft", guardrails=[_NoSecrets()], **otel.orch_kwargs()
    )
    with orch.session() as session:
        assert session.run_tool("fine", lambda: "ok") == "ok"
        with pytest.raises(GuardrailViolatedError):
            session.run_tool("leaky", lambda: "the secret")
    fine = dict(otel.span("execute_tool fine").attributes or {})
    leaky = otel.span("execute_tool leaky")
    assert fine["techrevati.guardrail.outcome"] == "passed"
    la = dict(leaky.attributes or {})
    assert la["techrevati.guardrail.outcome"] == "blocked"
    assert la["techrevati.guardrail.name"] == "no_secrets"
    assert la["techrevati.guardrail.stage"] == "post"
    assert (
        otel.metric_sum("techrevati.guardrail.violations", techrevati__guardrail__stage="post") == 1
    )
    root = otel.span("invoke_agent writer")
    assert [e.name for e in root.events] == ["techrevati.guardrail.violated"]


def test_failed_session_span_status_and_outcome(otel: Otel) -> None:
    orch = Orchestrator(role="writer", phase="draft", **otel.orch_kwargs())
    with pytest.raises(RuntimeError), orch.session() as session:
        session.run_turn(lambda: (_ for _ in ()).throw(RuntimeError("boom")), model="model-a")
    root = otel.span("invoke_agent writer")
    turn = otel.span("chat model-a")
    assert root.status.status_code == StatusCode.ERROR
    assert dict(root.attributes or {})["techrevati.session.outcome"] == "failed"
    assert dict(root.attributes or {})["error.type"] == "llm_error"
    assert turn.status.status_code == StatusCode.ERROR
    assert dict(turn.attributes or {})["error.type"] == "RuntimeError"
    assert [e.name for e in root.events] == ["techrevati.recovery.attempted"]
    assert [e.event.value for e in session.events] == ["agent.recovery.attempted", "agent.failed"]
    assert otel.metric_sum("techrevati.sessions", techrevati__session__outcome="failed") == 1


def test_cancelled_async_session(otel: Otel) -> None:
    orch = Orchestrator(role="writer", phase="draft", **otel.orch_kwargs())

    async def main() -> None:
        async with orch.asession() as session:
            await session.arun_turn(lambda: asyncio.sleep(10), model="model-a")

    async def runner() -> None:
        task = asyncio.create_task(main())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    root = otel.span("invoke_agent writer")
    assert dict(root.attributes or {})["techrevati.session.outcome"] == "cancelled"
    assert otel.metric_sum("techrevati.sessions", techrevati__session__outcome="cancelled") == 1


def test_handoff_links_target_session_to_source(otel: Otel) -> None:
    writer = Orchestrator(role="writer", phase="draft", project_id=7, **otel.orch_kwargs())
    with writer.session() as ws:
        ws.handoff_to("editor", reason="needs review")
    editor = Orchestrator(
        role="editor", phase="draft", project_id=7, registry=writer.registry, **otel.orch_kwargs()
    )
    with editor.session():
        pass
    source = otel.span("invoke_agent writer")
    target = otel.span("invoke_agent editor")
    assert [e.name for e in source.events] == ["techrevati.handoff"]
    assert dict(source.events[0].attributes or {})["techrevati.handoff.target_role"] == "editor"
    assert [link.context.span_id for link in target.links] == [source.context.span_id]
    assert target.context.trace_id == source.context.trace_id


def test_gate_and_policy_are_span_events(otel: Otel) -> None:
    orch = Orchestrator(
        role="writer",
        phase="draft",
        quality_gate=QualityGate(QualityLevel.STRICT),
        **otel.orch_kwargs(),
    )
    with orch.session() as session:
        outcome = session.evaluate_gate(QualityLevel.STANDARD)
    assert outcome is not None and not outcome.satisfied
    root = otel.span("invoke_agent writer")
    (event,) = root.events
    assert event.name == "techrevati.quality_gate.evaluated"
    assert dict(event.attributes or {}) == {
        "techrevati.quality_gate.satisfied": False,
        "techrevati.quality_gate.required": "STRICT",
        "techrevati.quality_gate.observed": "STANDARD",
    }


def test_conversation_ids_are_unique_128_bit_values(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", **otel.kwargs())
    for _ in range(500):
        with orch.session():
            pass
    ids = [dict(s.attributes or {})["gen_ai.conversation.id"] for s in otel.spans("invoke_agent w")]
    assert len(ids) == len(set(ids)) == 500
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_what_nothing_read_is_left_unset_not_written_as_zero(otel: Otel) -> None:
    # A turn that names no model and whose result carries no usage: the span wrote
    # gen_ai.request.model "" and 0 input / 0 output tokens, as if they were known.
    from techrevati.runtime import agent_session, agent_turn

    @agent_turn()
    def ask() -> str:
        return "plain text, no model, no usage"

    with agent_session("writer", **otel.orch_kwargs()):
        ask()
    chat = dict(otel.span("chat").attributes or {})
    assert "gen_ai.request.model" not in chat
    assert "gen_ai.usage.input_tokens" not in chat
    assert "gen_ai.usage.output_tokens" not in chat
    assert chat["techrevati.usage.missing"] is True
    assert chat["gen_ai.operation.name"] == "chat"
    for _, point in otel.metric_points("gen_ai.client.operation.duration"):
        assert "gen_ai.request.model" not in dict(point.attributes or {})
