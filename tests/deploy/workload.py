"""A real workload of Orchestrator sessions for the dashboard test.

Everything a dashboard charts happens at least once per run: turns on three
models from three providers, cached tokens, allowed, denied, guardrail-blocked
and failing tools, a circuit breaker that opens, an enforced budget that stops a
session, an iteration cap that stops another, a tool loop refused before it
runs, recovery after failed turns, an
async session, a response with reasoning tokens read from a real OpenAI SDK
object, a call whose response has no usage, calls of a model with no price (one
booked at $0, one refused under an enforced budget). The expected numbers are
collected from what the sessions themselves report (trackers, caught exceptions,
events), never typed in by hand, so the test compares the dashboards with the
package's own ledger.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat import ChatCompletion
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from techrevati.runtime import (
    BudgetExceededError,
    CircuitBreaker,
    CircuitOpenError,
    GuardrailOutcome,
    GuardrailViolatedError,
    LoopDetectedError,
    LoopGuard,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UnpricedModelError,
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
#: A model with no price anywhere (not registered, not in the bundled table).
UNPRICED_MODEL = "delta-unpriced"


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
    models: set[str] = field(default_factory=set)
    input_tokens: int = 0  # cached input included, as gen_ai.client.token.usage counts it
    output_tokens: int = 0  # reasoning included
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    calls_without_usage: int = 0
    unpriced_calls: int = 0
    utilization: list[float] = field(default_factory=list)  # spent / budget, per session
    loops: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (pattern, tool, role)

    def session_done(self, session: Any, outcome: str, budget: float | None = None) -> None:
        tracker = session.tracker
        if budget is not None:
            self.utilization.append(tracker.total_cost() / budget)
        self.sessions[outcome] += 1
        self.sessions_by_role[(session.role, outcome)] += 1
        self.cost_usd += tracker.total_cost()
        self.cost_by_role[session.role] += tracker.total_cost()
        for model, cost in tracker.per_model_summary().items():
            self.cost_by_model[model] += cost
        for model, usage in tracker.turns:
            self.models.add(model)
            inputs = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            self.tokens += inputs + usage.output_tokens
            self.input_tokens += inputs
            self.output_tokens += usage.output_tokens
            self.cache_read_tokens += usage.cache_read_tokens
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
    expected.session_done(s, "failed", budgeted.budget_usd)

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

    # 7. An analyst: a real OpenAI SDK response with reasoning tokens (usage read from it),
    #    a call whose response carries no usage, and a model with no price (booked at $0).
    analyst = Orchestrator(
        role="analyst", phase="analyse", provider_name=PROVIDERS["alpha-large"], **common
    )
    response = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-workload",
            "object": "chat.completion",
            "created": 0,
            "model": "alpha-large",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": {
                "prompt_tokens": 900,
                "completion_tokens": 700,
                "total_tokens": 1600,
                "completion_tokens_details": {"reasoning_tokens": 450},
            },
        }
    )
    with analyst.session() as s:
        s.run_turn(lambda: response, model="alpha-large")
        assert response.usage is not None and response.usage.completion_tokens_details
        expected.reasoning_tokens += response.usage.completion_tokens_details.reasoning_tokens or 0
        s.run_turn(_turn("no usage in this response"), model="alpha-large")
        expected.calls_without_usage += 1
        s.run_turn(_turn(), model=UNPRICED_MODEL, usage=UsageSnapshot(300, 80))
        expected.unpriced_calls += 1
        expected.model_calls += 3
    expected.session_done(s, "completed")

    # 8. The same unpriced model under an enforced budget is refused before it runs.
    strict = Orchestrator(
        role="analyst",
        phase="analyse",
        budget_usd=1.0,
        enforce_budget=True,
        provider_name=PROVIDERS["alpha-large"],
        **common,
    )
    try:
        with strict.session() as s:
            s.run_turn(_turn(), model=UNPRICED_MODEL, usage=UsageSnapshot(300, 80))
    except UnpricedModelError:
        expected.limit_hits["unpriced"] += 1
    expected.session_done(s, "failed", strict.budget_usd)

    # 9. A browser stuck in a loop: three identical searches with the same result are a
    #    loop; under LoopGuard(on_loop="raise") the fourth is refused before it runs.
    browser = Orchestrator(
        role="browser", phase="research", loop_guard=LoopGuard(on_loop="raise"), **common
    )
    with browser.session() as s:
        for _ in range(3):
            tool(s, "search", lambda: "no hits")
        try:
            s.run_tool("search", lambda: "no hits")
        except LoopDetectedError as refused:
            expected.tool_calls["allow"] += 1  # allowed by policy, refused as a loop
            expected.tool_errors += 1
            expected.limit_hits["loop"] += 1
            expected.loops[(refused.pattern, refused.tool, s.role)] += 1
    expected.session_done(s, "completed")
