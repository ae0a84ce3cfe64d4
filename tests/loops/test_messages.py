"""A loop's message says what was seen, so a user can act on it.

A probe: a cycle of one tool with two argument sets read "cycle of send_email ->
send_email: 3 rounds of its 2 calls", which says nothing of what the two calls are; and
a cycle reported at its 5th call (2 rounds and a half) said "3 rounds".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import LoopDetectedError, LoopGuard, agent_session, tool_call

RAISE = LoopGuard(on_loop="raise")


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "techrevati.runtime.loops"]


def test_a_cycle_of_one_tool_says_its_arguments_take_turns(otel: Otel) -> None:
    @tool_call()
    def send_email(to: str) -> str:
        return "sent"

    with (
        agent_session("mailer", loop_guard=RAISE, **otel.kwargs()),
        pytest.raises(LoopDetectedError) as caught,
    ):
        for _ in range(5):
            send_email("a@x.test")
            send_email("b@x.test")
    assert caught.value.tools == ("send_email", "send_email")
    assert str(caught.value).startswith(
        "tool 'send_email' is looping (cycle of send_email -> send_email: send_email called "
        "with 2 different sets of arguments in turn, all returning one result): 3 rounds of "
        "its 2 calls returned the same results"
    )


def test_a_cycle_of_one_tool_says_its_results_alternate(otel: Otel) -> None:
    @tool_call()
    def read_page(page: int) -> str:
        return f"page {page}"

    with (
        agent_session("reader", loop_guard=RAISE, **otel.kwargs()),
        pytest.raises(LoopDetectedError) as caught,
    ):
        for _ in range(5):
            read_page(1)
            read_page(2)
    assert "read_page called with 2 different sets of arguments in turn, their results " in str(
        caught.value
    )
    assert "alternating with them): 3 rounds of its 2 calls" in str(caught.value)


def test_a_cycle_is_counted_as_seen(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    """Found at its 5th call: 2 rounds and the 1st call of a 3rd, not "3 rounds"."""
    ran: list[str] = []

    @tool_call()
    def search(q: str) -> list[str]:
        ran.append("search")
        return []

    @tool_call()
    def open_page(url: str) -> str:
        ran.append("open")
        return "<html/>"

    with (
        caplog.at_level(logging.WARNING, logger="techrevati.runtime.loops"),
        agent_session("browser", loop_guard=RAISE, **otel.kwargs()),
    ):
        for _ in range(2):
            search("x")
            open_page("u")
        search("x")  # the 5th call: the cycle is found
        with pytest.raises(LoopDetectedError) as caught:
            search("x")  # the 6th, refused
    assert len(ran) == 5
    [warned] = warnings(caplog)
    assert (
        "(cycle of search -> open_page): 2 rounds of its 2 calls, then search again "
        "(5 calls), returned the same results" in warned
    )
    assert caught.value.calls == 5
    assert (
        "(cycle of search -> open_page): 2 rounds of its 2 calls, then search again "
        "(5 calls), returned the same results, so this call was refused" in str(caught.value)
    )


def test_a_cycle_refused_later_counts_what_ran_since(otel: Otel) -> None:
    """Found at call 5, refused at call 7: by then 3 whole rounds had run."""

    @tool_call()
    def search(q: str) -> list[str]:
        return []

    @tool_call()
    def open_page(url: str) -> str:
        return "<html/>"

    with (
        agent_session("browser", loop_guard=RAISE, **otel.kwargs()),
        pytest.raises(LoopDetectedError) as caught,
    ):
        for _ in range(4):
            search("x")
            open_page("u")
    assert caught.value.calls == 6
    assert "3 rounds of its 2 calls returned the same results" in str(caught.value)


def test_describe_loop_counts() -> None:
    from techrevati.runtime.telemetry.limits.errors import LoopFacts, describe_loop

    assert describe_loop("cycle", ("a", "b"), 3) == (
        "(cycle of a -> b): 3 rounds of its 2 calls returned the same results"
    )
    assert describe_loop("cycle", ("a", "b", "c"), 3, facts=LoopFacts(calls=8)) == (
        "(cycle of a -> b -> c): 2 rounds of its 3 calls, then a -> b again (8 calls), "
        "returned the same results"
    )
    assert describe_loop("cycle", ("a", "a"), 3, facts=LoopFacts(calls=5)) == (
        "(cycle of a -> a: a called with 2 different sets of arguments in turn, all "
        "returning one result): 2 rounds of its 2 calls, then a (its 1st arguments) again "
        "(5 calls), returned the same results"
    )
    assert describe_loop("repeat", ("a",), 3, facts=LoopFacts(turns=True)) == (
        "(repeat): the same call in 3 model turns returned the same result"
    )


@pytest.mark.parametrize(
    ("tools", "repeats", "found_at", "refused_at", "then"),
    [
        (
            ("search", "open_page"),
            3,
            5,
            7,
            "the loop's next call of search, at the start of its 4th round (open_page runs "
            "first), will raise",
        ),
        (
            ("search", "open_page"),
            4,
            7,
            9,
            "the loop's next call of search, at the start of its 5th round (open_page runs "
            "first), will raise",
        ),
        (
            ("search", "open_page", "summarise"),
            2,
            6,
            9,
            "the loop's next call of summarise (search and open_page run first) will raise",
        ),
    ],
)
def test_a_cycle_warning_names_the_call_it_refuses(
    otel: Otel,
    caplog: pytest.LogCaptureFixture,
    tools: tuple[str, ...],
    repeats: int,
    found_at: int,
    refused_at: int,
    then: str,
) -> None:
    """A probe: found at call 5, the warning said "the loop's next call will raise", but
    call 6 (open_page) ran and call 7 (search) was the one refused."""
    ran: list[str] = []

    def make(name: str) -> object:
        @tool_call(name)
        def tool() -> str:
            ran.append(name)
            return f"what {name} returns"

        return tool

    calls = [make(name) for name in tools]
    with (
        caplog.at_level(logging.WARNING, logger="techrevati.runtime.loops"),
        agent_session(
            "browser", loop_guard=LoopGuard(repeats=repeats, on_loop="raise"), **otel.kwargs()
        ),
        pytest.raises(LoopDetectedError) as caught,
    ):
        for index in range(20):
            # Found at this call, not before: the calls after it up to the one named run.
            assert bool(warnings(caplog)) == (len(ran) >= found_at)
            calls[index % len(tools)]()  # type: ignore[operator]
    assert len(ran) == refused_at - 1  # every call before the one named ran
    # The refused call is the one the warning named.
    assert caught.value.tool == tools[len(ran) % len(tools)]
    assert f"next call of {caught.value.tool}" in then
    [warned] = warnings(caplog)
    assert f"; {then} LoopDetectedError. Reported once per session." in warned


def test_refused_next_names_each_pattern() -> None:
    from techrevati.runtime.telemetry.limits.errors import LoopFacts, refused_next

    assert refused_next("repeat", ("a",), LoopFacts()) == "the loop's next call"
    assert refused_next("interleaved", ("a",), LoopFacts()) == "the next identical call of a"
    assert refused_next("cycle", ("a", "a"), LoopFacts(calls=21)) == (
        "the loop's next call of a (its 1st arguments), at the start of its 12th round "
        "(a (its 2nd arguments) runs first),"
    )
    assert refused_next("cycle", ("a", "b", "c"), LoopFacts(calls=61)) == (
        "the loop's next call of a, at the start of its 22nd round (b and c run first),"
    )
    assert refused_next("cycle", ("c", "a", "b"), LoopFacts(calls=6)) == (
        "the loop's next call of c (a and b run first)"
    )
