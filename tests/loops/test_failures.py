"""A call that fails the same way, model turn after model turn, is a loop.

A probe (p04): ``fetch(url)`` raising ``ConnectionError("refused")`` with the same
arguments, asked for again by the model turn after turn, was never stopped: a failed
call reset its count, so only the iteration cap ended the run, with no loop reported.
In model turns a call that raises counts like one that returns: the same call
raising the same exception (type and message) is a repeat. A program's own retries,
with no model turn in between, stay progress (tests/loops/test_sessions.py,
``test_polling_retries_and_generators_are_progress``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from otel_harness import Otel, loop_detections
from techrevati.runtime import (
    LoopDetectedError,
    LoopGuard,
    UsageSnapshot,
    agent_session,
    tool_call,
)
from techrevati.runtime.telemetry import semconv as sc

RAISE = LoopGuard(on_loop="raise")
USAGE = UsageSnapshot(100, 10)


detections = loop_detections


def turns(
    session: Any, count: int, call: Callable[[int], object], *, per_turn: int = 1
) -> list[str]:
    """``count`` model turns, each followed by ``per_turn`` calls of ``call(turn)``:
    what each call did (``ran``, the error it raised, or ``refused``)."""
    done: list[str] = []
    for turn in range(count):
        session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
        for _ in range(per_turn):
            try:
                call(turn)
                done.append("ran")
            except LoopDetectedError:
                done.append("refused")
            except Exception as error:
                done.append(type(error).__name__)
    return done


def test_the_same_call_raising_the_same_error_each_turn_is_refused(otel: Otel) -> None:
    ran: list[str] = []

    @tool_call()
    def fetch(url: str) -> str:
        ran.append(url)
        raise ConnectionError("refused")

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        done = turns(session, 3, lambda _: fetch("https://x.test/a"))
        assert done == ["ConnectionError"] * 3
        session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
        with pytest.raises(LoopDetectedError) as caught:
            fetch("https://x.test/a")  # was: ran (and failed) until the iteration cap
    assert len(ran) == 3
    refusal = caught.value
    assert (refusal.pattern, refusal.tool, refusal.raised) == (
        "repeat",
        "fetch",
        "ConnectionError: refused",
    )
    assert str(refusal) == (
        "tool 'fetch' is looping (repeat): the same call in 3 model turns raised the same "
        "error (ConnectionError: refused), so this call was refused before it ran; retrying "
        "the same call fails the same way: stop retrying it, fix the tool (or what it "
        "depends on), change the arguments, or finish with an answer without it"
    )
    again = pickle.loads(pickle.dumps(refusal))
    assert (str(again), again.raised) == (str(refusal), refusal.raised)
    assert "ConnectionError: refused" in str(refusal.at_model_call(asked_again=True))
    found = detections(otel)
    assert [(e[sc.LOOP_PATTERN], e[sc.GEN_AI_TOOL_NAME]) for e in found] == [("repeat", "fetch")]
    assert otel.metric_sum(sc.METRIC_LOOP_DETECTIONS, gen_ai__tool__name="fetch") == 1
    hits = [
        dict(e.attributes or {})
        for s in otel.spans("invoke_agent")
        for e in s.events
        if e.name == sc.EVENT_LIMIT_HIT
    ]
    assert [h[sc.LIMIT_KIND] for h in hits] == ["loop"]


def test_the_default_guard_reports_it_and_says_what_to_change(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    @tool_call()
    def fetch(url: str) -> str:
        raise ConnectionError("refused")

    with (
        caplog.at_level(logging.WARNING, logger="techrevati.runtime.loops"),
        agent_session("r", **otel.kwargs()) as session,
    ):
        done = turns(session, 5, lambda _: fetch("https://x.test/a"))
    assert done == ["ConnectionError"] * 5  # warn mode: every call ran
    assert [e[sc.LOOP_ACTION] for e in detections(otel)] == ["warn"]
    assert otel.metric_sum(sc.METRIC_LOOP_DETECTIONS) == 1
    [warned] = [r.getMessage() for r in caplog.records if r.name == "techrevati.runtime.loops"]
    assert (
        "(repeat of fetch): the same call in 3 model turns raised the same error "
        "(ConnectionError: refused)" in warned
    )
    assert "fix the tool (or what it depends on), change the arguments, or stop" in warned


def test_a_parallel_replys_identical_failing_calls_are_one_step(otel: Otel) -> None:
    """One reply asking three times for a call that fails: one step, so three turns make
    the loop, not the first turn's three calls."""

    @tool_call()
    def fetch(url: str) -> str:
        raise ConnectionError("refused")

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        done = turns(session, 4, lambda _: fetch("https://x.test/a"), per_turn=3)
    assert done == ["ConnectionError"] * 9 + ["refused"] * 3
    assert len(detections(otel)) == 1


@pytest.mark.parametrize(
    "fails",
    [
        pytest.param(lambda turn: ConnectionError(f"refused (attempt {turn})"), id="new message"),
        pytest.param(
            lambda turn: (ConnectionError if turn % 2 else TimeoutError)("down"), id="new type"
        ),
        pytest.param(lambda turn: None if turn % 3 == 2 else ConnectionError("down"), id="success"),
    ],
)
def test_a_changed_error_or_a_success_is_progress(
    otel: Otel, fails: Callable[[int], Exception | None]
) -> None:
    @tool_call()
    def fetch(url: str, _turn: list[int]) -> str:
        error = fails(_turn[0])
        if error is not None:
            raise error
        return "up"

    turn = [0]

    def call(number: int) -> object:
        turn[0] = number
        return fetch("https://x.test/a", turn)

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        done = turns(session, 9, call)
    assert "refused" not in done
    assert detections(otel) == []


def test_changed_arguments_are_progress(otel: Otel) -> None:
    @tool_call()
    def fetch(url: str) -> str:
        raise ConnectionError("refused")

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        done = turns(session, 8, lambda turn: fetch(f"https://x.test/{turn // 2}"))
    assert done == ["ConnectionError"] * 8  # each URL asked for in 2 turns, then another
    assert detections(otel) == []


def test_a_programs_own_retries_within_a_turn_are_one_step(otel: Otel) -> None:
    """A tool wrapper retrying a failing call (tenacity, a for loop): one model turn, one
    step, however many attempts; only turns asking again make a loop."""

    @tool_call()
    def fetch(url: str) -> str:
        raise ConnectionError("refused")

    def with_retries(_: int) -> None:
        for _attempt in range(10):
            with contextlib.suppress(ConnectionError):
                fetch("https://x.test/a")

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        assert turns(session, 2, with_retries) == ["ran", "ran"]
    assert detections(otel) == []
