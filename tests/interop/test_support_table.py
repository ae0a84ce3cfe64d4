"""The README's support table, measured: every instrumentation against our limits.

Each producer's scenario (``scenario.py``) runs as a subprocess in the venv
its pins need (``venvs.py``; ``make interop-venvs`` builds them, cached), with
the real ``openai`` / ``anthropic`` clients against the local stand-in, and
prints its measurements as JSON. Nothing is mocked: real instrumentations from
PyPI, the real OpenTelemetry SDK, our real limits processor and client guard.
No set-up call of ours is made beyond each instrumentation's own: the processor
joins the provider and the guard installs itself when the first session opens.

One call is 120 input tokens (100 of them cache reads) and 30 output tokens at
$100/$200/$10 per million input/output/cache-read: exactly $0.009. The budget
is $0.010 enforced (the second call crosses it, the third is refused before
its request; a crossing call the client guard booked raises once it ran); the
cap is 2 calls.
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
from scenario import RESULT_MARK, SWALLOWS_REFUSALS  # noqa: E402

# The first test runs all scenarios (two at a time, ~15-30 s each, imports dominate).
pytestmark = pytest.mark.timeout(900)

#: producer -> the venv it runs in (None: this test run's own interpreter).
PRODUCERS: dict[str, str | None] = {
    "genai-openai": None,
    "openai-v2": "openai-v2",
    "openllmetry-openai": "community",
    "openllmetry-anthropic": "community",
    "openinference-openai": "community",
    "openinference-anthropic": "community",
    "anthropic-sdk": "community",
    "agents-openinference": "community",
    "agents-chat-openinference": "community",
    "openlit-openai": "openlit",
    "openlit-anthropic": "openlit",
    # The official GenAI instrumentations of the Anthropic SDK, the Agents SDK and LangChain.
    "genai-anthropic": "frameworks",
    "agents-genai": "frameworks",
    "agents-chat-genai": "frameworks",
    "genai-langchain": "frameworks",
}

ONE_CALL = 0.009
NO_CACHE_CALL = 0.018  # 120 input tokens at the full rate: the producer reports no cache
EXACT = {"input": 20, "cache_read": 100, "cache_write": 0, "output": 30}
NO_CACHE = {"input": 120, "cache_read": 0, "cache_write": 0, "output": 30}

#: What each producer must show. A producer with no Responses API spans has no entry
#: for it; one whose spans price without cache says so by its usage.
EXPECTED: dict[str, dict[str, Any]] = {
    "genai-openai": {"usage": EXACT, "cost": ONE_CALL, "responses": ONE_CALL, "budget_calls": 2},
    "openai-v2": {
        # Its spans carry no cache count: the client guard reads the same response, and
        # that exact reading is booked when the span ends.
        "usage": EXACT,
        "cost": ONE_CALL,
        # 2.4b0 makes no spans for the Responses API: the client guard books those calls.
        "responses": ONE_CALL,
        "budget_calls": 2,
    },
    "openllmetry-openai": {
        "usage": EXACT,
        "cost": ONE_CALL,
        "responses": ONE_CALL,  # its openai.response span is a model call only at its end
        "budget_calls": 2,
    },
    "openllmetry-anthropic": {
        "usage": EXACT,
        "cost": ONE_CALL,
        # Its streaming span adds message_start's output token to the final count, and
        # the processor keeps the first of the two overlapping spans: one token too many.
        "stream_usage": {**EXACT, "output": 31},
        "stream_cost": 0.0092,
        "budget_calls": 2,
    },
    # Its wrapper is set on the client class (OpenAI.request), and the guard wraps it
    # there: its span ends inside the guard's request door, which books the call and
    # so raises on the call that crosses the budget once it ran, as a bare client's.
    "openinference-openai": {
        "usage": EXACT,
        "cost": ONE_CALL,
        "responses": ONE_CALL,
        "budget_calls": 2,
        "crossing_raises": True,
    },
    "openinference-anthropic": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2},
    "anthropic-sdk": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2},
    "agents-openinference": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2},
    # The Agents SDK's Chat Completions path: its generation spans carry no cache count;
    # the client guard reads the same response, and its exact reading is booked.
    "agents-chat-openinference": {
        "usage": EXACT,
        "cost": ONE_CALL,
        "budget_calls": 2,
        # Warned once: in the run with the guard opted out its span is the only reading.
        "no_cache_warnings": 1,
    },
    "openlit-openai": {"usage": EXACT, "cost": ONE_CALL, "responses": ONE_CALL, "budget_calls": 2},
    "openlit-anthropic": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2},
    "genai-anthropic": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2},
    # Its spans are invoke_agent / invoke_workflow only (no model-call spans): the
    # client guard counts and books each request, from the response's exact usage,
    # and the call that crosses the budget raises once it ran, as a bare client's does.
    "agents-genai": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2, "crossing_raises": True},
    "agents-chat-genai": {
        "usage": EXACT,
        "cost": ONE_CALL,
        "budget_calls": 2,
        "crossing_raises": True,
    },
    "genai-langchain": {"usage": EXACT, "cost": ONE_CALL, "budget_calls": 2},
}


def _run(producer: str) -> dict[str, Any]:
    env_name = PRODUCERS[producer]
    python = sys.executable if env_name is None else str(venvs.python(env_name))
    return venvs.run_scenario(
        python, HERE / "scenario.py", producer, mark=RESULT_MARK, timeout=600, label=producer
    )


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    # Two at a time: the machine has two cores, and imports dominate each run.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(PRODUCERS, pool.map(_run, PRODUCERS), strict=True))


def _cases(checks: list[str]) -> list[Any]:
    cases = []
    for producer in PRODUCERS:
        for check in checks:
            if check.startswith("responses") and "responses" not in EXPECTED[producer]:
                continue
            cases.append(pytest.param(producer, check, id=f"{producer}-{check}"))
    return cases


@pytest.mark.parametrize(("producer", "check"), _cases(["booked", "stream"]))
def test_booked_and_priced(results: dict[str, Any], producer: str, check: str) -> None:
    expected = EXPECTED[producer]
    usage = expected.get(f"{check}_usage", expected["usage"])
    cost = expected.get(f"{check}_cost", expected["cost"])
    got = results[producer][check]
    assert got == {
        "turns": [{"model": _model(producer), **usage}],
        "cost": cost,
        "iterations": 1,
    }


@pytest.mark.parametrize(("producer", "check"), _cases(["responses", "responses_stream"]))
def test_responses_api(results: dict[str, Any], producer: str, check: str) -> None:
    got = results[producer][check]
    cost = EXPECTED[producer]["responses"]
    assert got["cost"] == cost
    assert got["iterations"] == (1 if cost else 0)


@pytest.mark.parametrize(("producer", "check"), _cases(["budget"]))
def test_budget_stops_before_the_request(
    results: dict[str, Any], producer: str, check: str
) -> None:
    calls = EXPECTED[producer]["budget_calls"]
    # The refused call never reached the server: hits equal the calls that ran. The
    # one that crossed the budget completed, unless the guard booked it: it then
    # raised after it ran (a span that books a call ends after the client returned).
    ran = calls - 1 if EXPECTED[producer].get("crossing_raises") else calls
    assert results[producer][check] == {
        "hits": calls,
        "completed": ran,
        "error": "BudgetExceededError",
    }


@pytest.mark.parametrize("producer", sorted(SWALLOWS_REFUSALS))
def test_without_the_guard_these_producers_lose_the_refusal(
    results: dict[str, Any], producer: str
) -> None:
    # Why the guard exists: the processor refused the third call, the producer
    # swallowed the refusal, and the request went out anyway.
    assert results[producer]["budget_unguarded"] == {"hits": 3, "completed": 3, "error": ""}


@pytest.mark.parametrize(("producer", "check"), _cases(["cap"]))
def test_cap_stops_before_the_request(results: dict[str, Any], producer: str, check: str) -> None:
    assert results[producer][check] == {
        "hits": 2,
        "completed": 2,
        "error": "MaxIterationsExceededError",
    }


@pytest.mark.parametrize(("producer", "check"), _cases(["agent_turn"]))
def test_counted_once_under_agent_turn(results: dict[str, Any], producer: str, check: str) -> None:
    # Our turn reads the exact usage from the SDK result (or, when the result has none,
    # the library span's); the library span is the same call.
    cost = EXPECTED[producer].get("agent_turn_cost", ONE_CALL)
    assert results[producer][check] == {"turns": 1, "cost": cost, "iterations": 1}


def _model(producer: str) -> str:
    from scenario import ANTHROPIC_MODEL, OPENAI_MODEL

    return ANTHROPIC_MODEL if "anthropic" in producer else OPENAI_MODEL


@pytest.mark.parametrize("producer", PRODUCERS)
def test_no_cache_producers_are_warned_about_once(results: dict[str, Any], producer: str) -> None:
    default = 1 if EXPECTED[producer]["usage"] is NO_CACHE else 0
    expected = EXPECTED[producer].get("no_cache_warnings", default)
    assert results[producer]["no_cache_warnings"] == expected
