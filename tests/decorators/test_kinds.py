"""Decorated functions keep their kind and metadata, and bind on methods of every flavour."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from otel_harness import Otel
from techrevati.runtime import MaxIterationsExceededError
from techrevati.runtime.decorators import agent_session, agent_turn, tool_call

DECORATORS: dict[str, Callable[[Callable[..., Any]], Any]] = {
    "agent_turn()": agent_turn("model-a"),
    "agent_turn bare": agent_turn,
    "tool_call()": tool_call(),
    "tool_call bare": tool_call,
    "agent_session": agent_session("kinds"),
}


def plain(a: int, b: str = "x", *, c: float = 1.0) -> str:
    """Plain doc."""
    return f"{a}{b}{c}"


async def coro(a: int, b: str = "x", *, c: float = 1.0) -> str:
    """Coroutine doc."""
    return f"{a}{b}{c}"


def gen(a: int, b: str = "x", *, c: float = 1.0) -> Iterator[str]:
    """Generator doc."""
    yield f"{a}{b}{c}"


async def agen(a: int, b: str = "x", *, c: float = 1.0) -> AsyncIterator[str]:
    """Async generator doc."""
    yield f"{a}{b}{c}"


KINDS = {
    "function": (plain, (False, False, False)),
    "coroutine": (coro, (True, False, False)),
    "generator": (gen, (False, True, False)),
    "async generator": (agen, (False, False, True)),
}


def _predicates(fn: object) -> tuple[bool, bool, bool]:
    return (
        inspect.iscoroutinefunction(fn),
        inspect.isgeneratorfunction(fn),
        inspect.isasyncgenfunction(fn),
    )


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    if inspect.isasyncgen(result):

        async def collect() -> list[Any]:
            return [x async for x in result]

        return asyncio.run(collect())
    if inspect.isgenerator(result):
        return list(result)
    return result


@pytest.mark.parametrize("deco_name", list(DECORATORS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_name_doc_signature_wrapped(deco_name: str, kind: str) -> None:
    fn, predicates = KINDS[kind]
    decorated = DECORATORS[deco_name](fn)
    assert _predicates(decorated) == predicates
    assert decorated.__name__ == fn.__name__
    assert decorated.__qualname__ == fn.__qualname__
    assert decorated.__doc__ == fn.__doc__
    assert decorated.__module__ == fn.__module__
    assert inspect.signature(decorated) == inspect.signature(fn)
    assert decorated.__wrapped__ is fn
    assert inspect.unwrap(decorated) is fn
    expected = "7y2.0"
    got = _run(decorated, 7, "y", c=2.0)
    assert got == (expected if kind in ("function", "coroutine") else [expected])


class Agent:
    """Methods of every flavour, decorated above and below classmethod/staticmethod."""

    factor = 10

    def __init__(self, base: int) -> None:
        self.base = base

    @agent_turn("model-a")
    def method(self, x: int) -> int:
        """Method doc."""
        return self.base + x

    @agent_turn("model-a")
    async def amethod(self, x: int) -> int:
        return self.base + x

    @agent_turn("model-a")
    def gmethod(self, x: int) -> Iterator[int]:
        yield self.base + x

    @agent_turn("model-a")
    async def agmethod(self, x: int) -> AsyncIterator[int]:
        yield self.base + x

    @agent_turn("model-a")
    @classmethod
    def cls_above(cls, x: int) -> int:
        return cls.factor * x

    @classmethod
    @agent_turn("model-a")
    def cls_below(cls, x: int) -> int:
        return cls.factor * x

    @tool_call()
    @staticmethod
    def static_above(x: int) -> int:
        return x + 1

    @staticmethod
    @tool_call()
    def static_below(x: int) -> int:
        return x + 2

    @tool_call()
    def tool_method(self, x: int) -> int:
        return self.base * x


def test_methods_static_and_class_methods(otel: Otel) -> None:
    agent = Agent(5)
    with agent_session("m", **otel.kwargs()):
        assert agent.method(1) == 6
        assert Agent.method(agent, 2) == 7
        assert asyncio.run(agent.amethod(3)) == 8
        assert list(agent.gmethod(4)) == [9]
        assert _run(agent.agmethod, 5) == [10]
        assert agent.cls_above(2) == 20
        assert Agent.cls_above(3) == 30
        assert agent.cls_below(4) == 40
        assert Agent.static_above(1) == 2
        assert agent.static_above(1) == 2
        assert Agent.static_below(1) == 3
        assert agent.tool_method(3) == 15
    assert len(otel.spans("chat model-a")) == 8
    assert len(otel.spans("execute_tool static_above")) == 2
    assert len(otel.spans("execute_tool static_below")) == 1
    assert len(otel.spans("execute_tool tool_method")) == 1
    # metadata on bound forms
    assert agent.method.__name__ == "method"
    assert agent.method.__doc__ == "Method doc."
    assert list(inspect.signature(agent.method).parameters) == ["x"]
    assert inspect.iscoroutinefunction(agent.amethod)
    assert inspect.isgeneratorfunction(agent.gmethod)
    assert inspect.isasyncgenfunction(agent.agmethod)


def test_tool_name_defaults_to_function_name_and_can_be_given(otel: Otel) -> None:
    @tool_call("db.lookup")
    def named(x: int) -> int:
        return x

    @tool_call
    def unnamed(x: int) -> int:
        return x

    with agent_session("t", **otel.kwargs()):
        named(1)
        unnamed(2)
    assert dict(otel.span("execute_tool db.lookup").attributes or {})["gen_ai.tool.name"] == (
        "db.lookup"
    )
    assert dict(otel.span("execute_tool unnamed").attributes or {})["gen_ai.tool.name"] == (
        "unnamed"
    )


def test_a_sync_turn_returning_an_async_clients_call_is_one_call_when_awaited(
    otel: Otel,
) -> None:
    # def ask(): return async_client.create(...): the turn ended on the unawaited
    # coroutine with no usage ($0, "returned no token usage"), and the request it made
    # when awaited was admitted again by the client guard: one request, two calls.
    from techrevati.runtime import ModelPricing, register_pricing

    register_pricing("coro-model", ModelPricing(1.0, 2.0))
    requests: list[int] = []

    async def create() -> dict[str, Any]:
        requests.append(1)
        return {"model": "coro-model", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    @agent_turn("coro-model")
    def ask() -> Any:
        return create()

    async def main() -> Any:
        limits = {"max_iterations": 3, "budget_usd": 1.0, "enforce_budget": True}
        async with agent_session("w", **limits, **otel.kwargs()) as session:
            for _ in range(3):
                await ask()
        return session

    session = asyncio.run(main())
    assert len(requests) == 3
    assert session._iteration_count == 3
    assert session.tracker.total_cost() == pytest.approx(3 * 0.0012)


def test_a_turn_called_with_arguments_it_does_not_take_is_no_call(otel: Otel) -> None:
    # ask() without its prompt never starts: it used an iteration, was recorded as an
    # llm_error recovery and counted as a provider failure, so two typos opened a
    # breaker shared with every other session.
    from techrevati.runtime import CircuitBreaker

    breaker = CircuitBreaker("provider", failure_threshold=2)

    @agent_turn("model-a")
    def ask(prompt: str) -> dict[str, Any]:
        return {"model": "model-a", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

    with agent_session("w", max_iterations=3, circuit_breaker=breaker, **otel.kwargs()) as s:
        for _ in range(2):
            with pytest.raises(TypeError, match="prompt"):
                ask()  # type: ignore[call-arg]
        assert s._iteration_count == 0
        assert breaker.state().value == "closed"
        assert s.summary()["recovery_events"] == []
        assert ask("hello")["model"] == "model-a"  # a call that fits runs, and counts
        assert s._iteration_count == 1


def test_a_type_error_raised_inside_a_body_that_ran_is_a_failed_call(otel: Otel) -> None:
    # A decorator that supplies an argument (functools.wraps) made the turn's signature
    # look unfitting, so a TypeError raised by the body after its billed request was
    # taken for an argument error: the call uncounted, 5 of 5 under a cap of 2.
    import functools

    def with_client(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner() -> Any:
            return fn("client")

        return inner

    @agent_turn("model-a")
    @with_client
    def ask(client: str) -> Any:
        return len(client, "extra")  # type: ignore[call-arg]  # a bug after the call

    @agent_turn("model-a")
    def parse(prompt: str) -> Any:
        return int(prompt, "ten")  # type: ignore[call-overload]  # raised inside the body

    outcomes: list[str] = []
    with agent_session("w", max_iterations=2, **otel.kwargs()) as session:
        for call in (ask, ask, lambda: parse("1"), ask):
            try:
                call()
            except TypeError:
                outcomes.append("raised")
            except MaxIterationsExceededError:
                outcomes.append("refused")
    assert outcomes == ["raised", "raised", "refused", "refused"]
    assert session._iteration_count == 2


def test_a_sync_turns_coroutine_dropped_unawaited_is_no_call(otel: Otel) -> None:
    # Dropped without being awaited, it never ran and sent nothing: its turn stayed open
    # for good, its reservation held ($0.0024 of a $0.0025 budget "reserved by calls
    # still in flight"), so the next real call was refused, and its span never ended.
    import gc

    from techrevati.runtime import ModelPricing, register_pricing

    register_pricing("coro-model", ModelPricing(1.0, 2.0))
    sent: list[int] = []

    async def create() -> dict[str, Any]:
        sent.append(1)
        return {"model": "coro-model", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    @agent_turn("coro-model")
    def ask() -> Any:
        return create()

    async def main() -> Any:
        limits = {"budget_usd": 0.0025, "enforce_budget": True}
        async with agent_session("w", **limits, **otel.kwargs()) as session:
            await ask()  # learns the cost: $0.0012
            for _ in range(2):
                dropped = ask()
                del dropped
                gc.collect()
            await ask()  # the budget still has room for it
            assert session._ledger.reserved_nano == 0
        return session

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (Python's "never awaited")
        session = asyncio.run(main())
    assert len(sent) == 2
    assert session._iteration_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * 0.0012)
    assert len(otel.spans("chat")) == 4  # every turn's span ended


@pytest.mark.parametrize("decorator", [agent_turn("model-a"), tool_call()], ids=["turn", "tool"])
def test_decorating_what_cannot_be_called_fails_where_it_is_applied(
    decorator: Callable[[Any], Any], otel: Otel
) -> None:
    # agent_turn("m")(5) decorated without a word; calling it raised a bare TypeError
    # and used an iteration.
    with pytest.raises(TypeError, match="decorates a function or method, got int: 5"):
        decorator(5)
