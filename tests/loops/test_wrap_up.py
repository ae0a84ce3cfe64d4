"""Wrap-up: once a share of the cap or enforced budget is used, the agent is told, once.

Real SDK pipelines in memory; model calls are ``run_turn`` / ``@agent_turn``
with usage given up front (no network).
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_harness import Otel
from techrevati.runtime import (
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.telemetry import semconv as sc


@pytest.fixture(autouse=True)
def priced() -> None:
    # $1 per 1M input tokens: UsageSnapshot(100_000, 0) costs $0.10.
    register_pricing("wrap-model", ModelPricing(1.0, 0.0))


TENTH = UsageSnapshot(100_000, 0)


def wrap_events(otel: Otel) -> list[dict[str, Any]]:
    return [
        dict(e.attributes or {})
        for s in otel.spans("invoke_agent")
        for e in s.events
        if e.name == sc.EVENT_WRAP_UP
    ]


def test_the_cap_turns_wrapping_up_on_at_80_percent_once(otel: Otel) -> None:
    told: list[object] = []
    seen: list[tuple[int, bool]] = []
    with agent_session(
        "writer",
        max_iterations=10,
        wrap_up_at=0.8,
        on_wrap_up=told.append,
        **otel.kwargs(),
    ) as session:
        assert session.remaining().calls == 10
        for i in range(1, 11):
            session.run_turn(lambda: "draft", model="wrap-model", usage=UsageSnapshot(1, 1))
            seen.append((i, session.wrapping_up))
        left = session.remaining()
        with pytest.raises(MaxIterationsExceededError):
            session.run_turn(lambda: "one too many", model="wrap-model")
    assert seen == [(i, i >= 8) for i in range(1, 11)]
    assert told == [session]  # exactly once, with the session
    assert (left.calls, left.fraction, left.limit) == (0, 0.0, "max_iterations")
    [event] = wrap_events(otel)
    assert event[sc.WRAP_UP_AT] == 0.8
    assert event[sc.WRAP_UP_LIMIT] == "max_iterations"
    assert event[sc.WRAP_UP_FRACTION_LEFT] == pytest.approx(0.2)


def test_an_enforced_budget_turns_it_on_when_the_cost_is_booked(otel: Otel) -> None:
    told: list[object] = []

    @agent_turn("wrap-model", usage=TENTH)
    def ask() -> str:
        return "answer"

    with agent_session(
        "writer",
        budget_usd=1.0,
        enforce_budget=True,
        max_iterations=100,
        wrap_up_at=0.5,
        on_wrap_up=told.append,
        **otel.kwargs(),
    ) as session:
        flags = []
        for _ in range(6):
            ask()
            flags.append(session.wrapping_up)
        left = session.remaining()
    assert flags == [False, False, False, False, True, True]
    assert len(told) == 1
    assert left.budget_usd == pytest.approx(0.4)
    assert left.calls == 94
    assert left.fraction == pytest.approx(0.4)
    assert left.limit == "budget"
    [event] = wrap_events(otel)
    assert event[sc.WRAP_UP_LIMIT] == "budget"


def test_a_soft_budget_is_reported_but_does_not_wrap_up(otel: Otel) -> None:
    with agent_session(
        "writer", budget_usd=0.1, max_iterations=100, wrap_up_at=0.5, **otel.kwargs()
    ) as session:
        for _ in range(3):
            session.run_turn(lambda: "x", model="wrap-model", usage=TENTH)
        assert session.wrapping_up is False
        left = session.remaining()
    assert left.budget_usd == 0.0
    assert left.limit == "max_iterations"
    assert left.fraction == pytest.approx(0.97)


def test_without_wrap_up_at_nothing_fires(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=2, **otel.kwargs())
    with orch.session() as session:
        session.run_turn(lambda: "x", model="wrap-model", usage=UsageSnapshot(1, 1))
        session.run_turn(lambda: "x", model="wrap-model", usage=UsageSnapshot(1, 1))
        assert session.wrapping_up is False
        assert session.remaining().calls == 0
    assert wrap_events(otel) == []


def test_a_child_session_sees_its_parents_limits(otel: Otel) -> None:
    with (
        agent_session("lead", max_iterations=5, **otel.kwargs()),
        agent_session("helper", max_iterations=100, wrap_up_at=0.8, **otel.kwargs()) as child,
    ):
        for _ in range(3):
            child.run_turn(lambda: "x", model="wrap-model", usage=UsageSnapshot(1, 1))
        assert child.wrapping_up is False
        child.run_turn(lambda: "x", model="wrap-model", usage=UsageSnapshot(1, 1))
        assert child.wrapping_up is True  # 4 of the parent's 5 calls used
        assert child.remaining().calls == 1


def test_a_callback_that_raises_does_not_fail_the_call(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(session: object) -> None:
        raise RuntimeError("callback bug")

    with agent_session(
        "writer", max_iterations=2, wrap_up_at=0.5, on_wrap_up=broken, **otel.kwargs()
    ) as session:
        text, _ = session.run_turn(lambda: "ok", model="wrap-model", usage=UsageSnapshot(1, 1))
        assert text == "ok"
        assert session.wrapping_up is True
    assert any("on_wrap_up raised" in r.getMessage() for r in caplog.records)


def test_the_budget_left_is_exact_to_the_nano_dollar(otel: Otel) -> None:
    # A probe read remaining().budget_usd == 0.8472999999999999: the ledger counts whole
    # nano-dollars, and what is left is the difference of two of them.
    with agent_session("w", budget_usd=1.0, **otel.kwargs()) as session:
        session.run_turn(lambda: "x", model="wrap-model", usage=UsageSnapshot(152_700, 0))
        assert session.remaining().budget_usd == 0.8473
        session.run_turn(lambda: "x", model="wrap-model", usage=UsageSnapshot(100_001, 0))
        assert session.remaining().budget_usd == 0.747299
