"""Workloads on this package: sessions, turns and tools, as a user would write them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from techrevati.runtime import (
    ModelPricing,
    Orchestrator,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    register_pricing,
)

from .otelkit import INPUT_PER_MILLION, INPUT_TOKENS, MODEL, OUTPUT_PER_MILLION, OUTPUT_TOKENS

USAGE = UsageSnapshot(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
TURN_COST = INPUT_TOKENS * INPUT_PER_MILLION / 1e6 + OUTPUT_TOKENS * OUTPUT_PER_MILLION / 1e6
BIG = 10**9  # iteration cap no benchmark reaches
BUDGET = 1e9  # enforced, never crossed


def setup_pricing() -> None:
    register_pricing(MODEL, ModelPricing(INPUT_PER_MILLION, OUTPUT_PER_MILLION))


def permissions() -> PermissionEnforcer:
    """The writer may use read-only tools; ``lookup`` is one (a real check runs)."""
    return PermissionEnforcer(
        PermissionPolicy(
            role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
            tool_requirements={"lookup": PermissionMode.READ_ONLY},
        )
    )


def orchestrator(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    **kwargs: Any,
) -> Orchestrator:
    """Budget enforced, iteration cap on, our processors: the configuration the targets name."""
    options: dict[str, Any] = {
        "role": "writer",
        "phase": "draft",
        "budget_usd": BUDGET,
        "enforce_budget": True,
        "max_iterations": BIG,
        "permissions": permissions(),
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
        "provider_name": "bench",
    }
    options.update(kwargs)
    return Orchestrator(**options)


def model_call() -> str:
    return "ok"


def tool_call() -> str:
    return "fact"


def session_turns(orch: Orchestrator, warm: int, timed: int) -> Callable[[], float]:
    """A sample: a fresh session, ``warm`` turns untimed, then ``timed`` turns timed."""
    import time

    def sample() -> float:
        with orch.session() as session:
            run_turn = session.run_turn
            for _ in range(warm):
                run_turn(model_call, MODEL, USAGE)
            start = time.perf_counter()
            for _ in range(timed):
                run_turn(model_call, MODEL, USAGE)
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample


def nth_turns(orch: Orchestrator, warm: int, sessions: int) -> Callable[[], float]:
    """A sample: turn ``warm + 1`` (at depth ``warm``) of each of ``sessions`` fresh sessions."""
    import time

    def sample() -> float:
        perf = time.perf_counter
        total = 0.0
        for _ in range(sessions):
            with orch.session() as session:
                run_turn = session.run_turn
                for _ in range(warm):
                    run_turn(model_call, MODEL, USAGE)
                start = perf()
                run_turn(model_call, MODEL, USAGE)
                total += perf() - start
        return total / sessions

    return sample


def session_tools(orch: Orchestrator, timed: int) -> Callable[[], float]:
    """A sample: ``timed`` permission-checked tool calls in one session."""
    import time

    def sample() -> float:
        with orch.session() as session:
            run_tool = session.run_tool
            start = time.perf_counter()
            for _ in range(timed):
                run_tool("lookup", tool_call)
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample
