"""Every number entering Redis is validated and bounded; money is exact at the boundary."""

from __future__ import annotations

import logging
import sys

import pytest
import redis

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    ModelPricing,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.telemetry.limits.money import MAX_CALL_NANO

from .redis_server import RedisServer


def test_three_dimes_reach_the_fleet_budget_exactly_and_the_fourth_is_refused(
    redis_server: RedisServer,
) -> None:
    register_pricing("dime", ModelPricing(100_000.0, 0.0))
    fleet = FleetLimits(redis_server.url, scope="dimes", budget_usd=0.30)
    bodies: list[int] = []

    @agent_turn(model="dime", usage=UsageSnapshot(1, 0))
    def call(i: int) -> str:
        bodies.append(i)
        return "ok"

    with agent_session("w", fleet=fleet):
        for i in range(3):
            call(i)  # none raises
        with pytest.raises(BudgetExceededError) as refused:
            call(3)
    assert bodies == [0, 1, 2]
    assert refused.value.scope == "dimes"
    client = redis.Redis.from_url(redis_server.url)
    assert int(client.hget("techrevati:fleet:{dimes}:0", "spent") or 0) == 300_000_000
    assert fleet.usage().spent_usd == 0.3


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lease_s", sys.maxsize),
        ("window_s", sys.maxsize),
        ("window_s", 1e300),
        ("timeout_s", 1e9),
        ("probe_wait_s", float(sys.maxsize)),
        ("budget_usd", 9.3e9),
        ("budget_usd", float("inf")),
        ("max_calls", 2**63),
    ],
)
def test_an_absurd_setting_is_a_clear_error_naming_it(
    redis_server: RedisServer, option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=option):
        FleetLimits(redis_server.url, scope="absurd", **{option: value})  # type: ignore[arg-type]


def test_a_hostile_amount_is_clamped_and_logged_the_limit_stays_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = FleetLimits(redis_server.url, scope="hostile", budget_usd=5.0, window_s=3600)
    hold = fleet.reserve("m", 0.01)
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.limits"):
        fleet.settle(hold, 9.3e18)  # once wrapped '%d' negative: spend < 0 for the window
    assert "out of range" in caplog.text
    usage = fleet.usage()
    assert usage.spent_usd == MAX_CALL_NANO / 1e9 > 0
    with pytest.raises(BudgetExceededError):
        fleet.reserve("m", 0.01)


def test_sums_saturate_instead_of_wrapping(redis_server: RedisServer) -> None:
    # No budget, only a cap: clamped bookings pile up; the total must never wrap
    # negative (Lua's '%d' wraps at 2**63).
    fleet = FleetLimits(redis_server.url, scope="pile", max_calls=100_000)
    client = redis.Redis.from_url(redis_server.url)
    client.hset("techrevati:fleet:{pile}:0", "spent", str(2**63 - 2 * 10**15))
    for _ in range(3):
        fleet.settle(fleet.reserve("m", 0.0), 1e6)
    assert fleet.usage().spent_usd >= 4e9
