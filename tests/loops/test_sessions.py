"""Loop detection in sessions: the default warns once, "raise" refuses before the body.

Real OpenTelemetry SDK pipelines in memory (``otel_harness``); tools are plain
functions decorated with ``@tool_call`` or run with ``run_tool`` / ``arun_tool``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import (
    LoopDetectedError,
    LoopGuard,
    Orchestrator,
    agent_session,
    tool_call,
)
from techrevati.runtime.telemetry import semconv as sc

SECRET = "s3cret-query-text"


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


class Tools:
    """Tools that count how often their body ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

        @tool_call("search")
        def search(q: str) -> list[str]:
            self.ran.append(f"search {q}")
            return ["no hits"]

        @tool_call("open_page")
        def open_page(url: str) -> str:
            self.ran.append(f"open {url}")
            return "<html/>"

        @tool_call("job_status")
        def job_status(job: int, _state: list[int]) -> str:
            self.ran.append("status")
            _state[0] += 10
            return f"{_state[0]}%"

        self.search = search
        self.open_page = open_page
        self.job_status = job_status


def events(otel: Otel, name: str) -> list[dict[str, Any]]:
    return [
        dict(event.attributes or {})
        for span in otel.spans("invoke_agent")
        for event in span.events
        if event.name == name
    ]


def test_default_guard_warns_once_and_never_stops(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    tools = Tools()
    with (
        caplog.at_level(logging.WARNING, logger="techrevati.runtime.loops"),
        agent_session("researcher", **otel.kwargs()),
    ):
        for _ in range(6):
            tools.search(SECRET)
        for _ in range(4):
            tools.open_page("https://example.test")
    assert len(tools.ran) == 10  # warn mode: every call ran
    found = events(otel, sc.EVENT_LOOP_DETECTED)
    assert [(e[sc.LOOP_PATTERN], e[sc.GEN_AI_TOOL_NAME], e[sc.LOOP_ACTION]) for e in found] == [
        ("repeat", "search", "warn"),
        ("repeat", "open_page", "warn"),
    ]
    assert found[0][sc.LOOP_TOOLS] == ("search",)
    assert found[0][sc.LOOP_REPEATS] == 3
    warned = [r for r in caplog.records if r.name == "techrevati.runtime.loops"]
    assert len(warned) == 1  # one warning per session
    assert "'researcher'" in warned[0].getMessage()
    session = otel.span("invoke_agent researcher")
    assert session.attributes is not None
    assert session.attributes[sc.SESSION_LOOPS] == 2
    assert otel.metric_sum(sc.METRIC_LOOP_DETECTIONS, gen_ai__tool__name="search") == 1
    assert (
        otel.metric_sum(
            sc.METRIC_LOOP_DETECTIONS,
            techrevati__loop__pattern="repeat",
            gen_ai__agent__name="researcher",
        )
        == 2
    )
    # Fingerprints never leave the process: no argument or result text anywhere.
    exported = json.dumps(
        [
            [dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events]]
            for s in otel.spans()
        ],
        default=str,
    )
    assert SECRET not in exported
    assert "no hits" not in exported


def test_each_session_warns_once(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    tools = Tools()
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.loops"):
        for _ in range(2):
            with agent_session("researcher", **otel.kwargs()):
                for _ in range(4):
                    tools.search("x")
    assert len([r for r in caplog.records if r.name == "techrevati.runtime.loops"]) == 2


def test_raise_refuses_the_fourth_identical_call_before_its_body(otel: Otel) -> None:
    tools = Tools()
    with agent_session(
        "researcher", loop_guard=LoopGuard(repeats=3, on_loop="raise"), **otel.kwargs()
    ):
        for _ in range(3):
            tools.search("x")
        with pytest.raises(LoopDetectedError) as caught:
            tools.search("x")
        assert tools.ran == ["search x"] * 3  # the body never ran a 4th time
        assert (caught.value.pattern, caught.value.tool, caught.value.repeats) == (
            "repeat",
            "search",
            3,
        )
        tools.search("y")  # other calls still run
        with pytest.raises(LoopDetectedError):
            tools.search("x")  # and the loop stays refused
    refused = [
        s
        for s in otel.spans("execute_tool search")
        if (s.attributes or {}).get(sc.ERROR_TYPE) == "LoopDetectedError"
    ]
    assert len(refused) == 2
    hits = events(otel, sc.EVENT_LIMIT_HIT)
    assert [h[sc.LIMIT_KIND] for h in hits] == ["loop"]  # one limit hit per session
    assert otel.metric_sum(sc.METRIC_LIMIT_HITS, techrevati__limit__kind="loop") == 1
    assert len(events(otel, sc.EVENT_LOOP_DETECTED)) == 1


def test_a_cycle_is_stopped_within_three_cycles(otel: Otel) -> None:
    tools = Tools()
    with (
        agent_session("browser", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()),
        pytest.raises(LoopDetectedError) as caught,
    ):
        for _ in range(10):
            tools.search("x")
            tools.open_page("u")
    assert len(tools.ran) == 6  # three whole cycles ran, the 4th was refused at its start
    assert caught.value.pattern == "cycle"
    # It read "tool 'search' is looping (cycle): 3 identical calls returned the same
    # result": open_page left out, and 6 calls counted as 3.
    assert caught.value.tools == ("search", "open_page")
    assert str(caught.value).startswith(
        "tool 'search' is looping (cycle of search -> open_page): 3 rounds of its 2 calls "
        "returned the same results, so this call was refused before it ran"
    )
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.tools, str(again)) == (caught.value.tools, str(caught.value))
    assert "3 rounds of its 2 calls" in str(caught.value.at_model_call())
    assert [e[sc.LOOP_TOOLS] for e in events(otel, sc.EVENT_LOOP_DETECTED)] == [
        ("search", "open_page")
    ]


