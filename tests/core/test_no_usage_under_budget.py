"""No call is free under an enforced budget, even when nothing can estimate it.

A call whose usage never arrives is booked at an estimate when there is one;
when there is none (no request the guard saw, no learned cost, no
``call_estimate_usd``), it is booked at $0 once and the model's next call in
that session is refused, naming the three ways to say what such calls cost.
"""

from __future__ import annotations

import pickle

import pytest

from otel_harness import Otel
from techrevati.runtime import (
    BudgetExceededError,
    UnpricedModelError,
    agent_session,
    agent_turn,
)
from techrevati.runtime.telemetry import semconv as sc

pytestmark = pytest.mark.usefixtures("priced")


@agent_turn("model-a")
def ask() -> str:
    return "text, no usage"


def test_the_second_uncostable_call_is_refused_before_it_runs(otel: Otel) -> None:
    ran = 0
    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        ask()
        ran += 1
        with pytest.raises(UnpricedModelError) as refused:
            ask()
    assert ran == 1
    assert session.tracker.turn_count == 1
    error = refused.value
    assert isinstance(error, BudgetExceededError)
    assert error.no_usage is True and error.model == "model-a"
    assert "returned no token usage" in str(error) and "call_estimate_usd" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.no_usage) == (str(error), True)
    (turn,) = otel.spans("chat model-a")
    # $0 because nothing was read, not because a price said so.
    assert turn.attributes[sc.COST_SOURCE] == sc.COST_SOURCE_NO_USAGE
    assert turn.attributes[sc.USAGE_MISSING] is True


def test_allow_unpriced_accepts_them_at_zero(otel: Otel) -> None:
    with agent_session(
        "w", budget_usd=1.0, enforce_budget=True, allow_unpriced=True, **otel.kwargs()
    ) as session:
        for _ in range(3):
            ask()
    assert session.tracker.turn_count == 3


def test_a_call_estimate_books_them_at_the_estimate(otel: Otel) -> None:
    with agent_session(
        "w", budget_usd=0.25, enforce_budget=True, call_estimate_usd=0.1, **otel.kwargs()
    ) as session:
        ask()
        ask()
        with pytest.raises(BudgetExceededError):
            ask()  # 0.2 spent + 0.1 reserved would pass 0.25: the third is refused or crosses
    assert session.summary()["usage"]["total_cost_usd"] == pytest.approx(0.3, abs=0.1)
    turns = otel.spans("chat model-a")
    assert {t.attributes[sc.COST_SOURCE] for t in turns} == {sc.COST_SOURCE_ESTIMATED}


def test_without_an_enforced_budget_nothing_is_refused(otel: Otel) -> None:
    with agent_session("w", budget_usd=1.0, **otel.kwargs()) as session:
        for _ in range(3):
            ask()
    assert session.tracker.turn_count == 3


def test_a_model_priced_only_for_a_provider_is_refused_naming_that_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A model the bundled prices list for a provider only, by that provider's rules: a
    # turn that names no provider was refused with advice to register a price. (The
    # database's own entries are all found by their exact id since 30b759e; a name
    # only a provider's rules place is not, which this stands in for.)
    from techrevati.runtime import Orchestrator, UnpricedModelError, pricing
    from techrevati.runtime.pricing import database
    from techrevati.runtime.usage_tracking import UsageSnapshot

    monkeypatch.setattr(database, "_owner_of", lambda snapshot, model: None)
    monkeypatch.setattr(database, "_cache", {})  # resolved again, without the fallback
    monkeypatch.setattr(pricing, "_cache", pricing._NO_CACHE)
    usage = UsageSnapshot(1_000_000, 0)
    orch = Orchestrator(role="w", budget_usd=1.0, enforce_budget=True)
    with orch.session() as session, pytest.raises(UnpricedModelError) as refused:
        session.run_turn(lambda: "x", model="text-embedding-3-small", usage=usage)
    assert "list it for provider 'openai'" in str(refused.value)
    assert "provider_name='openai' on the Orchestrator" in str(refused.value)
    named = Orchestrator(role="w", budget_usd=1.0, enforce_budget=True, provider_name="openai")
    with named.session() as session:  # what it says works
        session.run_turn(lambda: "x", model="text-embedding-3-small", usage=usage)
    assert session.tracker.total_cost() == pytest.approx(0.02)


@agent_turn("unlisted-model-x", provider="openai")
def ask_unpriced() -> dict[str, object]:
    return {"model": "unlisted-model-x", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


def test_allow_unpriced_speaks_for_the_budget_of_the_session_that_sets_it(otel: Otel) -> None:
    # A probe: the flag was read from the session making the call. A child opened with
    # allow_unpriced=True ran unpriced calls at $0 under its parent's enforced budget,
    # and a parent that accepted them refused its child's, telling it to set the flag
    # the parent already had.
    with (
        agent_session("parent", budget_usd=1.0, enforce_budget=True, **otel.kwargs()),
        agent_session("child", allow_unpriced=True) as child,
        pytest.raises(UnpricedModelError) as refused,
    ):
        ask_unpriced()  # ran before
    assert child.tracker.turn_count == 0
    assert refused.value.site is not None and refused.value.site.level == "parent"
    assert "open session 'parent' (" in str(refused.value)
    assert "with allow_unpriced=True to accept it at $0" in str(refused.value)

    limits = {"budget_usd": 1.0, "enforce_budget": True, "allow_unpriced": True}
    with agent_session("parent", **limits, **otel.kwargs()), agent_session("child") as child:
        ask_unpriced()  # refused before
        ask_unpriced()
    assert child.tracker.turn_count == 2
    assert child.tracker.total_cost() == 0.0

    # A grandparent's budget is named, not the parent that accepts such calls.
    with (
        agent_session("lead", budget_usd=1.0, enforce_budget=True, **otel.kwargs()),
        agent_session("parent", **limits),
        agent_session("child", allow_unpriced=True),
        pytest.raises(UnpricedModelError) as refused,
    ):
        ask_unpriced()
    assert "open session 'lead' (" in str(refused.value)

    # A child's own budget still holds to its own flag.
    with (
        agent_session("parent", **limits, **otel.kwargs()),
        agent_session("child", budget_usd=1.0, enforce_budget=True),
        pytest.raises(UnpricedModelError) as refused,
    ):
        ask_unpriced()
    assert refused.value.site is not None and refused.value.site.level == "own"
