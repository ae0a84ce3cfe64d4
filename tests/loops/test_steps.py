"""What one repetition step is, and what the rule compares, where counting in model turns
first missed loops (a review of the turn-counting change):

* before any model call, identical calls made one after another, each in its own asyncio
  task or thread, were folded as "parallel" (one step): 8 of 8 ran, never detected;
* an argument that cannot be weakly referenced (a sqlite3 connection, a ``__slots__``
  client) left the call unwatched: 8 of 8 ran;
* after one model call the runtime saw, a loop with no further seen model calls (a model
  it does not see; a sub-agent run as a tool) was one turn's step: never detected;
* a result of more than ``MAX_VALUES`` values (a table of rows) was never compared.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import (
    LoopDetectedError,
    LoopGuard,
    UsageSnapshot,
    agent_session,
    tool_call,
)
from techrevati.runtime.telemetry.limits import loops
from techrevati.runtime.telemetry.limits.loops import (
    MAX_VALUES,
    LoopWatch,
    NotComparable,
    canonical_result,
)

#: A reply's fan-out a turn's step absorbs (read so: the module's own constant).
FANOUT: int = getattr(loops, "FANOUT", 5)
RAISE = LoopGuard(on_loop="raise")
USAGE = UsageSnapshot(100, 10)
LOOP = ["ran"] * 3 + ["refused"] * 5


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


def watch_of(session: Any) -> LoopWatch:
    watch = session._scope.loops
    assert isinstance(watch, LoopWatch)
    return watch


@tool_call()
async def search(q: str) -> list[str]:
    return []


@tool_call()
def search_sync(q: str) -> list[str]:
    return []


# -- P1: before any model call, only calls in flight together are one step -------------


async def _each_in_a_task(how: str) -> list[str]:
    out = []
    for _ in range(8):
        try:
            if how == "create_task":
                await asyncio.create_task(search("pricing"))
            elif how == "task_group":
                async with asyncio.TaskGroup() as group:
                    group.create_task(search("pricing"))
            elif how == "gather_one":
                await asyncio.gather(search("pricing"))
            elif how == "wait_for":
                await asyncio.wait_for(search("pricing"), timeout=5)
            else:
                await asyncio.to_thread(search_sync, "pricing")
            out.append("ran")
        except* LoopDetectedError:
            out.append("refused")
    return out


@pytest.mark.parametrize(
    "how", ["create_task", "task_group", "gather_one", "wait_for", "to_thread"]
)
def test_calls_one_after_another_in_their_own_tasks_or_threads_make_a_loop(
    otel: Otel, how: str
) -> None:
    async def main() -> tuple[list[str], int]:
        async with agent_session("a", loop_guard=RAISE, **otel.kwargs()) as session:
            out = await _each_in_a_task(how)
            return out, watch_of(session).detections

    # Was: create_task / TaskGroup 8 of 8 ran, 0 detections; the others at random, and
    # a call after a refusal ran again.
    assert asyncio.run(main()) == (LOOP, 1)


def test_calls_in_flight_together_are_one_step_whatever_their_threads() -> None:
    watch = LoopWatch(RAISE)
    key = watch.key("search", {"q": "x"})
    assert key is not None
    seen: list[tuple[int, int]] = []

    def call() -> None:
        seen.append(watch.enter(key, (0, 0)))

    first = watch.enter(key, (0, 0))
    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(seen) == {first}  # in flight with the first: one batch
    for _ in range(4):
        watch.leave(key)
    later = watch.enter(key, (0, 0))  # none in flight: a step of its own
    assert later != first
    watch.leave(key)
    assert watch.enter(key, (3, 0)) == (3, 0)  # in model turns, the turn says
    watch.leave(key)


# -- P2: arguments that cannot be weakly referenced ------------------------------------


class Client:
    __slots__ = ("base",)

    def __init__(self) -> None:
        self.base = "http://x"

    def search(self) -> list[str]:
        return []


DB = sqlite3.connect(":memory:", check_same_thread=False)
CLIENT = Client()


@tool_call()
def query(db: sqlite3.Connection, sql: str) -> list[Any]:
    return db.execute(sql).fetchall()


@pytest.mark.parametrize(
    "step",
    [
        lambda session: query(DB, "select 1"),
        lambda session: session.run_tool("search", CLIENT.search),
    ],
    ids=["sqlite3 connection", "bound method of a __slots__ object"],
)
def test_a_runaway_with_an_argument_that_cannot_be_weakly_referenced_is_stopped(
    otel: Otel, step: Callable[[Any], object]
) -> None:
    out = []
    with agent_session("a", loop_guard=RAISE, **otel.kwargs()) as session:
        for _ in range(5):
            session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
            try:
                step(session)
                out.append("ran")
            except LoopDetectedError:
                out.append("refused")
        assert watch_of(session).detections == 1
    assert out == ["ran"] * 3 + ["refused"] * 2  # was: 5 ran, 0 detections


# -- P3: after one seen model call ------------------------------------------------------


def test_a_loop_after_one_seen_model_call_is_stopped_past_a_replys_fan_out(otel: Otel) -> None:
    out = []
    with agent_session("a", loop_guard=RAISE, **otel.kwargs()) as session:
        session.run_turn(lambda: "plan", model="gpt-4o-mini", usage=USAGE)
        for _ in range(FANOUT + 4):
            try:
                search_sync("pricing")
                out.append("ran")
            except LoopDetectedError as refusal:
                out.append("refused")
                message = str(refusal)
        assert watch_of(session).detections == 1
    # Was: all ran, never detected. A reply's fan-out (FANOUT) is one step, then each
    # further identical call counts: the loop is made by 2 more.
    assert out == ["ran"] * (FANOUT + 2) + ["refused"] * 2
    assert "3 identical calls returned the same result" in message  # not "3 model turns"
    assert "model turns" not in message


def test_a_sub_agent_looping_inside_a_tool_call_is_stopped(otel: Otel) -> None:
    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:

        def sub_agent() -> list[str]:
            got = []
            for _ in range(8):
                session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
                try:
                    # Its turn's parallel calls: one step, as in the session's own turns.
                    for _ in range(3):
                        session.run_tool("search", lambda: [], arguments={"q": "pricing"})
                    got.append("ran")
                except LoopDetectedError:
                    got.append("refused")
                    break
            return got

        session.run_turn(lambda: "delegate", model="gpt-4o-mini", usage=USAGE)
        got = session.run_tool("sub_agent", sub_agent, arguments={"task": "x"})
        assert watch_of(session).detections == 1
    assert got == ["ran", "ran", "ran", "refused"]  # was: 8 ran, never detected


def test_a_tool_calling_a_model_once_keeps_its_callers_turn(otel: Otel) -> None:
    """A summariser tool's own model call is a turn only for calls made inside it."""
    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:

        @tool_call()
        def summarise(text: str) -> str:
            session.run_turn(lambda: "short", model="gpt-4o-mini", usage=USAGE)
            return "short"

        for _ in range(2):
            session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
            for _ in range(FANOUT):
                assert summarise("the same page") == "short"
        assert watch_of(session).detections == 0


