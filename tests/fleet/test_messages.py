"""A fleet refusal names the scope and the session the call was made in, and never ran."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    register_pricing,
)
from techrevati.runtime.usage_tracking import LimitSite

from .redis_server import RedisServer


def test_fleet_refusals_say_whose_limit_and_that_the_call_never_ran(
    redis_server: RedisServer,
) -> None:
    register_pricing("fleet-msg-model", ModelPricing(input_per_million=3.0, output_per_million=0))
    calls = FleetLimits(redis_server.url, scope="tenant-calls", max_calls=1)
    orch = Orchestrator(role="writer", fleet=calls)
    ran = []
    with pytest.raises(MaxIterationsExceededError) as cap, orch.session() as session:
        for _ in range(3):
            session.run_turn(lambda: ran.append(1), model="")
    assert ran == [1]
    error = cap.value
    assert error.scope == "tenant-calls" and error.max_iterations == 1
    worker = session.worker.worker_id
    assert error.site == LimitSite("fleet", False, "", "", "writer", worker, "tenant-calls")
    message = str(error)
    assert message.startswith(f"fleet scope 'tenant-calls' (for session 'writer' ({worker}))")
    assert "max_calls=1" in message and "refused before it ran" in message
    assert pickle.loads(pickle.dumps(error)).site == error.site

    money = FleetLimits(redis_server.url, scope="tenant-money", budget_usd=0.015)
    orch = Orchestrator(role="writer", fleet=money)
    spend = UsageSnapshot(input_tokens=5000, output_tokens=0)  # $0.015: the whole budget
    with pytest.raises(BudgetExceededError) as budget, orch.session() as session:
        for _ in range(3):
            session.run_turn(lambda: "x", model="fleet-msg-model", usage=spend)
    error = budget.value
    assert error.scope == "tenant-money" and error.site is not None
    assert error.site.level == "fleet" and error.site.ran is False
    assert "budget reached: $0.0150 spent or reserved by calls in flight >= $0.0150" in str(error)
    assert "the budget of fleet scope 'tenant-money'" in str(error)


@pytest.mark.parametrize("window_s", [None, 3600.0])
def test_a_fleet_cap_says_whether_a_window_resets_it(
    redis_server: RedisServer, window_s: float | None
) -> None:
    # A probe: a scope without window_s said "reached max_calls=2 in this window ...
    # (with window_s, its next window counts from zero)": it has no window to reset it.
    scope = f"tenant-window-{window_s}"
    calls = FleetLimits(redis_server.url, scope=scope, max_calls=2, window_s=window_s)
    with (
        pytest.raises(MaxIterationsExceededError) as cap,
        Orchestrator(role="writer", fleet=calls).session() as session,
    ):
        for _ in range(3):
            session.run_turn(lambda: "x", model="")
    error = cap.value
    assert error.site is not None and error.site.window_s == window_s
    owner = f"fleet scope {scope!r} (for session 'writer' ({session.worker.worker_id}))"
    refused = "call 3 was refused before it ran, nothing was sent or booked."
    if window_s is None:
        assert str(error) == (
            f"{owner} reached max_calls=2: {refused} The scope has no window_s, so its count "
            "never resets: the cap holds for the scope's life. Raise the scope's max_calls."
        )
    else:
        assert str(error) == (
            f"{owner} reached max_calls=2 in this window (window_s=3600): {refused} Raise the "
            "scope's max_calls, or wait: its next window counts from zero."
        )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    # A direct reserve() is told the same.
    with pytest.raises(MaxIterationsExceededError) as direct:
        calls.reserve("m", 0.0)
    assert ("in this window" in str(direct.value)) is (window_s is not None)
    assert ("never resets" in str(direct.value)) is (window_s is None)


@pytest.mark.parametrize("window_s", [None, 3600.0])
def test_a_fleet_budget_hint_names_a_window_only_when_there_is_one(
    redis_server: RedisServer, window_s: float | None
) -> None:
    tenant = FleetLimits(
        redis_server.url, scope=f"tenant-hint-{window_s}", budget_usd=0.001, window_s=window_s
    )
    tenant.reserve("m", 0.002)
    with pytest.raises(BudgetExceededError) as refused:
        tenant.reserve("m", 0.002)
    turns = " (or once its window turns over)" if window_s is not None else ""
    assert (
        f"Raise the scope's budget_usd, or retry once its calls in flight finish{turns}; "
        "FleetLimits.usage() shows" in str(refused.value)
    )


def test_a_direct_reserve_refusal_says_the_call_never_ran(redis_server: RedisServer) -> None:
    # reserve() called by the user's own code: the refusal read "budget exceeded in
    # fleet scope ...: $0.0020 > $0.0010" (a crossing) with nothing spent, and told a
    # scope with no window to "wait for its next window".
    tenant = FleetLimits(redis_server.url, scope="tenant-direct", budget_usd=0.001)
    tenant.reserve("m", 0.002)  # in flight: its reservation reaches the budget
    with pytest.raises(BudgetExceededError) as refused:
        tenant.reserve("m", 0.002)
    error = refused.value
    assert error.site == LimitSite("fleet", False, scope="tenant-direct")
    message = str(error)
    assert message.startswith(
        "budget reached: $0.0020 spent or reserved by calls in flight >= $0.0010, "
        "the budget of fleet scope 'tenant-direct'."
    )
    assert "refused before it ran" in message and "next window" not in message
    assert "once its calls in flight finish" in message
    assert pickle.loads(pickle.dumps(error)).site == error.site


def test_the_call_that_crosses_a_fleet_budget_raises_after_it_ran(
    redis_server: RedisServer,
) -> None:
    # A probe: under a fleet budget of $0.05 at $0.033 a call, the second call took the
    # scope to $0.066 and returned; only the third raised, refused. A session's own
    # budget raises at the second, after it ran (0.1.0's rule), and now so does the scope.
    register_pricing(
        "fleet-cross-model", ModelPricing(input_per_million=3.0, output_per_million=15.0)
    )
    tenant = FleetLimits(redis_server.url, scope="tenant-cross", budget_usd=0.05)
    usage = UsageSnapshot(input_tokens=5000, output_tokens=1200)  # $0.033
    outcomes: list[str] = []
    with Orchestrator(role="writer", fleet=tenant).session() as session:
        for _ in range(3):
            try:
                session.run_turn(lambda: "draft", model="fleet-cross-model", usage=usage)
                outcomes.append("ok")
            except BudgetExceededError as stop:
                assert stop.site is not None and stop.scope == "tenant-cross"
                outcomes.append("crossed" if stop.site.ran else "refused")
                if stop.site.ran:
                    crossed = stop
    assert outcomes == ["ok", "crossed", "refused"]  # ok, ok, refused before
    assert crossed.site == LimitSite(
        "fleet", True, "", "", "writer", session.worker.worker_id, "tenant-cross"
    )
    assert str(crossed).startswith("budget exceeded: $0.0660 > $0.0500, the budget of fleet")
    assert "The call that crossed it ran and was paid for" in str(crossed)
    assert tenant.usage().spent_usd == pytest.approx(0.066)


def _outcome(session: Any, body: Any, model: str, usage: UsageSnapshot) -> str:
    """A turn's outcome: 'ok', 'crossed' (it ran, then raised) or 'refused' (it never ran)."""
    try:
        session.run_turn(body, model=model, usage=usage)
    except BudgetExceededError as stop:
        assert stop.site is not None
        return "crossed" if stop.site.ran else "refused"
    return "ok"


