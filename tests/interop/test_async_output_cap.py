"""Capped AsyncOpenAI calls under the official OpenAI instrumentation reserve what they ask.

The official instrumentation sets ``gen_ai.request.max_tokens`` on its span only
when the span ends. A model span that starts on an event loop, with nothing
learned of its model, is admitted at once at what its output cap costs: with no
cap on the span, the provider's default output length (4,096 tokens). A burst of
4 concurrent ``max_tokens=50`` calls under a budget for 3.5 of them then ran 1:
its $0.8192 placeholder refused the other 3. The client guard reads each
request as its async request method starts (before the client's first await)
and replaces the placeholder with the request's own upper bound; a call the
budget then refuses only for what the others reserve waits for its model's
first call to end and is admitted at what that cost.

The scenario (``async_cap_scenario.py``) runs as a subprocess, as the other
interop scenarios do, with the real instrumentation, the real ``AsyncOpenAI``
client and the local stand-in; this test run's interpreter has the official
instrumentation (as the support table's ``genai-openai`` producer uses).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import venvs  # noqa: E402
from async_cap_scenario import RESULT_MARK  # noqa: E402

pytestmark = pytest.mark.timeout(300)

#: One request's upper bound: its messages' JSON ('[{"role": "user", "content": "q0"}]',
#: 35 characters) is 9 input tokens at $100 per million, and max_tokens=50 output
#: tokens at $200 per million.
BOUND = (9 * 100 + 50 * 200) / 1e6  # $0.0109


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return venvs.run_scenario(
        sys.executable, HERE / "async_cap_scenario.py", mark=RESULT_MARK, timeout=240
    )


def test_the_official_instrumentation_names_max_tokens_only_when_its_span_ends(
    results: dict[str, Any],
) -> None:
    # Why the placeholder exists: nothing on the span says the cap when it starts.
    started = results["max_tokens_at_start"]
    assert started and set(started) == {None}
    assert set(results["max_tokens_at_end"]) == {50, 1}  # (1: the warm-up call)


@pytest.mark.parametrize("burst", ["fresh", "warm"])
def test_a_burst_of_capped_calls_on_a_loop_runs_what_the_budget_holds(
    results: dict[str, Any], burst: str
) -> None:
    # Budget $0.0315 (3.5 calls of $0.009); each call reserves its bound, $0.0109.
    # Before the placeholder was replaced, each reserved 4,096 output tokens
    # ($0.8192): 1 ran, 3 were refused. Then 3 ran at once and the 4th was refused
    # only for what they reserved. It now waits for its model's first call to end
    # and is admitted at what that cost: $0.009 spent and $0.0218 reserved leave
    # room, so it runs, and the last call crosses the budget by less than one call.
    got = results[burst]
    assert got["hits"] == 4
    assert got["outcomes"] == ["ran", "ran", "ran", "ran"]
    assert got["reserved_usd"] is None and got["committed_usd"] is None  # no refusal
    assert got["spent"] == pytest.approx(4 * 0.009)  # within the budget and one call