# -- P4: results too big to walk -------------------------------------------------------


ROWS = [{"id": i, "name": f"n{i}", "price": i * 1.5, "ok": True} for i in range(2500)]


def _turns(session: Any, call: Callable[[int], object], count: int) -> list[str]:
    out = []
    for turn in range(count):
        session.run_turn(lambda: "ask", model="gpt-4o-mini", usage=USAGE)
        try:
            call(turn)
            out.append("ran")
        except LoopDetectedError:
            out.append("refused")
    return out


def test_a_runaway_returning_the_same_big_table_is_stopped(otel: Otel) -> None:
    @tool_call()
    def list_products(category: str) -> list[dict[str, Any]]:
        return [dict(row) for row in ROWS]  # a new copy each time, the same data

    with agent_session("a", loop_guard=RAISE, **otel.kwargs()) as session:
        out = _turns(session, lambda _: list_products("all"), 5)
    assert out == ["ran"] * 3 + ["refused"] * 2  # was: 5 ran, never compared


def test_a_big_table_that_changes_is_never_a_loop(otel: Otel) -> None:
    latest = [0.0]

    @tool_call()
    def list_products(category: str) -> list[dict[str, Any]]:
        rows = [dict(row) for row in ROWS]
        rows[-1]["price"] = latest[0]
        return rows

    def call(turn: int) -> None:
        latest[0] = float(turn)  # one value of 10,000 changes: new work
        list_products("all")

    with agent_session("a", loop_guard=RAISE, **otel.kwargs()) as session:
        out = _turns(session, call, 6)
    assert out == ["ran"] * 6


def test_big_results_are_compared_exactly() -> None:
    many = MAX_VALUES + 1
    by_int = canonical_result({i: i for i in range(many)})
    assert by_int != canonical_result({str(i): i for i in range(many)})  # 1 and "1"
    assert canonical_result([[i] for i in range(many)]) != canonical_result(
        [(i,) for i in range(many)]
    )
    assert canonical_result(list(range(many))) != canonical_result(list(range(1, many + 1)))


def test_big_results_of_objects_or_past_the_size_bound_are_new_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Row:
        pass

    with pytest.raises(NotComparable):
        canonical_result([Row() for _ in range(MAX_VALUES + 1)])
    monkeypatch.setattr(loops, "MAX_RESULT_BYTES", 1000)
    big = list(range(MAX_VALUES + 1))
    with pytest.raises(NotComparable):
        canonical_result(big)
    watch = LoopWatch(RAISE)
    key = watch.key("dump", {})
    assert key is not None
    for turn in range(1, 6):  # never compared: new work, never a repeat
        watch.admit(key, "dump", (turn, 0))
        assert watch.record(key, "dump", big, (turn, 0)) is None
    assert watch.detections == 0