def test_a_call_of_a_past_window_does_not_raise_for_the_next_ones_spend(
    redis_server: RedisServer,
) -> None:
    # A review: a call admitted in one window, settled after the next window's spend
    # (another process's) refused a call here, raised 'budget exceeded: $0.0610 >
    # $0.0500': the refusal's reading of the new window was taken as its own.
    import threading
    import time

    register_pricing(
        "fleet-window-model", ModelPricing(input_per_million=1.0, output_per_million=0)
    )
    here = FleetLimits(redis_server.url, scope="tenant-window", budget_usd=0.05, window_s=2)
    other = FleetLimits(redis_server.url, scope="tenant-window", budget_usd=0.05, window_s=2)
    time.sleep(2 - time.time() % 2 + 0.05)  # just after a window's start
    usage = UsageSnapshot(input_tokens=1000, output_tokens=0)  # $0.001
    outcomes: dict[str, str] = {}

    def outcome(name: str, body: Any) -> None:
        outcomes[name] = _outcome(session, body, "fleet-window-model", usage)

    with Orchestrator(role="w", fleet=here).session() as session:
        slow = threading.Thread(
            target=session.wrap(lambda: outcome("slow", lambda: time.sleep(2.3) or "done"))
        )
        slow.start()
        time.sleep(2.1)  # the next window: another process spends $0.06 of it
        other.settle(other.reserve("fleet-window-model", 0.0), 0.06)
        outcome("next", lambda: "x")
        slow.join()
    assert outcomes == {"next": "refused", "slow": "ok"}  # slow: crossed before


