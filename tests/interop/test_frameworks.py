"""The framework matrix of docs/frameworks.md, measured: real agent frameworks in a runaway loop.

Each set-up of ``frameworks_scenario.py`` runs as a subprocess in the
``frameworks`` venv (``venvs.py``; ``make interop-venvs`` builds it, cached):
pydantic-ai, the OpenAI Agents SDK, LangGraph and smolagents from PyPI, with
their real ``openai`` clients pointed at the local runaway stand-in (every
answer asks for another tool call), the real OpenTelemetry SDK, our real
limits processor and client guard, and the instrumentations each set-up names.
Nothing is mocked.

Per set-up, once under ``max_iterations=5`` and once under an enforced budget
of 3.5 calls, the checks of issue 21: requests at the server never exceed the
cap; spend stays within the budget plus one call; the caller gets our error
(as is, or inside the framework's documented wrapper where ``limit_error``
finds it); the session's cost is the server's usage at the published price;
every request is counted exactly once; and no request is sent once the
refusal was raised.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import venvs  # noqa: E402

SCENARIO = HERE / "frameworks_scenario.py"

# All set-ups run in the first test that asks (two at a time; ~2 min on 2 cores).
pytestmark = pytest.mark.timeout(900)

# Mirrors frameworks_scenario.py (which runs in the framework venv, not here).
ONE_CALL = 0.0000285  # gpt-4o-mini's published rates, one stand-in call
NO_CACHE_CALL = 0.000036  # the same call read without its 100 cache-read tokens
CAP = 5
BUDGET = round(ONE_CALL * 3.5, 10)
RESULT_MARK = "FRAMEWORK-RESULT "

#: How the refusal reaches the caller, per framework (docs/frameworks.md says the same).
RAISED_AS: dict[str, str] = {
    "pydantic-ai": "ours",
    "agents": "ours",
    "langgraph": "ours",
    "smolagents": "AgentGenerationError",  # ours is its __cause__
}

#: The set-ups asserted here (each runs once under the cap and once under the budget).
SETUPS: dict[str, str] = {
    "pydantic-ai": "pydantic-ai",
    "pydantic-ai-bare": "pydantic-ai",
    "pydantic-ai+own": "pydantic-ai",
    "pydantic-ai+own+openai": "pydantic-ai",
    "agents-responses": "agents",
    "agents-responses-stream": "agents",
    "agents-chat": "agents",
    "agents-chat-stream-usage": "agents",
    "agents-responses+openinference": "agents",
    "agents-chat+openinference": "agents",
    "agents-responses+genai-agents": "agents",
    "agents-chat+genai-agents": "agents",
    "agents-direct-tool+openinference": "agents",
    "langgraph-invoke": "langgraph",
    "langgraph-invoke-bare": "langgraph",
    "langgraph-ainvoke": "langgraph",
    "langgraph-stream": "langgraph",
    "langgraph-retry-toolnode": "langgraph",
    "langgraph-invoke+openinference-langchain": "langgraph",
    "langgraph-invoke+openinference-langchain+openai": "langgraph",
    "langgraph-stream+openinference-langchain+openai": "langgraph",
    "langgraph-invoke+openllmetry-langchain": "langgraph",
    "langgraph-invoke+openllmetry-langchain+openai": "langgraph",
    "langgraph-stream+openllmetry-langchain+openai": "langgraph",
    "langgraph-invoke+genai-langchain": "langgraph",
    "langgraph-invoke+genai-langchain+openai": "langgraph",
    "langgraph-stream+genai-langchain+openai": "langgraph",
    "langgraph-ainvoke+openllmetry-langchain+openai": "langgraph",
    "langgraph-abatch+openinference-langchain+openai": "langgraph",
    "langgraph-abatch+openllmetry-langchain+openai": "langgraph",
    "smolagents-toolcalling": "smolagents",
    "smolagents-code": "smolagents",
    "smolagents-toolcalling+openinference": "smolagents",
    "smolagents-code+openinference": "smolagents",
    "smolagents-toolcalling+openinference-only": "smolagents",
}


#: Streams the server answers without usage (the framework did not ask for it): booked
#: at the guard's estimate under an enforced budget, so they are stopped all the same.
NO_USAGE: dict[str, str] = {
    "agents-chat-stream": "agents",
    "langgraph-stream-no-usage": "langgraph",
}


#: Set-ups whose runs start together (LangGraph abatch).
CONCURRENT = {setup for setup in SETUPS if "-abatch" in setup}


def _run(setup: str) -> dict[str, Any]:
    return venvs.run_in_frameworks(SCENARIO, setup, mark=RESULT_MARK)


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    every = [*SETUPS, *NO_USAGE]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(every, pool.map(_run, every), strict=True))


def _cases() -> list[Any]:
    return [pytest.param(setup, id=setup) for setup in SETUPS]


def _raised_as_documented(setup: str, got: dict[str, Any], ours: str) -> None:
    assert got["ours"] == ours, got
    surface = RAISED_AS[{**SETUPS, **NO_USAGE}[setup]]
    if surface == "ours":
        assert got["raised"] == ours, got
    else:
        # The framework's wrapper, with ours as its direct cause.
        assert got["chain"][:2] == [surface, ours], got


@pytest.mark.parametrize("setup", _cases())
def test_cap_stops_the_loop_at_the_cap(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["cap"]
    # Exactly CAP requests reached the server, each counted and booked once, and
    # none after the refusal was raised.
    assert (got["hits"], got["iterations"], got["booked_calls"]) == (CAP, CAP, CAP), got
    assert got["hits_at_raise"] == got["hits"], got
    _raised_as_documented(setup, got, "MaxIterationsExceededError")


@pytest.mark.parametrize("setup", _cases())
def test_budget_stops_the_loop_within_one_call(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["budget"]
    assert got["hits"] == got["iterations"] == got["booked_calls"], got
    assert got["hits_at_raise"] == got["hits"], got
    # Spend within the budget plus the one call that crossed it, and not stopped early.
    # Concurrent runs' first calls start on an event loop, where nothing waits for a
    # probe: each reserves the default output length, 4,096 tokens ($0.0025 here,
    # 25 budgets of this one), so how many run before the first one taught the cost
    # depends on when they start (documented), never more than the bound.
    low = 0.0 if setup in CONCURRENT else BUDGET - ONE_CALL
    assert low < got["cost"] <= BUDGET + ONE_CALL + 1e-12, got
    _raised_as_documented(setup, got, "BudgetExceededError")


@pytest.mark.parametrize("setup", _cases())
def test_session_cost_is_server_usage_at_the_published_price(
    results: dict[str, Any], setup: str
) -> None:
    # Each request is booked once, with its cache reads at the cache rate: the exact
    # reading wins over a reading of the same call that lacks cache counts.
    for check in ("cap", "budget"):
        got = results[setup][check]
        assert got["cost"] == pytest.approx(got["hits"] * ONE_CALL, rel=1e-9), (check, got)


@pytest.mark.parametrize("setup", list(NO_USAGE))
def test_streams_without_usage_are_stopped_at_an_estimate(
    results: dict[str, Any], setup: str
) -> None:
    cap, budget = results[setup]["cap"], results[setup]["budget"]
    assert (cap["hits"], cap["iterations"], cap["booked_calls"]) == (CAP, CAP, CAP), cap
    _raised_as_documented(setup, cap, "MaxIterationsExceededError")
    # No usage, no budget: nothing to price (a warning says so); under the budget the
    # guard books each call at an estimate from the request and the streamed text.
    assert cap["cost"] == 0.0, cap
    assert budget["hits"] == budget["iterations"] == budget["booked_calls"], budget
    assert budget["hits_at_raise"] == budget["hits"], budget
    assert BUDGET < budget["cost"] <= BUDGET + 2 * ONE_CALL, budget
    # The estimate is near the real price, so the real spend stays near the budget too.
    assert budget["hits"] * ONE_CALL <= BUDGET + 2 * ONE_CALL, budget
    _raised_as_documented(setup, budget, "BudgetExceededError")


@pytest.fixture(scope="module")
def control() -> dict[str, Any]:
    return _run("control-no-limits")


def test_the_loop_runs_away_without_our_limits(control: dict[str, Any]) -> None:
    # The stand-in really is a runaway: with our cap out of the way, LangGraph's own
    # recursion limit (81 steps in the scenario: 41 model calls) is what ends the run.
    got = control["free"]
    assert (got["hits"], got["raised"], got["ours"]) == (41, "GraphRecursionError", ""), got


def test_the_default_cap_of_25_stops_it(control: dict[str, Any]) -> None:
    got = control["default"]
    assert (got["hits"], got["iterations"], got["ours"]) == (25, 25, "MaxIterationsExceededError")
    assert "the default cap of 25" in got["message"], got
