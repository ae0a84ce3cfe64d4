"""Money is exact at the boundary: integer nano-dollars, one rule for every level.

A "$0.10 call" is one input token of ``dime``, priced at $100,000 per million
input tokens; three of them sum to 0.30000000000000004 in floats, exactly the
budget in nano-dollars.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from otel_harness import Otel
from techrevati.runtime import (
    BudgetExceededError,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.pricing import price_call
from techrevati.runtime.telemetry.limits.ledger import Ledger
from techrevati.runtime.telemetry.limits.money import (
    MAX_CALL_NANO,
    MAX_CALL_USD,
    booking_nano,
    to_nano,
)
from techrevati.runtime.usage_tracking import UsageTracker

DIME = UsageSnapshot(1, 0)


@pytest.fixture(autouse=True)
def dime_model() -> Iterator[None]:
    register_pricing("dime", ModelPricing(100_000.0, 0.0))
    yield


def test_three_dimes_under_thirty_cents_run_and_the_fourth_is_refused_before_its_body(
    otel: Otel,
) -> None:
    assert 0.1 + 0.1 + 0.1 > 0.3  # the float drift this rule is about
    bodies: list[int] = []

    @agent_turn(model="dime", usage=DIME)
    def call(i: int) -> str:
        bodies.append(i)
        return "ok"

    with agent_session("w", budget_usd=0.30, enforce_budget=True, **otel.kwargs()) as session:
        for i in range(3):
            assert call(i) == "ok"  # none of the three raises
        with pytest.raises(BudgetExceededError) as refused:
            call(3)
        ledger = session._ledger
        assert ledger.spent_nano == to_nano(0.30) == 300_000_000
        assert ledger.reserved_nano == 0
    assert bodies == [0, 1, 2]  # the fourth never ran
    assert refused.value.current_cost_usd == 0.3


def test_async_turns_follow_the_same_rule(otel: Otel) -> None:
    bodies: list[int] = []

    @agent_turn(model="dime", usage=DIME)
    async def call(i: int) -> str:
        bodies.append(i)
        return "ok"

    async def main() -> None:
        async with agent_session("w", budget_usd=0.30, enforce_budget=True, **otel.kwargs()):
            for i in range(3):
                await call(i)
            with pytest.raises(BudgetExceededError):
                await call(3)

    asyncio.run(main())
    assert bodies == [0, 1, 2]


def test_one_cent_over_still_raises_after_the_call(otel: Otel) -> None:
    @agent_turn(model="dime", usage=UsageSnapshot(4, 0))
    def call() -> str:
        return "ok"

    with (
        agent_session("w", budget_usd=0.39, enforce_budget=True, **otel.kwargs()),
        pytest.raises(BudgetExceededError) as over,
    ):
        call()
    assert over.value.current_cost_usd == 0.4


def test_a_ledger_reached_exactly_refuses_the_next_admission() -> None:
    ledger = Ledger(UsageTracker(), budget_usd=0.3, enforce_budget=True)
    for _ in range(3):
        claim = ledger.admit("dime", 0.1)
        ledger.settle(claim, "dime", DIME)
    assert ledger.over_budget() is None
    with pytest.raises(BudgetExceededError):
        ledger.admit("dime", 0.1)
    assert (ledger.calls, ledger.spent) == (3, 0.3)


def test_a_zero_budget_refuses_every_call() -> None:
    ledger = Ledger(UsageTracker(), budget_usd=0.0, enforce_budget=True)
    with pytest.raises(BudgetExceededError):
        ledger.admit("dime", 0.0)
    assert ledger.calls == 0


def test_a_zero_budget_refuses_an_unpriced_model_as_a_zero_budget() -> None:
    # An unpriced model under a $0 budget: refused as every call is, by the budget.
    # Before: UnpricedModelError, whose advice (price it, or allow_unpriced=True)
    # led to the next refusal, the $0 budget's.
    ledger = Ledger(UsageTracker(), budget_usd=0.0, enforce_budget=True)
    with pytest.raises(BudgetExceededError, match=r"is \$0, so no model call may run"):
        ledger.admit("no-such-model-zz", 0.0, priced=False)
    assert ledger.calls == 0


@pytest.mark.parametrize("budget", [1e-12, 4e-10, 9.99e-10, 5e-324])
def test_a_budget_below_one_nano_dollar_is_refused_naming_the_smallest(budget: float) -> None:
    # It was accepted and acted as $0: the first call was refused with
    # "$0.0 spent ... >= $1e-12", a comparison false as printed.
    said = rf"budget_usd must be 0 or at least \$0\.000000001 .*got {budget!r}"
    with pytest.raises(ValueError, match=said):
        Ledger(UsageTracker(), budget_usd=budget, enforce_budget=True)
    with pytest.raises(ValueError, match=said):
        Orchestrator(role="w", budget_usd=budget, enforce_budget=True)
    assert Ledger(UsageTracker(), budget_usd=1e-9).budget_usd == 1e-9  # one nano-dollar
    assert Orchestrator(role="w", budget_usd=0).budget_usd == 0  # $0 keeps its meaning


@pytest.mark.parametrize(
    ("budget", "counted"),
    [(0.1234567894, 0.123456789), (0.1234567896, 0.12345679), (2.0000000004, 2.0)],
)
def test_a_budget_with_digits_below_a_nano_dollar_is_counted_and_printed_rounded(
    budget: float, counted: float
) -> None:
    # A probe: budget_usd=0.1234567894 refused a call after $0.123456789 was spent, saying
    # "$0.123456789 spent or reserved ... >= $0.1234567894", false as printed: the ledger
    # counts the budget in whole nano-dollars, as $0.123456789.
    register_pricing("exact", ModelPricing(input_per_million=counted * 1e6, output_per_million=0))
    with agent_session("n", budget_usd=budget, enforce_budget=True) as session:
        session.run_turn(lambda: "x", model="exact", usage=UsageSnapshot(1, 0))
        with pytest.raises(BudgetExceededError) as caught:
            session.run_turn(lambda: "x", model="exact", usage=UsageSnapshot(1, 0))
    error = caught.value
    assert error.budget_usd == counted
    assert error.current_cost_usd >= error.budget_usd
    spent, _, rest = str(error).removeprefix("budget reached: $").partition(" spent ")
    shown_budget = rest.partition(">= $")[2].partition(",")[0]
    assert float(spent) >= float(shown_budget) == counted
    assert Ledger(UsageTracker(), budget_usd=budget).budget_usd == counted


@pytest.mark.parametrize("budget", [1e10, float("inf"), float("nan"), -0.01])
def test_an_absurd_budget_is_a_clear_error(budget: float) -> None:
    with pytest.raises(ValueError, match="budget_usd"):
        Ledger(UsageTracker(), budget_usd=budget, enforce_budget=True)


def test_an_absurd_cost_is_clamped_and_logged_never_a_disabled_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger(UsageTracker(), budget_usd=5.0, enforce_budget=True)
    huge = UsageSnapshot(2**62, 0)  # $4.6e14 at the dime price
    claim = ledger.admit("dime", 0.0)
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.limits"):
        ledger.settle(claim, "dime", huge)
    assert ledger.spent_nano == MAX_CALL_NANO  # clamped to $1e6, still far over $5
    assert "out of range" in caplog.text
    with pytest.raises(BudgetExceededError):
        ledger.admit("dime", 0.0)


def test_input_tokens_beyond_int64_still_price() -> None:
    # Once an AssertionError: the call went unbooked.
    priced = price_call("dime", UsageSnapshot(2**64, 0))
    # Priced, and clamped to what one call may cost: the amount every report agrees on.
    assert (priced.cost, priced.source) == (MAX_CALL_USD, "clamped")


@pytest.mark.parametrize(
    ("usd", "nano"),
    [
        (0.1, 100_000_000),
        (-1.0, 0),
        (float("nan"), 0),
        (float("inf"), MAX_CALL_NANO),
        (10**400, MAX_CALL_NANO),
    ],
)
def test_booking_nano_bounds(usd: float, nano: int) -> None:
    assert booking_nano(usd, "test amount") == nano