def test_polling_retries_and_generators_are_progress(otel: Otel) -> None:
    tools = Tools()
    failures = [0]

    @tool_call("flaky")
    def flaky() -> str:
        failures[0] += 1
        if failures[0] <= 4:
            raise ConnectionError("down")
        return "up"

    @tool_call("stream")
    def stream() -> Iterator[int]:
        yield 1

    state = [0]
    with agent_session("poller", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        for _ in range(8):
            tools.job_status(7, state)
        for _ in range(5):
            with contextlib.suppress(ConnectionError):
                flaky()
        for _ in range(5):
            assert list(stream()) == [1]
    assert events(otel, sc.EVENT_LOOP_DETECTED) == []


def test_loop_guard_none_turns_detection_off(otel: Otel) -> None:
    tools = Tools()
    with agent_session("researcher", loop_guard=None, **otel.kwargs()) as session:
        for _ in range(10):
            tools.search("x")
        assert session._scope is not None and session._scope.loops is None
    assert events(otel, sc.EVENT_LOOP_DETECTED) == []
    assert sc.SESSION_LOOPS not in (otel.span("invoke_agent researcher").attributes or {})


def test_run_tool_reads_what_the_callable_was_bound_to(otel: Otel) -> None:
    ran: list[str] = []

    def lookup(term: str) -> str:
        ran.append(term)
        return "not found"

    orch = Orchestrator(role="r", phase="p", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs())
    with orch.session() as session:
        for term in "abcdef":  # different arguments, same result: progress
            session.run_tool("lookup", lambda: lookup(term))  # noqa: B023 (called at once)
        for _ in range(3):
            session.run_tool("lookup", partial(lookup, "z"))
        with pytest.raises(LoopDetectedError):
            session.run_tool("lookup", partial(lookup, "z"))
        for _ in range(3):
            session.run_tool("lookup", lambda: lookup("q"), arguments={"term": "q"})
        with pytest.raises(LoopDetectedError):
            session.run_tool("lookup", lambda: lookup("other"), arguments={"term": "q"})
    assert ran == [*"abcdef", "z", "z", "z", "q", "q", "q"]


def test_arun_tool_refuses_too(otel: Otel) -> None:
    async def main() -> int:
        ran = 0

        async def fetch() -> str:
            nonlocal ran
            ran += 1
            return "same"

        orch = Orchestrator(
            role="r", phase="p", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()
        )
        async with orch.asession() as session:
            for _ in range(3):
                await session.arun_tool("fetch", fetch, arguments={"url": "u"})
            with pytest.raises(LoopDetectedError):
                await session.arun_tool("fetch", fetch, arguments={"url": "u"})
        return ran

    assert asyncio.run(main()) == 3


def test_a_fingerprint_that_fails_never_breaks_the_tool(otel: Otel) -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    @tool_call("use")
    def use(thing: object) -> str:
        return "ok"

    with agent_session("r", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        for _ in range(5):
            assert use(Hostile()) == "ok"

        @tool_call("give")
        def give() -> object:
            return Hostile()

        for _ in range(5):
            give()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"loop_guard": "raise"}, TypeError, "loop_guard must be a LoopGuard or None, got str"),
        ({"wrap_up_at": 0}, ValueError, "wrap_up_at must be > 0 and <= 1"),
        ({"wrap_up_at": 1.5}, ValueError, "got 1.5"),
        ({"wrap_up_at": "0.8"}, TypeError, "wrap_up_at must be a number between 0 and 1"),
        ({"on_wrap_up": 3}, TypeError, "on_wrap_up must be callable, got 3"),
    ],
)
def test_bad_options_name_the_value(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        Orchestrator(role="r", phase="p", **kwargs)
    assert message in str(caught.value)
    with pytest.raises(error):
        agent_session("r", **kwargs)


def test_a_finished_session_keeps_no_fingerprints(otel: Otel) -> None:
    tools = Tools()
    with agent_session("researcher", **otel.kwargs()) as session:
        for i in range(10):
            tools.search(f"q{i}")
        watch = session._scope.loops if session._scope is not None else None
        assert watch is not None and len(watch._seen) == 10
    assert len(watch._seen) == 0 and len(watch._recent) == 0
    tools.search("after")  # a late call of a closed session's block is harmless


def test_a_plan_re_read_between_pages_is_never_refused(otel: Otel) -> None:
    """The probe's agent: the same plan read before each page of a listing."""
    ran: list[str] = []

    @tool_call("read_plan")
    def read_plan() -> str:
        ran.append("plan")
        return "1. list every order 2. total them"

    @tool_call("list_orders")
    def list_orders(page: int) -> list[str]:
        ran.append(f"page {page}")
        return [f"order {page}-{i}" for i in range(3)]

    with agent_session("clerk", loop_guard=LoopGuard(repeats=3, on_loop="raise"), **otel.kwargs()):
        for page in range(1, 11):
            read_plan()
            list_orders(page)
    assert ran.count("plan") == 10 and ran[-1] == "page 10"
    assert events(otel, sc.EVENT_LOOP_DETECTED) == []


def test_the_plan_re_read_between_calls_that_teach_nothing_is_a_loop(otel: Otel) -> None:
    """The same shape with pages that return what was seen already: refused."""

    @tool_call("read_plan")
    def read_plan() -> str:
        return "1. list every order 2. total them"

    @tool_call("list_orders")
    def list_orders(page: int) -> list[str]:
        return []  # past the last page: nothing new

    with agent_session("clerk", loop_guard=LoopGuard(repeats=3, on_loop="raise"), **otel.kwargs()):
        read_plan()
        list_orders(1)  # [] is new when it returns ...
        read_plan()
        list_orders(2)  # ... and seen already once this returns it again
        read_plan()  # 3 identical plans with nothing new between: a loop
        list_orders(3)
        with pytest.raises(LoopDetectedError):
            read_plan()


def test_a_result_compared_by_its_repr_is_never_the_same(otel: Otel) -> None:
    """A probe polled a job whose HTTP response body advanced 10% -> 40% -> 70% -> done:
    refused after 3 polls, every ``httpx.Response`` being ``<Response [200 OK]>``."""
    httpx = pytest.importorskip("httpx")
    pydantic = pytest.importorskip("pydantic")
    progress = iter(["10%", "40%", "70%", "done"])

    @tool_call()
    def check_job(job_id: str) -> Any:
        return httpx.Response(200, json={"job": job_id, "progress": next(progress)})

    class Status(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        state: str

    @tool_call()
    def status(job_id: str) -> Any:
        return Status(state="running")

    seen = []
    with agent_session("poller", loop_guard=LoopGuard(on_loop="raise"), **otel.kwargs()):
        while not seen or seen[-1] != "done":
            seen.append(check_job("j1").json()["progress"])
        # A pydantic model is compared by its content: the same status is a loop.
        for _ in range(3):
            status("j1")
        with pytest.raises(LoopDetectedError):
            status("j1")
    assert seen == ["10%", "40%", "70%", "done"]


def test_a_methods_object_is_part_of_its_call(otel: Otel) -> None:
    """A probe: Server(host).health() for four hosts was refused at db-4, the decorator
    leaving ``self`` out (run_tool(name, obj.method) kept it). Both entry points now
    count the bound object, kept alive while remembered so a new one never reuses its id."""

    class Server:
        def __init__(self, host: str) -> None:
            self.host = host

        @tool_call()
        def health(self) -> str:
            return "healthy"

        def ping(self) -> str:
            return "pong"

    guard = LoopGuard(on_loop="raise")
    with agent_session("ops", loop_guard=guard, **otel.kwargs()) as session:
        for host in ["db-1", "db-2", "db-3", "db-4", "db-5"]:
            Server(host).health()  # a new object each time, freed after the call
            session.run_tool("ping", Server(host).ping)
        same = Server("db-1")
        for _ in range(3):
            same.health()
            session.run_tool("ping", same.ping)
        with pytest.raises(LoopDetectedError):
            same.health()
        with pytest.raises(LoopDetectedError):
            session.run_tool("ping", same.ping)


#: A script's loop variable, read by its lambdas as a module global (no closure).
QUERY = ""


def _search(query: str) -> str:
    return "no results"  # every query finds nothing: the results repeat, the calls do not


def test_a_lambda_reading_a_global_loop_variable_is_a_new_call_for_each_value(
    otel: Otel,
) -> None:
    # At a script's or a notebook's top level, lambda: search(q) reads q as a global:
    # its fingerprint saw only its code, so four different queries that all found
    # nothing were refused at the fourth as "3 identical calls".
    global QUERY
    guard = LoopGuard(on_loop="raise")
    with agent_session("w", loop_guard=guard, **otel.kwargs()) as session:
        for QUERY in ["pricing", "price list", "cost", "fees", "tariff"]:
            session.run_tool("search", lambda: _search(QUERY))  # noqa: B023 (the case)
        QUERY = "pricing"
        with pytest.raises(LoopDetectedError):
            for _ in range(4):  # the same query asked again and again is still a loop
                session.run_tool("search", lambda: _search(QUERY))
