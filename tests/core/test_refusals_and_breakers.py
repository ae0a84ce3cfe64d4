"""Runtime refusals and the caller's own bugs after a call are not failures of the provider.

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


def test_a_failing_estimate_usage_is_the_callers_error_and_the_call_is_still_booked() -> None:
    """The call returned and was billed; the caller's estimate_usage raised after it."""
    register_pricing("refusal-model", ModelPricing(1_000_000.0, 0.0))  # $1 an input token
    breaker = CircuitBreaker("api", failure_threshold=1, recovery_timeout_seconds=1000)
    response = {
        "id": "x",
        "object": "chat.completion",
        "model": "refusal-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2},
    }

    def broken(result: object) -> UsageSnapshot:
        raise KeyError("usage")

    orch = Orchestrator(role="w", budget_usd=10.0, enforce_budget=True, circuit_breaker=breaker)
    with orch.session() as session:
        with pytest.raises(KeyError):
            session.run_turn(lambda: response, model="refusal-model", estimate_usage=broken)
        assert session.tracker.total_cost() == 2.0  # read from the response it returned
        assert breaker.state() is CircuitState.CLOSED  # not the provider's failure
        assert [e.detail for e in session.events if "recovered" in (e.detail or "")] == []
