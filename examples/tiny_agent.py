"""The end-to-end tutorial as one program: a tiny agent in about 30 lines.

pricing → orchestrator → permissions → circuit breaker → turn → gated tool →
budget → handoff → policy and gate → summary. Run it with
``python -m examples.tiny_agent``; ``configure()`` sends the telemetry to a
collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and otherwise writes the
spans to a local file and prints a per-session report.
"""

from __future__ import annotations

import json

from techrevati.runtime import (
    CircuitBreaker,
    ModelPricing,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    PolicyAction,
    PolicyActionData,
    PolicyEngine,
    PolicyRule,
    QualityGate,
    QualityLevel,
    RingBufferEventSink,
    RolePermissionConfig,
    UsageSnapshot,
    configure,
    register_pricing,
)
from techrevati.runtime.policy_engine import And, PhaseCompleted, QualityAt


def call_model() -> str:
    return "draft text"  # replace with your SDK call


def lookup_term() -> str:
    return "RAG"  # any read-only operation works here


def main() -> None:
    telemetry = configure(service_name="tiny-agent")

    # 1. pricing
    register_pricing("your-model", ModelPricing(input_per_million=3.0, output_per_million=15.0))

    # 2. the orchestrator: breaker, permissions, events, budget, cap
    breaker = CircuitBreaker("model-api", failure_threshold=3, recovery_timeout_seconds=30.0)
    permissions = PermissionEnforcer(
        PermissionPolicy(
            role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )
    advance = PolicyRule(
        name="advance-on-quality",
        condition=And([PhaseCompleted(), QualityAt(QualityLevel.STANDARD)]),
        actions=[PolicyActionData(PolicyAction.ADVANCE_PHASE)],
        priority=10,
    )
    orch = Orchestrator(
        role="writer",
        phase="draft",
        project_id=42,
        circuit_breaker=breaker,
        permissions=permissions,
        event_sink=RingBufferEventSink(),
        budget_usd=0.50,
        enforce_budget=True,
        max_iterations=5,
        policy_engine=PolicyEngine([advance]),
        quality_gate=QualityGate(QualityLevel.STANDARD),
    )

    with orch.session() as session:
        # 3. a turn, 4. a gated tool (allowed) and one the writer may not use
        text, _ = session.run_turn(
            call_model,
            model="your-model",
            usage=UsageSnapshot(input_tokens=5_000, output_tokens=1_200),
            timeout=30.0,
        )
        fact = session.run_tool("lookup_term", lookup_term)
        try:
            session.run_tool("write_db", lambda: "never runs")
        except PermissionDeniedError as denied:
            print(f"write_db refused: {denied}")
        # 6. gate and policy
        session.evaluate_gate(QualityLevel.STANDARD)
        actions = session.evaluate_policy(phase_completed=True, quality_level=QualityLevel.STANDARD)
        print(f"turn -> {text!r}, tool -> {fact!r}, policy -> {[a.action.value for a in actions]}")
        # 5. hand off to an editor
        session.handoff_to("editor", reason="needs review", context={"draft": text})
    writer_summary = session.summary()

    editor = Orchestrator(role="editor", phase="draft", project_id=42, registry=orch.registry)
    with editor.session() as editor_session:
        editor_session.run_turn(
            lambda: "polished",
            model="your-model",
            usage=UsageSnapshot(input_tokens=2_000, output_tokens=400),
        )

    # 7. the summary
    # summary()'s total_input_tokens is uncached input only (0.1.0's meaning);
    # the report printed at exit shows "input incl. cached".
    print("session usage (total_input_tokens = uncached input):")
    print(json.dumps(writer_summary["usage"], indent=2))
    print(json.dumps([e["event"] for e in writer_summary["agent_events"]], indent=2))
    print(f"writer cost {orch.tracker.format_cost()}, editor cost {editor.tracker.format_cost()}")
    telemetry.shutdown()


if __name__ == "__main__":
    main()
