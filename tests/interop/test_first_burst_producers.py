"""A first burst under each real OpenAI client instrumentation holds the budget exactly.

20 first calls of a model nothing is known of, without ``max_tokens``, at once,
under an enforced budget for five: each request's upper bound (4,096 output
tokens) is over the budget on its own, so a call the budget refuses only for
what the first call reserves must wait for what that call cost. With the
official instrumentation (the model named at the span's start) that held: 5
calls on an event loop and on threads. OpenLLMetry's spans name no model until
they end: on a loop 1 call ran (the rest refused for the first one's bound), on
threads 9 to 18 ran (each admitted reserving nothing before the guard read any
request), up to $0.162 spent of a $0.045 budget. Both now run exactly 5.

The scenario (``first_burst_scenario.py``) runs as a subprocess with the real
instrumentation, the real ``openai`` clients and the local stand-in: the official
one in this test run's interpreter, OpenLLMetry's and OpenInference's in the
``community`` venv (as the support table's producers use).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import venvs  # noqa: E402
from first_burst_scenario import BUDGET, CALLS, ONE_CALL, RESULT_MARK  # noqa: E402

pytestmark = pytest.mark.timeout(300)

PRODUCERS = {"genai": None, "openllmetry": "community", "openinference": "community"}
_RESULTS: dict[str, dict[str, Any]] = {}


def _results(producer: str) -> dict[str, Any]:
    if producer not in _RESULTS:
        venv = PRODUCERS[producer]
        python = sys.executable if venv is None else str(venvs.python(venv))
        _RESULTS[producer] = venvs.run_scenario(
            python,
            HERE / "first_burst_scenario.py",
            producer,
            mark=RESULT_MARK,
            timeout=240,
            label=producer,
        )
    return _RESULTS[producer]


@pytest.mark.parametrize("burst", ["async", "threads"])
@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_a_first_burst_runs_what_the_budget_holds(producer: str, burst: str) -> None:
    got = _results(producer)[burst]
    assert got["requests"] == 5
    outcomes = got["outcomes"]
    assert outcomes["ran"] + outcomes["crossed"] == 5
    assert outcomes["refused"] == CALLS - 5
    assert got["spent"] == pytest.approx(5 * ONE_CALL)
    assert got["spent"] <= BUDGET + ONE_CALL
    assert got["reserved_nano"] == 0
    assert got["waiting"] == 0
