"""Every code snippet of the two seed pages, run verbatim.

The snippets are kept as the pages print them; only the glue the pages leave to
the reader (``call_model``, ``acall_model``, ``prompt``) is defined here. Each
page's snippets run in order in one namespace, as a reader would paste them.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from techrevati.runtime import BudgetExceededError, PermissionDeniedError

ORCHESTRATOR_PAGE = [
    """
from techrevati.runtime import (
    Orchestrator, UsageSnapshot, CircuitBreaker,
    register_pricing, ModelPricing,
)

register_pricing("model-a", ModelPricing(input_per_million=3.0, output_per_million=15.0))

orch = Orchestrator(
    role="writer",
    phase="draft",
    project_id=42,
    circuit_breaker=CircuitBreaker("model-api", failure_threshold=5),
    budget_usd=10.0,
    enforce_budget=True,
    max_iterations=25,
)

with orch.session() as session:
    result, usage = session.run_turn(
        lambda: call_model(prompt),
        model="model-a",
        usage=UsageSnapshot(input_tokens=5000, output_tokens=1200),
        timeout=30.0,
    )

print(session.summary())
""",
    """
async with orch.asession() as session:
    text, _ = await session.arun_turn(
        lambda: acall_model(prompt),
        model="model-a",
        timeout=30.0,
    )
""",
]

TUTORIAL_PAGE = [
    """
from techrevati.runtime import ModelPricing, register_pricing

register_pricing(
    "your-model",
    ModelPricing(input_per_million=3.0, output_per_million=15.0),
)
""",
    """
from techrevati.runtime import (
    CircuitBreaker, Orchestrator, PermissionEnforcer, PermissionMode,
    PermissionPolicy, RingBufferEventSink, RolePermissionConfig,
)

breaker = CircuitBreaker("model-api", failure_threshold=3, recovery_timeout_seconds=30.0)

permissions = PermissionEnforcer(PermissionPolicy(
    role_configs={
        "writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY),
    },
    tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
))

events = RingBufferEventSink()

orch = Orchestrator(
    role="writer",
    phase="draft",
    project_id=42,
    circuit_breaker=breaker,
    permissions=permissions,
    event_sink=events,
    budget_usd=0.50,
    enforce_budget=True,
    max_iterations=5,
)
""",
    """
from techrevati.runtime import UsageSnapshot

def call_model() -> str:
    return "draft text"  # replace with your SDK call

with orch.session() as session:
    text, usage = session.run_turn(
        call_model,
        model="your-model",
        usage=UsageSnapshot(input_tokens=5_000, output_tokens=1_200),
        timeout=30.0,
    )
""",
    """
def lookup_term() -> str:
    return "RAG"  # any read-only operation works here

with orch.session() as session:
    fact = session.run_tool("lookup_term", lookup_term)
""",
    """
with orch.session() as writer_session:
    handoff = writer_session.handoff_to(
        "editor", reason="needs review", context={"draft": text},
    )

editor_orch = Orchestrator(role="editor", phase="draft", project_id=42, registry=orch.registry)
with editor_orch.session() as editor_session:
    review_text, _ = editor_session.run_turn(
        lambda: "polished",
        model="your-model",
        usage=UsageSnapshot(input_tokens=2_000, output_tokens=400),
    )
""",
    """
from techrevati.runtime import (
    PolicyAction, PolicyActionData, PolicyEngine, PolicyRule,
    QualityGate, QualityLevel,
)
from techrevati.runtime.policy_engine import And, PhaseCompleted, QualityAt

advance = PolicyRule(
    name="advance-on-quality",
    condition=And([PhaseCompleted(), QualityAt(QualityLevel.STANDARD)]),
    actions=[PolicyActionData(PolicyAction.ADVANCE_PHASE)],
    priority=10,
)
orch_with_policy = Orchestrator(
    role="writer",
    phase="draft",
    policy_engine=PolicyEngine([advance]),
    quality_gate=QualityGate(QualityLevel.STANDARD),
)
""",
    """
import json
print(json.dumps(orch.event_sink.events[-3:], indent=2, default=str))
print(orch.tracker.format_cost())  # e.g. "$0.0156"
""",
]


def _glue() -> dict[str, Any]:
    calls: list[str] = []

    def call_model(p: str) -> str:
        calls.append(p)
        return f"model says: {p}"

    async def acall_model(p: str) -> str:
        await asyncio.sleep(0)
        calls.append(p)
        return f"async model says: {p}"

    return {"call_model": call_model, "acall_model": acall_model, "prompt": "hi", "calls": calls}


def _run(snippet: str, ns: dict[str, Any]) -> None:
    exec(compile(snippet, "<seed>", "exec"), ns)


async def _arun(snippet: str, ns: dict[str, Any]) -> None:
    body = "async def __seed__():\n" + textwrap.indent(snippet, "    ")
    body += "\n    globals().update({k: v for k, v in locals().items()})\n"
    exec(compile(body, "<seed>", "exec"), ns)
    await ns["__seed__"]()


def test_orchestrator_page_sync_and_async(capsys: pytest.CaptureFixture[str]) -> None:
    ns = _glue()
    _run(ORCHESTRATOR_PAGE[0], ns)
    summary = ns["session"].summary()
    assert ns["result"] == "model says: hi"
    assert ns["usage"] == ns["UsageSnapshot"](input_tokens=5000, output_tokens=1200)
    assert summary["worker"]["status"] == "completed"
    assert summary["usage"]["turns"] == 1
    # 5000 * 3 / 1e6 + 1200 * 15 / 1e6 = 0.015 + 0.018
    assert summary["per_model_cost"] == {"model-a": pytest.approx(0.033)}
    json.dumps(summary)
    assert "'status': 'completed'" in capsys.readouterr().out

    asyncio.run(_arun(ORCHESTRATOR_PAGE[1], ns))
    assert ns["text"] == "async model says: hi"
    assert ns["calls"] == ["hi", "hi"]
    # the async session is a fresh one: its tracker saw one unpriced-usage turn
    assert ns["orch"].tracker.summary()["turns"] == 1
    assert ns["orch"].tracker.total_cost() == 0.0


def test_tutorial_page_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    ns = _glue()
    for snippet in TUTORIAL_PAGE[:3]:
        _run(snippet, ns)
    assert ns["text"] == "draft text"
    assert ns["session"].summary()["usage"]["total_cost_usd"] == pytest.approx(0.033)

    _run(TUTORIAL_PAGE[3], ns)
    assert ns["fact"] == "RAG"
    # the page's claim: the writer role may not call write_db, and its body never runs
    ran: list[str] = []
    with ns["orch"].session() as session, pytest.raises(PermissionDeniedError) as denied:
        session.run_tool("write_db", lambda: ran.append("x"))
    assert ran == []
    assert "READ_ONLY" in str(denied.value)

    _run(TUTORIAL_PAGE[4], ns)
    handoff = ns["handoff"]
    assert handoff.target_role == "editor"
    assert handoff.context == {"draft": "draft text"}
    target = ns["orch"].registry.get(handoff.target_worker_id)
    assert target is not None and target.role == "editor" and target.project_id == 42
    assert ns["review_text"] == "polished"
    assert any(w.role == "editor" for w in ns["orch"].registry.get_by_project(42))

    _run(TUTORIAL_PAGE[5], ns)
    with ns["orch_with_policy"].session() as session:
        gate = session.evaluate_gate(ns["QualityLevel"].STANDARD)
        actions = session.evaluate_policy(
            phase_completed=True, quality_level=ns["QualityLevel"].STANDARD
        )
    assert gate is not None and gate.satisfied
    assert [a.action for a in actions] == [ns["PolicyAction"].ADVANCE_PHASE]
    assert [e.event.value for e in session.events] == ["phase.gate_passed", "agent.completed"]

    capsys.readouterr()
    _run(TUTORIAL_PAGE[6], ns)
    out = capsys.readouterr().out
    printed = json.loads(out[: out.rindex("]") + 1])
    assert len(printed) == 3
    # default=str renders each AgentEvent through its repr
    assert "agent.completed" in printed[-1]
    # orch.tracker is the last session's tracker (the denied-tool session: no turns)
    assert out.strip().endswith("$0.0000")


def test_tutorial_budget_claim_enforced() -> None:
    """The page says run_turn raises BudgetExceededError once cost exceeds 50 cents."""
    ns = _glue()
    for snippet in TUTORIAL_PAGE[:2]:
        _run(snippet, ns)
    from techrevati.runtime import UsageSnapshot

    calls = 0

    def call() -> str:
        nonlocal calls
        calls += 1
        return "x"

    with pytest.raises(BudgetExceededError) as err, ns["orch"].session() as session:
        for _ in range(5):
            # 0.033 USD per turn would need 16 turns; 100k input tokens costs 0.30
            session.run_turn(call, model="your-model", usage=UsageSnapshot(100_000, 0))
    assert err.value.budget_usd == 0.5
    assert err.value.current_cost_usd == pytest.approx(0.6)
    assert calls == 2  # the second turn crossed the budget and raised after completing


def test_embedded_snippets_match_seed_pages() -> None:
    """Guard against drift: where the seed pages are present, the snippets are theirs."""
    seeds = Path(__file__).resolve().parents[2] / "shared" / "seeds"
    pages = sorted(seeds.glob("*.txt")) if seeds.is_dir() else []
    if not pages:
        # A user's clone has no shared/ folder beside it; CI and developers do.
        return
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    squashed = " ".join(text.split())
    for snippet in ORCHESTRATOR_PAGE + TUTORIAL_PAGE:
        assert " ".join(snippet.split()) in squashed
