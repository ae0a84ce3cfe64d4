"""Threads carrying the session's OpenTelemetry context: the real ThreadingInstrumentor.

``opentelemetry-instrumentation-threading`` pins ``opentelemetry-instrumentation``
to its own release, which conflicts with the dev set, so the scenario
(``threading_scenario.py``) runs in its own cached venv (``envs/threading.txt``,
built by ``make interop-venvs``) with this checkout's ``src`` on the path.
The same rule without the instrumentor (``context.attach`` by hand, asyncio,
``to_thread``, anyio) is tested in ``tests/core/test_which_session.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import venvs  # noqa: E402

# The scenario module imports the instrumentor, which only its own venv has: its
# marker is repeated here rather than imported (a test below checks they agree).
RESULT_MARK = "THREADING-RESULT "

ONE_CALL = 0.0045  # 1000 in + 100 out at $3 / $15 per million


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return venvs.run_scenario(
        str(venvs.python("threading")),
        HERE / "threading_scenario.py",
        mark=RESULT_MARK,
        timeout=300,
    )


def test_a_thread_with_the_sessions_context_is_capped(results: dict[str, Any]) -> None:
    # Issue 20: 4 turns in a thread under max_iterations=2 all ran, booked $0.
    assert results["thread"] == {
        "outcomes": ["ran", "ran", "refused", "refused"],
        "turns": 2,
        "cost": 2 * ONE_CALL,
    }


def test_threads_and_executors_count_against_one_cap(results: dict[str, Any]) -> None:
    assert results["mixed"] == {"outcomes": ["ran"] * 3 + ["refused"] * 2, "iterations": 3}


def test_a_tool_in_an_instrumented_thread_is_in_the_session(results: dict[str, Any]) -> None:
    assert results["tool"] == {"in_session": [True], "agent": ["t"]}


def test_a_sub_agent_session_in_an_instrumented_pool_is_the_planners_child(
    results: dict[str, Any],
) -> None:
    # Its calls were in the planner's session, but a session it opened was a top-level
    # one: all 6 calls ran under the planner's cap of 3.
    assert results["sub_agents"] == {"outcomes": ["ran"] * 3 + ["refused"] * 3, "said": []}


def test_the_result_marker_matches_the_scenarios() -> None:
    source = (HERE / "threading_scenario.py").read_text(encoding="utf-8")
    assert f'RESULT_MARK = "{RESULT_MARK}"' in source
