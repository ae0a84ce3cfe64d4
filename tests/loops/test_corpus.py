"""The loop rule on a corpus of tool-call sequences: loops caught, progress never stopped.

Each sequence is a list of calls ``(tool, arguments, result)`` (``FAIL`` for a
call that raised). A loop sequence names the index of the first call that must
be refused before it runs (``on_loop="raise"``, ``repeats=3``); a progress
sequence must run to its end with no refusal and no detection.

Measured on this corpus (``test_rates``): 21 loop and 30 progress sequences;
every loop refused exactly at the expected call; false-positive rate 0/30 = 0.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass
from typing import Any

import pytest

from techrevati.runtime import LoopDetectedError, LoopGuard
from techrevati.runtime.telemetry.limits.loops import (
    PATTERN_CYCLE,
    PATTERN_INTERLEAVED,
    PATTERN_REPEAT,
    Detection,
    LoopWatch,
    NotComparable,
    callable_arguments,
    canonical,
    canonical_arguments_text,
    canonical_result,
    canonical_result_text,
)

FAIL = object()  # the call raised


class Connection:
    """An argument JSON cannot carry, with no value to compare: it stands for itself."""


CONN = Connection()


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    """A value whose repr hides what it holds: never compared (the probe's
    httpx.Response, ``<Response [200 OK]>`` whatever its body)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Opaque({self.name!r})"


Call = tuple[str, Any, Any]
RAISE = LoopGuard(repeats=3, on_loop="raise")


@dataclass(frozen=True)
class Case:
    name: str
    calls: list[Call]
    refused_at: int | None  # None: progress, never refused
    pattern: str | None = None
    guard: LoopGuard = RAISE


def times(n: int, call: Call) -> list[Call]:
    return [call] * n


A = ("search", {"q": "pricing"}, ["no hits"])
B = ("open_page", {"url": "https://example.test/a"}, "<html>a</html>")
C = ("summarise", {"text": "a"}, "summary a")
X1 = ("calc", {"x": 1}, 2)
X2 = ("calc", {"x": 2}, 3)

LOOPS = [
    Case("same call, same result, 4 times", times(4, A), 3, PATTERN_REPEAT),
    Case(
        "argument key order is irrelevant",
        [
            ("lookup", {"a": 1, "b": 2}, "x"),
            ("lookup", {"b": 2, "a": 1}, "x"),
            ("lookup", {"a": 1, "b": 2}, "x"),
            ("lookup", {"b": 2, "a": 1}, "x"),
        ],
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "tool names normalised",
        [
            ("Web-Search", {"q": "x"}, "r"),
            ("web_search", {"q": "x"}, "r"),
            ("web search", {"q": "x"}, "r"),
            ("WEB_SEARCH", {"q": "x"}, "r"),
        ],
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "result key order is irrelevant",
        [
            ("stat", {"p": "/a"}, {"size": 1, "mode": "r"}),
            ("stat", {"p": "/a"}, {"mode": "r", "size": 1}),
            ("stat", {"p": "/a"}, {"size": 1, "mode": "r"}),
            ("stat", {"p": "/a"}, {"size": 1, "mode": "r"}),
        ],
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "interleaved with work that repeats too",
        [X1, X2, A, X1, A, X2, A, A],
        7,
        PATTERN_INTERLEAVED,
    ),
    Case("ping-pong A-B-A-B", [A, B, A, B, A, B, A], 6, PATTERN_CYCLE),
    Case("three-call cycle A-B-C", [A, B, C, A, B, C, A, B, C, A], 9, PATTERN_CYCLE),
    Case(
        "cycle over one tool with three arguments",
        [("search", {"q": q}, "none") for q in "xyzxyzxyzx"],
        9,
        PATTERN_CYCLE,
    ),
    Case(
        "back-and-forth navigation",
        [
            ("click", {"id": "next"}, "page 2"),
            ("click", {"id": "back"}, "page 1"),
        ]
        * 4,
        6,
        PATTERN_CYCLE,
    ),
    Case("same result after one failure", [(*A[:2], FAIL), *times(4, A)], 4, PATTERN_REPEAT),
    Case(
        "runaway stand-in: always the same query",
        times(5, ("lookup", {"query": "again"}, "the same answer")),
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "weather asked again and again (LangChain #37961)",
        times(6, ("get_weather", {"city": "Paris"}, {"temp_c": 18, "sky": "clear"})),
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "arguments JSON cannot carry",
        times(4, ("query_db", {"conn": CONN, "sql": "select 1"}, [[1]])),
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "writing the same file again",
        times(4, ("write_file", {"path": "a.py", "text": "print(1)"}, "ok")),
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "a stalled poll (result never changes)",
        times(4, ("job_status", {"id": 7}, {"state": "running"})),
        3,
        PATTERN_REPEAT,
    ),
    Case(
        "loop after earlier progress",
        [A, ("poll", {}, 1), ("poll", {}, 2), A, A, A, A],
        6,
        PATTERN_REPEAT,
    ),
    Case(
        "repeats=4 waits one call longer",
        times(5, A),
        4,
        PATTERN_REPEAT,
        LoopGuard(repeats=4, on_loop="raise"),
    ),
    Case("repeats=2", times(3, A), 2, PATTERN_REPEAT, LoopGuard(repeats=2, on_loop="raise")),
    Case(
        "cycle with an ignored heartbeat between",
        [A, ("heartbeat", {}, "ok"), B, A, ("heartbeat", {}, "ok"), B, A, B, A],
        8,
        PATTERN_CYCLE,
        LoopGuard(on_loop="raise", ignore={"heartbeat"}),
    ),
    Case(
        "interleaved with failing work",
        [A, ("fetch", {"u": 1}, FAIL), A, ("fetch", {"u": 2}, FAIL), A, A],
        5,
        PATTERN_INTERLEAVED,
    ),
    Case(
        "scalar and None results",
        times(4, ("sleep_then_check", None, None)),
        3,
        PATTERN_REPEAT,
    ),
]

