"""Repetition is counted in model turns: one reply's identical tool calls are one step.

A probe: a model reply asking for ``get_weather("Paris")`` 4 or 5 times (parallel tool
calls, run with ``asyncio.gather`` as the OpenAI Agents SDK does) had its fourth call
refused as a loop, and with five calls the next model call was refused too, "asked
for again after that call was refused". Calls were counted as they returned, with no
notion of the turn that asked for them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
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
from techrevati.runtime.telemetry.limits.loops import LoopWatch, same_step

RAISE = LoopGuard(on_loop="raise")
USAGE = UsageSnapshot(100, 10)


detections = loop_detections


def outcomes(results: list[object]) -> list[str]:
    return [type(r).__name__ if isinstance(r, BaseException) else str(r) for r in results]


@tool_call()
async def get_weather(city: str) -> str:
    return "sunny"  # returns at once: gather runs the calls one after another


@tool_call()
async def get_weather_slowly(city: str) -> str:
    await asyncio.sleep(0.01)  # the calls overlap
    return "sunny"


@pytest.mark.parametrize("tool", [get_weather, get_weather_slowly], ids=["fast", "overlapping"])
def test_one_replys_parallel_identical_calls_all_run(otel: Otel, tool: Any) -> None:
    async def main() -> tuple[list[object], str]:
        async with agent_session("a", loop_guard=RAISE, **otel.kwargs()) as session:
            asked = await asyncio.gather(*(tool("Paris") for _ in range(5)), return_exceptions=True)
            answer, _ = await session.arun_turn(
                lambda: asyncio.sleep(0, "sunny in Paris"), model="gpt-4o-mini", usage=USAGE
            )
        return asked, answer

    asked, answer = asyncio.run(main())
    assert outcomes(asked) == ["sunny"] * 5  # was: 3 sunny, then 2 LoopDetectedError
    assert answer == "sunny in Paris"  # was: the model call refused, "asked for again"
    assert detections(otel) == []
    assert otel.metric_sum(sc.METRIC_LOOP_DETECTIONS) == 0


def test_parallel_calls_on_threads_all_run(otel: Otel) -> None:
    # Before any model call, identical calls are one step while they are in flight
    # together. All eight are here: each waits for the others inside its body (a
    # sleep made them overlap only as the threads were scheduled, and on a loaded
    # machine a call could end before the next began, a step of its own: 2 in 15
    # runs reported a loop).
    together = threading.Barrier(8)

    @tool_call()
    def lookup(key: str) -> str:
        together.wait(timeout=10)
        return "same"

    with (
        agent_session("t", loop_guard=RAISE, **otel.kwargs()),
        ThreadPoolExecutor(8) as pool,
    ):
        found = [pool.submit(lookup, "k") for _ in range(8)]
        assert [f.result() for f in found] == ["same"] * 8
    assert detections(otel) == []


def test_a_turns_calls_are_one_step_and_turns_make_the_loop(otel: Otel) -> None:
    """A tool runner that runs one reply's calls one after another (the Anthropic SDK's):
    three identical calls a turn are one step; the third turn makes the loop, the fourth
    turn's calls are refused, and only a later turn asking again refuses the model calls."""
    ran: list[int] = []

    @tool_call()
    def search(q: str) -> list[str]:
        ran.append(1)
        return []

    def turn(session: Any) -> list[str]:
        session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
        asked = []
        for _ in range(3):
            try:
                search("pricing")
                asked.append("ran")
            except LoopDetectedError as refusal:
                asked.append(f"refused {refusal.refused}")
        return asked

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        watch = session._scope.loops if session._scope is not None else None
        assert watch is not None
        assert turn(session) == ["ran"] * 3
        assert turn(session) == ["ran"] * 3
        assert watch.detections == 0
        assert turn(session) == ["ran"] * 3  # the third turn: a loop, its own calls all run
        assert watch.detections == 1
        assert turn(session) == ["refused tool"] * 3  # refused together: not "asked again"
        assert session._scope is not None and session._scope.ledger.pending_refusal is None
        assert turn(session) == ["refused tool"] * 3  # a later turn asks again ...
        with pytest.raises(LoopDetectedError) as caught:
            turn(session)  # ... so the next model call is refused
    assert caught.value.refused == "model" and caught.value.asked_again
    assert len(ran) == 9
    assert len(detections(otel)) == 1
    assert otel.metric_sum(sc.METRIC_LOOP_DETECTIONS) == 1


def test_the_turn_that_completes_a_loop_may_finish_its_calls(otel: Otel) -> None:
    async def main() -> list[list[str]]:
        async with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:

            async def turn(calls: int) -> list[str]:
                await session.arun_turn(
                    lambda: asyncio.sleep(0, "ask"), model="gpt-4o-mini", usage=USAGE
                )
                found = (get_weather_slowly("Paris") for _ in range(calls))
                return outcomes(await asyncio.gather(*found, return_exceptions=True))

            return [await turn(n) for n in (1, 1, 3, 2)]

    got = asyncio.run(main())
    assert got == [["sunny"], ["sunny"], ["sunny"] * 3, ["LoopDetectedError"] * 2]


def test_a_model_call_inside_a_tool_is_not_a_turn(otel: Otel) -> None:
    """A tool that calls a model (a sub-agent, a summariser) does not start a turn: the
    reply's other identical calls stay in its step."""
    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:

        @tool_call()
        def summarise(text: str) -> str:
            session.run_turn(lambda: "short", model="gpt-4o-mini", usage=USAGE)
            return "short"

        session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
        for _ in range(5):
            assert summarise("the same page") == "short"
    assert detections(otel) == []


def test_same_step() -> None:
    assert same_step((2, 0), (2, 0))  # one model turn
    assert not same_step((2, 0), (3, 0))
    assert same_step((0, 7), (0, 7))  # no turn known: one batch of calls in flight together
    assert not same_step((0, 7), (0, 8))  # two batches, whichever tasks made them
    assert not same_step((0, 0), (0, 0))  # no batch known: each call a step of its own
    assert same_step((5, 1), (5, 1))  # a turn inside a tool call (a sub-agent's)
    assert not same_step((5, 1), (5, 0))  # ... is not the session's turn 5
    assert not same_step(None, (2, 0)) and not same_step(None, None)
    watch = LoopWatch(RAISE)
    key = watch.key("search", {"q": "x"})
    assert key is not None
    for turn in (1, 1, 1, 2, 2):
        watch.admit(key, "search", (turn, 0))
        watch.record(key, "search", [], (turn, 0))
    watch.admit(key, "search", (3, 0))
    watch.record(key, "search", [], (3, 0))
    watch.admit(key, "search", (3, 0))  # the loop's last turn, asking once more
    with pytest.raises(LoopDetectedError):
        watch.admit(key, "search", (4, 0))
