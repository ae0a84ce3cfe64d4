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

from . import samples
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
    return samples.session_turns(orch, (model_call, MODEL, USAGE), warm, timed)


def nth_turns(orch: Orchestrator, warm: int, sessions: int) -> Callable[[], float]:
    return samples.nth_turns(orch, (model_call, MODEL, USAGE), warm, sessions)


def session_tools(orch: Orchestrator, timed: int) -> Callable[[], float]:
    return samples.session_tools(orch, tool_call, timed)