PROGRESS = [
    Case(
        "a result whose repr hides its changes (a probe: refused after 3 polls)",
        [("check_job", {"id": "j1"}, Opaque(p)) for p in ("10%", "40%", "70%", "done")],
        None,
    ),
    Case(
        "polling until done",
        [("job_status", {"id": 7}, f"{p}%") for p in (10, 40, 80)]
        + [("job_status", {"id": 7}, "done")],
        None,
    ),
    Case(
        "polling with short plateaus",
        [("job_status", {"id": 7}, s) for s in ("queued", "queued", "running", "running", "done")],
        None,
    ),
    Case(
        "two identical results then a different one",
        [A, A, (*A[:2], ["one hit"])],
        None,
    ),
    Case(
        "pagination",
        [("list", {"cursor": c}, f"page {c}") for c in (None, "c1", "c2", "c3", "c4", "c5")],
        None,
    ),
    Case(
        "pagination over empty pages",
        [("list", {"cursor": c}, []) for c in ("c1", "c2", "c3", "c4", "c5")],
        None,
    ),
    Case(
        "different arguments, same result",
        [("lookup", {"term": t}, "not found") for t in "abcdefgh"],
        None,
    ),
    Case(
        "same result from different argument values (calculator)",
        [("add", {"a": a, "b": 3 - a}, 3) for a in range(6)],
        None,
    ),
    Case("retry after exceptions", [*times(5, (*A[:2], FAIL)), A], None),
    Case(
        "retry after each exception",
        [A, (*A[:2], FAIL), A, (*A[:2], FAIL), A, A],
        None,
    ),
    Case(
        "sleep between polls of a job that advances",
        [
            step
            for p in (10, 30, 50, 70, 90)
            for step in (("sleep", {"s": 5}, None), ("job_status", {"id": 1}, p))
        ],
        None,
    ),
    Case(
        "oscillating result",
        [("toggle", {}, "on" if i % 2 else "off") for i in range(8)],
        None,
    ),
    Case("a counter", [("next_id", {}, i) for i in range(8)], None),
    Case(
        "a growing log",
        [("read_log", {"path": "x.log"}, "line\n" * i) for i in range(1, 8)],
        None,
    ),
    Case(
        "plan then distinct steps",
        [("step", {"n": i}, "ok") for i in range(12)],
        None,
    ),
    Case("a repeat exactly twice", [A, A, B, C], None),
    Case(
        "ping-pong where one side advances",
        [
            step
            for p in range(5)
            for step in (("check", {"job": 1}, "running"), ("progress", {"job": 1}, p))
        ],
        None,
    ),
    Case(
        "three-call cycle where one call advances",
        [step for p in range(4) for step in (A, B, ("tick", {}, p))],
        None,
    ),
    Case(
        "ignored heartbeat",
        times(10, ("heartbeat", {}, "ok")),
        None,
        guard=LoopGuard(on_loop="raise", ignore={"heartbeat"}),
    ),
    Case(
        "re-read after each edit",
        [
            step
            for i in range(4)
            for step in (
                ("read_file", {"path": "a.py"}, f"v{i}"),
                ("write_file", {"path": "a.py", "text": f"v{i + 1}"}, "ok"),
            )
        ],
        None,
    ),
    Case(
        "search with a growing limit",
        [("search", {"q": "x", "k": k}, ["same"] * 2) for k in (5, 10, 20, 40)],
        None,
    ),
    Case(
        "two jobs polled in turn, both advancing",
        [
            step
            for p in range(5)
            for step in (("status", {"job": 1}, p * 10), ("status", {"job": 2}, p * 5))
        ],
        None,
    ),
    Case(
        "same call, new argument object each time",
        [("query_db", {"sql": f"select {i}"}, [[1]]) for i in range(6)],
        None,
    ),
    Case(
        "retry of a flaky call that then succeeds twice",
        [(*A[:2], FAIL), A, (*A[:2], FAIL), A, A],
        None,
    ),
    Case(
        "timestamps",
        [("now", {}, f"2026-12-06T00:00:0{i}Z") for i in range(8)],
        None,
    ),
    Case(
        "fetching a changing queue",
        [
            *(("dequeue", {"q": "jobs"}, f"job-{i}") for i in range(6)),
            ("dequeue", {"q": "jobs"}, None),
        ],
        None,
    ),
    Case(
        "a stalled poll, but four repeats allowed",
        [
            *times(4, ("job_status", {"id": 7}, {"state": "running"})),
            ("job_status", {"id": 7}, {"state": "done"}),
        ],
        None,
        guard=LoopGuard(repeats=5, on_loop="raise"),
    ),
    Case(
        "interleaved with new work",
        [A, X1, A, X2, A, ("calc", {"x": 3}, 4), A],
        None,
    ),
    Case(
        "the same plan re-read between the pages of a listing",
        [
            step
            for page in range(1, 6)
            for step in (
                ("read_plan", {}, "1. list every order 2. total them"),
                ("list_orders", {"page": page}, [f"order {page}-{i}" for i in range(3)]),
            )
        ],
        None,
    ),
    Case(
        "identical results from identical calls separated by changes",
        [A, ("tick", {}, 1), A, ("tick", {}, 2), A, ("tick", {}, 3), A],
        None,
    ),
]


