"""A real workload of Orchestrator sessions for the dashboard test.

Everything a dashboard charts happens at least once per run: turns on three
models from three providers, cached tokens, allowed, denied, guardrail-blocked
and failing tools, a circuit breaker that opens, an enforced budget that stops a
session, an iteration cap that stops another, recovery after failed turns and an
async session. The expected numbers are collected from what the sessions
themselves report (trackers, caught exceptions, events), never typed in by hand,
so the test compares the dashboards with the package's own ledger.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from techrevati.runtime import (
    BudgetExceededError,
    CircuitBreaker,
    CircuitOpenError,
    GuardrailOutcome,
    GuardrailViolatedError,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    register_pricing,
)

PRICES = {
    "alpha-large": ModelPricing(3.0, 15.0),
    "beta-small": ModelPricing(0.8, 4.0, cache_write_per_million=1.0, cache_read_per_million=0.08),
    "gamma-mini": ModelPricing(0.15, 0.6),
}
PROVIDERS = {"alpha-large": "openai", "beta-small": "anthropic", "gamma-mini": "google"}
BREAKER_NAME = "model-api"


@dataclass
class Expected:
    """What the dashboards must show after the workload ran (summed over runs)."""

    sessions: Counter[str] = field(default_factory=Counter)  # by outcome
    cost_usd: float = 0.0
    cost_by_model: Counter[str] = field(default_factory=Counter)
    cost_by_role: Counter[str] = field(default_factory=Counter)
    sessions_by_role: Counter[tuple[str, str]] = field(default_factory=Counter)
    tokens: int = 0
    model_calls: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)  # by decision
    tool_errors: int = 0
    denials: Counter[tuple[str, str]] = field(default_factory=Counter)  # (role, tool)
    limit_hits: Counter[str] = field(default_factory=Counter)  # by kind
    guardrail_violations: int = 0
    recovery_attempts: int = 0
    roles: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)

    def session_done(self, session: Any, outcome: str) -> None:
        tracker = session.tracker
        self.sessions[outcome] += 1
        self.sessions_by_role[(session.role, outcome)] += 1
        self.cost_usd += tracker.total_cost()
        self.cost_by_role[session.role] += tracker.total_cost()
        for model, cost in tracker.per_model_summary().items():
            self.cost_by_model[model] += cost
        for _, usage in tracker.turns:
            self.tokens += (
                usage.input_tokens
                + usage.cache_read_tokens
                + usage.cache_write_tokens
                + usage.output_tokens
            )
        self.recovery_attempts += sum(
            1 for e in session.events if e.event.value == "agent.recovery.attempted"
        )
        self.roles.add(session.role)


class BlockShell:
    """Refuses the 'shell' tool before it runs."""

    name = "no-shell"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        if tool == "shell":
            return GuardrailOutcome(allowed=False, reason="shell access is not allowed")
        return GuardrailOutcome(allowed=True)

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed=True)


def install_prices() -> None:
    for model, pricing in PRICES.items():
        register_pricing(model, pricing)


def _permissions() -> PermissionEnforcer:
    return PermissionEnforcer(
        PermissionPolicy(
            role_configs={
                "writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY),
                "summarizer": RolePermissionConfig("summarizer", PermissionMode.READ_ONLY),
            },
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )


def _turn(text: str = "ok") -> Any:
    return lambda: text


def _fail() -> Any:
    raise RuntimeError("model backend returned 500")


def run_once(
    meter_provider: MeterProvider, tracer_provider: TracerProvider, expected: Expected
) -> None:
    """One pass of the workload; adds what it caused to ``expected``."""
    common: dict[str, Any] = {"meter_provider": meter_provider, "tracer_provider": tracer_provider}

    def tool(session: Any, name: str, fn: Any) -> None:
        expected.tools.add(name)
        try:
            session.run_tool(name, fn)
            expected.tool_calls["allow"] += 1
        except PermissionDeniedError:
            expected.tool_calls["deny"] += 1
            expected.denials[(session.role, name)] += 1
            expected.tool_errors += 1
        except GuardrailViolatedError:
            expected.tool_calls["allow"] += 1  # the policy allowed it; the guardrail blocked it
            expected.guardrail_violations += 1
            expected.tool_errors += 1
        except ValueError:
            expected.tool_calls["allow"] += 1
            expected.tool_errors += 1

    def bad_tool() -> str:
        raise ValueError("index unavailable")

    # 1. A writer on the large model: three turns, allowed, denied, blocked and failing tools.
    writer = Orchestrator(
        role="writer",
        phase="draft",
        project_id=7,
        permissions=_permissions(),
        guardrails=[BlockShell()],
        provider_name=PROVIDERS["alpha-large"],
        **common,
    )
    with writer.session() as s:
        for i in range(3):
            s.run_turn(_turn(), model="alpha-large", usage=UsageSnapshot(1200 + i, 300 + i))
            expected.model_calls += 1
        tool(s, "lookup", lambda: "RAG")
        tool(s, "lookup", lambda: "LLM")
        tool(s, "write_db", lambda: "never runs")
        tool(s, "shell", lambda: "never runs")
        tool(s, "search_index", bad_tool)
    expected.session_done(s, "completed")

    # 2. An editor on the small model with cached input (read and write).
    editor = Orchestrator(
        role="editor", phase="draft", provider_name=PROVIDERS["beta-small"], **common
    )
    with editor.session() as s:
        for _ in range(2):
            usage = UsageSnapshot(800, 200, cache_write_tokens=100, cache_read_tokens=400)
            s.run_turn(_turn(), model="beta-small", usage=usage)
            expected.model_calls += 1
    expected.session_done(s, "completed")

    # 3. An enforced budget: the first turn costs $0.03 against a $0.01 budget.
    budgeted = Orchestrator(
        role="researcher",
        phase="research",
        budget_usd=0.01,
        enforce_budget=True,
        provider_name=PROVIDERS["alpha-large"],
        **common,
    )
    try:
        with budgeted.session() as s:
            expected.model_calls += 1
            s.run_turn(_turn(), model="alpha-large", usage=UsageSnapshot(5000, 1000))
    except BudgetExceededError:
        expected.limit_hits["budget"] += 1
    expected.session_done(s, "failed")

    # 4. An iteration cap of 2: the third turn is refused before it starts.
    capped = Orchestrator(
        role="planner",
        phase="plan",
        max_iterations=2,
        provider_name=PROVIDERS["gamma-mini"],
        **common,
    )
    try:
        with capped.session() as s:
            for _ in range(3):
                s.run_turn(_turn(), model="gamma-mini", usage=UsageSnapshot(400, 100))
                expected.model_calls += 1
    except MaxIterationsExceededError:
        expected.limit_hits["max_iterations"] += 1
    expected.session_done(s, "failed")

    # 5. A breaker that opens after two failed turns; the third is rejected by it.
    caller = Orchestrator(
        role="caller",
        phase="call",
        circuit_breaker=CircuitBreaker(
            BREAKER_NAME, failure_threshold=2, recovery_timeout_seconds=600.0
        ),
        provider_name=PROVIDERS["gamma-mini"],
        **common,
    )
    try:
        with caller.session() as s:
            for _ in range(2):
                try:
                    expected.model_calls += 1
                    s.run_turn(_fail, model="gamma-mini")
                except RuntimeError:
                    pass
            expected.model_calls += 1
            s.run_turn(_turn(), model="gamma-mini", usage=UsageSnapshot(10, 10))
    except CircuitOpenError:
        pass
    expected.session_done(s, "failed")

    # 6. An async session: one turn and one allowed tool.
    summarizer = Orchestrator(
        role="summarizer",
        phase="summarize",
        permissions=_permissions(),
        provider_name=PROVIDERS["beta-small"],
        **common,
    )

    async def summarize() -> Any:
        async with summarizer.asession() as s:

            async def call() -> str:
                return "summary"

            async def fetch() -> str:
                return "notes"

            await s.arun_turn(call, model="beta-small", usage=UsageSnapshot(600, 150))
            expected.model_calls += 1
            await s.arun_tool("fetch_notes", fetch)
            expected.tool_calls["allow"] += 1
            expected.tools.add("fetch_notes")
        return s

    expected.session_done(asyncio.run(summarize()), "completed")