def test_a_call_in_flight_crosses_after_a_refusal_of_its_own_window(
    redis_server: RedisServer,
) -> None:
    # A review: a refusal's reading (which names no window) was taken for a later
    # window's, so the call in flight that then crossed the budget returned 'ok'.
    import threading

    register_pricing("fleet-same-model", ModelPricing(input_per_million=1.0, output_per_million=0))
    here = FleetLimits(redis_server.url, scope="tenant-same", budget_usd=0.05, window_s=3600)
    other = FleetLimits(redis_server.url, scope="tenant-same", budget_usd=0.05, window_s=3600)
    usage = UsageSnapshot(input_tokens=10_000, output_tokens=0)  # $0.01
    admitted, refused_next = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def outcome(name: str, body: Any) -> None:
        outcomes[name] = _outcome(session, body, "fleet-same-model", usage)

    def slow_body() -> str:
        admitted.set()
        refused_next.wait(10)
        return "done"

    with Orchestrator(role="w", fleet=here).session() as session:
        slow = threading.Thread(target=session.wrap(lambda: outcome("slow", slow_body)))
        slow.start()
        assert admitted.wait(10)
        other.settle(other.reserve("fleet-same-model", 0.0), 0.045)  # $0.055 with slow's
        outcome("next", lambda: "x")
        refused_next.set()
        slow.join()
    assert outcomes == {"next": "refused", "slow": "crossed"}  # slow: ok before


def test_only_the_booking_that_crossed_a_fleet_budget_says_it_crossed_it(
    redis_server: RedisServer,
) -> None:
    # Calls admitted together under a $5 scope at a $0.50 estimate, each costing $1:
    # each booking over the budget ($6, $7, $8, $9, $10) said it was the call that
    # crossed it. Only the first does now.
    import threading

    from techrevati.runtime import agent_session, agent_turn

    register_pricing("fleet-later-model", ModelPricing(1.0, 0.0))
    tenant = FleetLimits(redis_server.url, scope="tenant-later", budget_usd=5.0)
    start = threading.Barrier(10)

    @agent_turn("fleet-later-model")
    def call() -> dict[str, object]:
        start.wait()  # every call admitted before any is booked
        return {
            "model": "fleet-later-model",
            "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0},
        }

    errors: list[BudgetExceededError] = []

    def one() -> None:
        try:
            call()
        except BudgetExceededError as stop:
            errors.append(stop)

    with agent_session("w", fleet=tenant, call_estimate_usd=0.5) as session:
        threads = [threading.Thread(target=session.wrap(one)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert tenant.usage().spent_usd == pytest.approx(10.0)
    assert len(errors) == 5 and all(e.site is not None and e.site.ran for e in errors)  # 10 before
    first = [e for e in errors if "The call that crossed it ran" in str(e)]
    assert len(first) == 1, [str(e) for e in errors]  # 10 of 10 before
    assert first[0].site is not None and not first[0].site.later
    assert first[0].current_cost_usd == pytest.approx(6.0)  # its own booking's total
    assert "The call that crossed it ran and was paid for" in str(first[0])
    for later in errors:
        if later is not first[0]:
            assert "had already crossed it" in str(later)