def run(case: Case) -> tuple[int | None, list[Detection]]:
    """(index of the first refused call or None, the detections) for one sequence."""
    found: list[Detection] = []
    watch = LoopWatch(case.guard, on_detect=found.append)
    for index, (tool, arguments, result) in enumerate(case.calls):
        key = watch.key(tool, arguments)
        if key is None:
            continue
        try:
            watch.admit(key, tool)
        except LoopDetectedError:
            return index, found
        if result is FAIL:
            watch.failed(key)
        else:
            watch.record(key, tool, result)
    return None, found


@pytest.mark.parametrize("case", LOOPS, ids=[c.name for c in LOOPS])
def test_loops_are_refused_at_the_next_identical_call(case: Case) -> None:
    refused, found = run(case)
    assert refused == case.refused_at
    assert found, "a loop was refused without being reported"
    assert found[0].pattern == case.pattern
    assert found[0].first is True


@pytest.mark.parametrize("case", PROGRESS, ids=[c.name for c in PROGRESS])
def test_progress_is_never_stopped_nor_reported(case: Case) -> None:
    refused, found = run(case)
    assert refused is None
    assert found == []


def test_rates() -> None:
    """The corpus' size and rates, as the docs state them."""
    assert len(LOOPS) + len(PROGRESS) >= 30
    caught = sum(1 for case in LOOPS if run(case)[0] == case.refused_at)
    false_positives = sum(1 for case in PROGRESS if run(case) != (None, []))
    assert (len(LOOPS), len(PROGRESS)) == (21, 30)
    assert caught / len(LOOPS) == 1.0
    assert false_positives / len(PROGRESS) == 0.0


