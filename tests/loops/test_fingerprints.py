"""Fingerprints: objects compared by identity stay apart, big values cost bounded work.

A probe made ten different ``Query`` arguments one after another (a plain class,
compared by identity) and the fourth was refused as "3 identical calls": each
``Query`` was freed after its call and the next one got its address, which was
all the fingerprint knew. And the default guard fingerprinted every argument in
full: 20 MB of bytes took 536 ms a call and 280 MB through their ``repr``.
"""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import Iterator
from functools import partial

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import LoopDetectedError, LoopGuard, agent_session, tool_call
from techrevati.runtime.telemetry.limits.loops import (
    INLINE_TEXT,
    MAX_VALUES,
    LoopWatch,
    NotComparable,
    callable_arguments,
    canonical,
    canonical_result,
)


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


class Query:
    """A plain class with no ``__repr__``: an argument compared by identity."""

    def __init__(self, text: str) -> None:
        self.text = text


class Fetcher:
    """A callable object ``run_tool`` is given (no ``__code__``)."""

    def __init__(self, page: int) -> None:
        self.page = page

    def __call__(self) -> str:
        return "sent"


RAISE = LoopGuard(on_loop="raise")


def test_new_objects_at_a_freed_address_are_new_arguments(otel: Otel) -> None:
    @tool_call()
    def search(q: Query) -> list[str]:
        return []  # different queries, the same empty result: progress

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()):
        for i in range(10):
            search(Query(f"query number {i}"))  # freed after its call
        same = Query("again")
        for _ in range(3):
            search(same)  # one object asked for again and again is still a loop
        with pytest.raises(LoopDetectedError):
            search(same)


def test_callable_objects_and_partials_of_new_functions_are_new_calls(otel: Otel) -> None:
    with agent_session("r", loop_guard=RAISE, **otel.kwargs()) as session:
        for i in range(10):
            assert session.run_tool("send_email", Fetcher(i)) == "sent"
        for i in range(10):

            def send(n: int = i) -> str:
                return "sent"

            session.run_tool("send_email", partial(send))  # a new function each time


def test_an_unweakrefable_object_is_compared_while_the_watch_holds_it() -> None:
    with pytest.raises(NotComparable):  # no watch to hold it: never compared
        canonical(callable_arguments([].append))
    watch = LoopWatch(RAISE)
    token = object()
    first = watch.key("use", {"token": token})
    assert first is not None and first == watch.key("use", {"token": token})
    # Fresh objects, each dropped at once: held by the watch, so no address is reused
    # while it may still be compared (was: never compared, a loop never seen).
    assert len({watch.key("use", {"token": object()}) for _ in range(100)}) == 100
    small = LoopWatch(LoopGuard(repeats=2, window=6))  # holds 12 such objects
    kept = small.key("use", {"token": token})
    for _ in range(12):
        small.key("use", {"token": object()})
    assert small.key("use", {"token": token}) != kept  # let go: a repeat missed, never invented


def test_builtins_and_bound_methods_keep_their_identity() -> None:
    assert canonical(callable_arguments(len)) == canonical(callable_arguments(len))
    assert canonical({"f": len}) != canonical({"f": abs})
    query = Query("x")
    assert canonical(callable_arguments(partial(query.__init__, "y"))) == canonical(
        callable_arguments(partial(query.__init__, "y"))
    )


def test_big_bytes_are_hashed_not_copied() -> None:
    data = b"\x00\x01" * 10_000_000  # 20 MB
    tracemalloc.start()
    try:
        first = canonical({"data": data})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # was 280 MB (its repr, then that escaped as JSON)
    assert len(first) < 200
    assert canonical({"data": bytes(data)}) == first
    assert canonical({"data": data[:-1] + b"\x02"}) != first
    grown = bytearray(data)
    assert canonical({"data": grown}) != first  # another type
    assert canonical({"data": bytearray(data)}) == canonical({"data": grown})


def test_long_text_is_hashed_and_still_compared() -> None:
    text = "a" * (INLINE_TEXT * 4)
    written = canonical({"q": text, "n": [1]})
    assert text not in written
    assert written == canonical({"n": [1], "q": "a" * (INLINE_TEXT * 4)})
    assert written != canonical({"q": text[:-1] + "b", "n": [1]})
    assert canonical_result([text]) != canonical_result([text + " "])
    assert canonical({text: 1, "x": [2]}) != canonical({text + "!": 1, "x": [2]})


@pytest.mark.parametrize(
    "value",
    [
        list(range(MAX_VALUES + 1)),
        [{"id": i} for i in range(MAX_VALUES // 2 + 1)],
        {i: i for i in range(MAX_VALUES + 1)},
        {"rows": [[i] for i in range(MAX_VALUES)]},
        set(range(MAX_VALUES + 1)),
    ],
    ids=["list", "list of dicts", "dict with int keys", "nested", "set"],
)
def test_a_value_past_the_budget_is_not_compared_as_arguments_but_exactly_as_a_result(
    value: object,
) -> None:
    with pytest.raises(NotComparable):
        canonical(value)
    written = canonical_result(value)  # was: NotComparable, a runaway never seen
    assert len(written) < 100
    assert canonical_result(copy.deepcopy(value)) == written


def test_big_arguments_never_make_a_loop_and_cost_bounded_work(otel: Otel) -> None:
    rows = list(range(1_000_000))
    ran = []

    @tool_call()
    def upload(data: list[int]) -> str:
        ran.append(len(data))
        return "ok"

    with agent_session("r", loop_guard=RAISE, **otel.kwargs()):
        for _ in range(5):
            upload(rows)  # not compared: never refused
    assert len(ran) == 5
    watch = LoopWatch(RAISE)
    assert watch.key("upload", {"data": rows}) is None
    assert watch.key("upload", {"data": rows[: MAX_VALUES // 2]}) is not None
