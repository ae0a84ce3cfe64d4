"""Refusals by the runtime itself inside a turn are not failures of the provider.

A turn whose body calls a tool its role may not use, or makes a nested call over
the cap or the budget, fails with our refusal. Counting that against the breaker
every session of the provider shares would let one agent's forbidden tool calls
cut every session off the provider; recording it as a recovery scenario would
send a retry policy after a model error that never happened.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from techrevati.runtime import (
    BudgetExceededError,
    CircuitBreaker,
    MaxIterationsExceededError,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    register_pricing,
)
from techrevati.runtime.circuit_breaker import CircuitState
from techrevati.runtime.pricing import ModelPricing


def _denied(orch_kwargs: dict[str, object]) -> Orchestrator:
    policy = PermissionPolicy(
        role_configs={"reader": RolePermissionConfig("reader", PermissionMode.READ_ONLY)},
        tool_requirements={"rm": PermissionMode.FULL_ACCESS},
    )
    return Orchestrator(role="reader", permissions=PermissionEnforcer(policy), **orch_kwargs)


@pytest.mark.parametrize("refusal", ["permission", "nested cap", "nested budget"])
def test_a_refusal_inside_a_turn_leaves_the_shared_breaker_closed(refusal: str) -> None:
    register_pricing("refusal-model", ModelPricing(1_000_000.0, 0.0))  # $1 an input token
    breaker = CircuitBreaker("api", failure_threshold=2, recovery_timeout_seconds=1000)
    one = UsageSnapshot(input_tokens=1, output_tokens=0)
    expected: type[Exception]
    if refusal == "permission":
        expected = PermissionDeniedError
    elif refusal == "nested cap":
        expected = MaxIterationsExceededError
    else:
        expected = BudgetExceededError
    # Two sessions, one refused turn each: enough failures to open a threshold-2 breaker.
    for _ in range(2):
        if refusal == "permission":
            orch = _denied({"circuit_breaker": breaker})
        elif refusal == "nested cap":
            orch = Orchestrator(role="w", max_iterations=1, circuit_breaker=breaker)
        else:
            orch = Orchestrator(
                role="w", budget_usd=0.5, enforce_budget=True, circuit_breaker=breaker
            )
        with orch.session() as session:

            def body() -> object:
                if refusal == "permission":
                    return session.run_tool("rm", lambda: "deleted")
                # A nested call: the outer turn is call 1 and holds $1, so it is refused.
                return session.run_turn(lambda: "inner", model="refusal-model", usage=one)

            turn: Callable[[], object] = body
            with pytest.raises(expected):
                session.run_turn(turn, model="refusal-model", usage=one)
            assert [e.detail for e in session.events if "recovered" in (e.detail or "")] == []
        assert breaker.state() is CircuitState.CLOSED
    # Another session of the provider still gets through the breaker.
    with Orchestrator(role="other", circuit_breaker=breaker).session() as other:
        assert other.run_turn(lambda: "ok", model="refusal-model", usage=one)[0] == "ok"