def test_a_cycle_is_one_detection_naming_its_tools_in_order() -> None:
    found: list[Detection] = []
    watch = LoopWatch(LoopGuard(on_loop="warn"), on_detect=found.append)
    for tool, arguments, result in [A, B, C] * 5:
        key = watch.key(tool, arguments)
        assert key is not None
        watch.admit(key, tool)  # warn: never refuses
        watch.record(key, tool, result)
    assert [(d.pattern, d.tools, d.action) for d in found] == [
        (PATTERN_CYCLE, ("search", "open_page", "summarise"), "warn")
    ]


def test_a_loop_that_breaks_and_returns_is_reported_again_but_warned_once() -> None:
    found: list[Detection] = []
    watch = LoopWatch(LoopGuard(on_loop="warn"), on_detect=found.append)
    calls = [*times(3, A), (*A[:2], "new"), *times(3, (*A[:2], "new"))]
    for tool, arguments, result in calls:
        key = watch.key(tool, arguments)
        assert key is not None
        watch.record(key, tool, result)
    assert [d.first for d in found] == [True, False]
    assert watch.detections == 2


def test_memory_is_bounded_by_the_window() -> None:
    watch = LoopWatch(LoopGuard(window=9))
    for i in range(1000):
        key = watch.key("step", {"n": i})
        assert key is not None
        watch.record(key, "step", "ok")
    assert len(watch._seen) == 9
    assert len(watch._recent) == 9


def test_fingerprints_are_canonical() -> None:
    assert canonical({"b": [1, {"d": 2, "c": 3}], "a": 1}) == '{"a":1,"b":[1,{"c":3,"d":2}]}'
    # Mixed key types: one form whatever the order; the int 1 and the text "1" differ.
    assert canonical({1: "x", "b": 2}) == canonical({"b": 2, 1: "x"})
    assert canonical({1: "x"}) != canonical({"1": "x"})
    assert canonical({(1, 2): "x"}) != canonical({(1, 3): "x"})
    # Dataclasses and pydantic models by content; an opaque repr is never compared.
    assert canonical(Point(1, 2)) == canonical(Point(1, 2)) != canonical(Point(1, 3))
    assert canonical_result(Point(1, 2)) != canonical_result(Point(2, 2))
    with pytest.raises(NotComparable):
        canonical(Opaque("a"))
    with pytest.raises(NotComparable):
        canonical_result({"response": Opaque("a")})
    with pytest.raises(NotComparable):
        canonical_result(CONN)  # a result never stands for itself: addresses are reused
    assert canonical({"conn": CONN}) == canonical({"conn": CONN})
    assert canonical("text") == "text"


def test_arguments_of_a_zero_argument_callable() -> None:
    from functools import partial

    def lookup(term: str) -> str:
        return term

    made = [(lambda t=t: lookup(t)) for t in "ab"]
    assert canonical(callable_arguments(made[0])) != canonical(callable_arguments(made[1]))
    assert canonical(callable_arguments(partial(lookup, "a"))) != canonical(
        callable_arguments(partial(lookup, "b"))
    )
    assert canonical(callable_arguments(lambda: lookup("a"))) != canonical(
        callable_arguments(lambda: lookup("b"))
    )

    def bound(term: str) -> object:
        return lambda: lookup(term)

    assert canonical(callable_arguments(bound("a"))) != canonical(callable_arguments(bound("b")))
    assert canonical(callable_arguments(bound("a"))) == canonical(callable_arguments(bound("a")))
    # The same lambda written at another line and column is the same call.
    written = [lambda: lookup("a")]
    for _ in range(1):
        written.append(lambda: lookup("a"))
    assert canonical(callable_arguments(written[0])) == canonical(callable_arguments(written[1]))


@pytest.mark.parametrize(
    ("kwargs", "kind", "message"),
    [
        ({"repeats": 1}, ValueError, "repeats must be an int >= 2, got 1"),
        # A wrong type was a ValueError, and 10**20 blamed the window it was never given.
        ({"repeats": True}, TypeError, "repeats must be an int >= 2, got bool: True"),
        ({"repeats": "3"}, TypeError, "repeats must be an int >= 2, got str: '3'"),
        ({"repeats": 2.5}, TypeError, "repeats must be an int >= 2, got float: 2.5"),
        (
            {"repeats": 10**20},
            ValueError,
            f"repeats must be at most 21 with the default window=64 (window >= 3 * repeats), "
            f"got {10**20}",
        ),
        ({"on_loop": "stop"}, ValueError, "on_loop must be 'raise' or 'warn', got 'stop'"),
        ({"window": 5}, ValueError, "window must be an int >= 3 * repeats (9), got 5"),
        ({"window": True}, TypeError, "window must be an int >= 3 * repeats (9), got bool: True"),
        ({"repeats": 30, "window": 89}, ValueError, "window must be an int >= 3 * repeats (90)"),
        ({"ignore": "sleep"}, TypeError, "ignore must be a collection of tool names, got 'sleep'"),
        ({"ignore": [1]}, TypeError, "ignore holds tool names (str), got 1"),
    ],
)
def test_bad_guard_settings_name_the_value(
    kwargs: dict[str, Any], kind: type[Exception], message: str
) -> None:
    with pytest.raises((ValueError, TypeError)) as caught:
        LoopGuard(**kwargs)
    assert type(caught.value) is kind
    assert message in str(caught.value)


def test_a_guard_with_a_window_that_holds_its_repeats_is_built() -> None:
    guard = LoopGuard(repeats=30, window=90)
    assert (guard.repeats, guard.window) == (30, 90)


def test_the_error_survives_a_pickle_round_trip() -> None:
    error = LoopDetectedError(PATTERN_CYCLE, "search", 3)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is LoopDetectedError
    assert (back.pattern, back.tool, back.repeats, str(back)) == (
        "cycle",
        "search",
        3,
        str(error),
    )


def test_recorded_text_of_other_instrumentations_drops_per_call_ids() -> None:
    """What OpenLLMetry and OpenInference write for LangChain tools (shapes observed in
    the frameworks venv): the graph step's metadata and the model's tool_call_id change
    on every call; the call's input and result do not."""

    def openllmetry_args(step: int, call: str, query: str) -> str:
        return json.dumps(
            {
                "input_str": str({"query": query}),
                "tags": ["seq:step:1"],
                "metadata": {"langgraph_step": step, "checkpoint_ns": f"tools:{step}"},
                "inputs": {"query": query},
                "kwargs": {"color": "green", "name": None, "tool_call_id": call},
            }
        )

    def tool_message(call: str, content: str) -> str:
        return json.dumps(
            {"type": "tool", "data": {"content": content, "id": None, "tool_call_id": call}}
        )

    assert canonical_arguments_text(openllmetry_args(2, "call_1", "x")) == (
        canonical_arguments_text(openllmetry_args(4, "call_2", "x"))
    )
    assert canonical_arguments_text(openllmetry_args(2, "call_1", "x")) != (
        canonical_arguments_text(openllmetry_args(2, "call_1", "y"))
    )
    assert canonical_result_text(tool_message("call_1", "same")) == canonical_result_text(
        tool_message("call_2", "same")
    )
    assert canonical_result_text(tool_message("call_1", "a")) != canonical_result_text(
        tool_message("call_1", "b")
    )
    # A tool's own arguments named like LangChain's bookkeeping are kept when the
    # record is not a LangChain callback's.
    assert canonical_arguments_text('{"metadata": 1}') != canonical_arguments_text(
        '{"metadata": 2}'
    )
    assert canonical_arguments_text("plain text") == "plain text"


def test_new_work_after_a_loop_lets_the_next_identical_call_run() -> None:
    """A loop is refused only while nothing new was learned since its last call."""
    watch = LoopWatch(RAISE)
    key = watch.key(*A[:2])
    other = watch.key("calc", {"x": 9})
    assert key is not None and other is not None
    for _ in range(3):
        watch.record(key, "search", A[2])
    with pytest.raises(LoopDetectedError):
        watch.admit(key, "search")
    watch.record(other, "calc", 99)  # a result no recent call returned
    watch.admit(key, "search")  # runs
    assert watch.refusal(key, "search") is None
    watch.record(key, "search", A[2])  # one identical call since the new work
    watch.admit(key, "search")
    watch.record(key, "search", A[2])
    watch.admit(key, "search")
    watch.record(key, "search", A[2])  # three since: a loop again
    with pytest.raises(LoopDetectedError):
        watch.admit(key, "search")
