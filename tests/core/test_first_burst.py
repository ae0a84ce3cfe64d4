"""The first burst is bounded: a model's first calls under an enforced budget.

Nothing is known about a call's cost before the first one settles. The probe
rule runs one call of the model and holds the others until it settles (then
they reserve the learned cost); where the client guard sees the request, it
reserves an upper-bound estimate read from it instead. Target of issue 20: 20
concurrent first calls under a budget of 3.5 calls run at most 4 bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from opentelemetry import trace as otel_trace

from fake_openai import FakeOpenAI, serve
from otel_harness import Otel
from techrevati.runtime import (
    BudgetExceededError,
    ModelPricing,
    UnpricedModelError,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import door, guard, membership
from techrevati.runtime.telemetry.limits.estimate import input_known

pytestmark = pytest.mark.usefixtures("priced")

#: model-a at $3 / $15 per million: 1000 in + 100 out = $0.0045.
ONE_CALL = 0.0045
RESPONSE = {"model": "model-a", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}
BUDGET = 3.5 * ONE_CALL
CALLS = 20


#: A stream's last chunk, with its usage: one call (ONE_CALL).
_LAST_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "model-a",
    "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
}
#: What a client instrumentation's chat span of model-a says when it starts.
_CHAT_START = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "model-a",
    "gen_ai.provider.name": "openai",
}


class Bodies:
    """Counts the call bodies that ran, and the most that ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran = 0
        self.running = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.ran += 1
            self.running += 1
            self.most = max(self.most, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def _outcome(fn: Any) -> str:
    try:
        fn()
    except BudgetExceededError as stop:
        return "crossed" if stop.site is not None and stop.site.ran else "refused"
    return "ran"


async def _aoutcome(call: Awaitable[Any]) -> str:
    """``_outcome`` of an awaited call."""
    try:
        await call
    except BudgetExceededError as stop:
        return "crossed" if stop.site is not None and stop.site.ran else "refused"
    return "ran"


async def _until(done: Callable[[], object]) -> None:
    """Await, without blocking the loop, until ``done()`` holds (at most 5 s)."""
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in 5 s")


async def _async_burst(api: FakeOpenAI) -> list[str]:
    """CALLS first calls of a fresh AsyncOpenAI client at once, each without max_tokens."""
    client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    return await asyncio.gather(
        *(
            _aoutcome(client.chat.completions.create(model="model-a", messages=messages))
            for _ in range(CALLS)
        )
    )


def _burst(session: Any, ask: Any) -> list[str]:
    """CALLS first calls of ``ask`` at once, from a pool's threads wrapped into ``session``."""
    start = threading.Barrier(CALLS)

    def one() -> str:
        start.wait()
        return _outcome(ask)

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        return list(pool.map(session.wrap(lambda _: one()), range(CALLS)))


def test_twenty_threads_run_at_most_four_bodies(otel: Otel) -> None:
    bodies = Bodies()

    @agent_turn("model-a")
    def ask() -> dict[str, Any]:
        bodies.enter()
        time.sleep(0.05)
        bodies.leave()
        return RESPONSE

    with agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session:
        outcomes = _burst(session, ask)
    assert bodies.ran == 4  # was 20 before the probe rule
    assert bodies.most <= 3  # the probe ran alone; then at most 3 reserved calls at once
    assert session.tracker.turn_count == 4
    assert session.tracker.total_cost() == pytest.approx(4 * ONE_CALL)
    # The fourth call crossed the budget (it ran, then raised); 16 never started.
    assert (outcomes.count("crossed"), outcomes.count("refused")) == (1, CALLS - 4)


def test_twenty_tasks_run_at_most_four_bodies_and_the_loop_keeps_running(otel: Otel) -> None:
    bodies = Bodies()

    @agent_turn("model-a")
    async def ask() -> dict[str, Any]:
        bodies.enter()
        await asyncio.sleep(0.1)
        bodies.leave()
        return RESPONSE

    async def main() -> tuple[list[str], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        async def one() -> str:
            try:
                await ask()
            except BudgetExceededError:
                return "refused"
            return "ran"

        tick_task = asyncio.create_task(ticker())
        with agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()):
            outcomes = list(await asyncio.gather(*(one() for _ in range(CALLS))))
        stop.set()
        await tick_task
        return outcomes, ticks

    outcomes, ticks = asyncio.run(main())
    assert bodies.ran == 4
    assert outcomes.count("refused") == CALLS - 3
    # 19 calls waited ~0.1 s for the probe: a blocked loop would not have ticked.
    assert ticks >= 10


def test_a_failed_probe_lets_the_next_call_probe(otel: Otel) -> None:
    attempts: list[str] = []

    @agent_turn("model-a")
    def ask(fail: bool) -> dict[str, Any]:
        attempts.append("fail" if fail else "ok")
        time.sleep(0.05)
        if fail:
            raise RuntimeError("provider error")
        return RESPONSE

    with (
        agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        first = pool.submit(session.wrap(ask), True)
        time.sleep(0.01)  # the failing call is the probe
        second = pool.submit(session.wrap(ask), False)
        with pytest.raises(RuntimeError):
            first.result()
        assert second.result() == RESPONSE
    assert attempts == ["fail", "ok"]  # the second waited for the first, then ran
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL)


def test_the_wait_is_bounded_by_probe_wait_s(otel: Otel) -> None:
    bodies = Bodies()

    @agent_turn("model-a")
    def ask() -> dict[str, Any]:
        bodies.enter()
        time.sleep(0.4)
        bodies.leave()
        return RESPONSE

    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        session._ledger.probe_wait_s = 0.05
        with ThreadPoolExecutor(max_workers=3) as pool:
            started = time.monotonic()
            list(pool.map(session.wrap(lambda _: ask()), range(3)))
            elapsed = time.monotonic() - started
    # The two waiters gave up after 0.05 s and ran beside the probe, unreserved.
    assert bodies.most == 3
    assert elapsed < 0.8


def test_no_probe_when_usage_is_known_up_front(otel: Otel) -> None:
    from techrevati.runtime import UsageSnapshot

    bodies = Bodies()

    @agent_turn("model-a", usage=UsageSnapshot(1000, 100))
    def ask() -> str:
        bodies.enter()
        time.sleep(0.05)
        bodies.leave()
        return "x"

    with (
        agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        list(pool.map(session.wrap(lambda _: _outcome(ask)), range(8)))
    # Each call reserves its known cost: 4 admitted at once, no probe wait.
    assert bodies.ran == 4
    assert bodies.most == 4


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "model-a",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
    }
    guard.uninstall_guard()
    with serve(FakeOpenAI(completion)) as fake:
        yield fake
    guard.uninstall_guard()


def test_bare_client_burst_reserves_the_request_estimate(api: FakeOpenAI, otel: Otel) -> None:
    # 4000 characters of prompt ~ 1008 tokens and max_tokens=100: the estimate is an
    # upper bound of the actual call (1000 in, 100 out), so at most 4 requests go out.
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    messages = [{"role": "user", "content": "x" * 4000}]

    def ask() -> None:
        client.chat.completions.create(model="model-a", messages=messages, max_tokens=100)

    with agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session:
        outcomes = _burst(session, ask)
    assert len(api.requests) == 4  # 20 before
    # Each sent request ran; the one that crossed the budget raised after it was booked.
    assert outcomes.count("ran") + outcomes.count("crossed") == len(api.requests)
    assert outcomes.count("crossed") >= 1
    assert session.tracker.total_cost() == pytest.approx(len(api.requests) * ONE_CALL)


def test_a_call_inside_the_probe_does_not_wait_for_it(otel: Otel) -> None:
    from techrevati.runtime import Orchestrator

    @agent_turn("model-a")
    def inner() -> dict[str, Any]:
        return RESPONSE

    orch = Orchestrator(role="w", phase="p", budget_usd=1.0, enforce_budget=True, **otel.kwargs())
    started = time.monotonic()
    with orch.session() as session:
        # The outer turn is model-a's probe; the inner calls are new calls inside it.
        session.run_turn(lambda: [inner() for _ in range(3)], "model-a")
    assert time.monotonic() - started < 5.0  # no wait for the probe they run in
    assert session._iteration_count == 4
    assert session.tracker.total_cost() == pytest.approx(3 * ONE_CALL)


def test_instrumented_client_burst_in_threads_is_bounded(api: FakeOpenAI) -> None:
    # The official instrumentation's spans are admitted by the processor: on threads
    # the first one probes and the others wait for it (then reserve what it cost).
    from fake_openai import instrumented_openai

    with instrumented_openai() as (provider, _exporter):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "x" * 4000}]

        def ask() -> None:
            client.chat.completions.create(model="model-a", messages=messages, max_tokens=100)

        with agent_session(
            "w", budget_usd=BUDGET, enforce_budget=True, tracer_provider=provider
        ) as session:
            outcomes = _burst(session, ask)
    assert len(api.requests) == 4  # 20 could start before; the budget is 3.5 calls
    assert outcomes.count("ran") == 4  # a library call that crosses is not raised after
    assert session.tracker.total_cost() == pytest.approx(4 * ONE_CALL)


def test_instrumented_client_burst_on_a_loop_is_bounded(api: FakeOpenAI) -> None:
    # On an event loop nothing may wait for a probe: each span is admitted at once.
    # A fresh client's first request awaits its platform lookup before it is built,
    # so all twenty spans started before the guard saw any request, each reserving
    # nothing: twenty requests went out under a budget of 3.5 calls. A span then
    # reserved its output cap at start (the default output length when the span
    # names none, as this instrumentation's spans do: 4,096 tokens, $0.06144 against
    # a $0.01575 budget), so 1 ran. The guard now replaces that placeholder with the
    # request's estimate ($0.004527) as the request method starts, before the
    # platform lookup: 4 run, as on threads.
    from fake_openai import instrumented_openai

    with instrumented_openai() as (provider, _exporter):
        messages = [{"role": "user", "content": "x" * 4000}]

        async def main() -> list[str]:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

            async def ask() -> str:
                try:
                    await client.chat.completions.create(
                        model="model-a", messages=messages, max_tokens=100
                    )
                except BudgetExceededError:
                    return "refused"
                except openai.APIConnectionError:
                    return "reset"  # twenty at once overflow the stand-in's backlog
                return "ran"

            return await asyncio.gather(*(ask() for _ in range(CALLS)))

        with agent_session(
            "w", budget_usd=BUDGET, enforce_budget=True, tracer_provider=provider
        ) as session:
            outcomes = asyncio.run(main())
            assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 4
    assert outcomes.count("ran") == 4
    assert session.tracker.total_cost() == pytest.approx(len(api.requests) * ONE_CALL)


def test_a_loop_span_admitted_at_the_default_length_then_holds_its_requests_bound(
    otel: Otel,
) -> None:
    # The official OpenAI instrumentation sets gen_ai.request.max_tokens only when its
    # span ends: a span starting on a loop with nothing learned reserved the default
    # output length (4,096 tokens of model-a: $0.06144) until its call ended, even for a
    # request asking for 50 tokens. The guard replaces that placeholder with the
    # request's own bound, lowered, at every level of the chain; a reservation that was
    # no placeholder (a cap on the span, call_estimate_usd) is never lowered.
    placeholder = 4096 * 15 / 1e6
    # 399 "x" + 33 characters of JSON around them: 108 input tokens at $3/M, 50 out at $15/M.
    body = {
        "model": "model-a",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "x" * 399}],
    }
    bound = (108 * 3 + 50 * 15) / 1e6
    tracer = otel.tracer_provider.get_tracer("some.genai.library")

    def start(**attributes: Any) -> Any:
        return tracer.start_span(
            "chat model-a",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "model-a",
                "gen_ai.provider.name": "openai",
                **attributes,
            },
        )

    def end(span: Any) -> None:
        span.set_attribute("gen_ai.usage.input_tokens", 108)
        span.set_attribute("gen_ai.usage.output_tokens", 50)
        span.end()

    spans: list[Any] = []

    async def one(
        built: bool = False, request: dict[str, Any] | None = None, **attributes: Any
    ) -> tuple[bool, float, float]:
        # A task of its own (a context of its own), as each call of a burst has.
        span = start(**attributes)
        found = membership.STRAND.get()
        assert found is not None and found.call is not None
        claim = found.call
        marked, before = claim.default_cap, claim.expected
        if built:
            # A sync client's request on the loop: bounded when it is built.
            options = SimpleNamespace(
                method="post", url="/chat/completions", json_data=body, idempotency_key=None
            )
            assert door.begin(options, "openai") is None  # the span's call, not the guard's
        else:
            # The async door.
            await door.afleet(SimpleNamespace(json_data=request or body), "openai")
        after = claim.expected
        spans.append(span)  # ended last: a call that ends teaches its model's cost
        return marked, before, after

    async def main() -> None:
        with (
            agent_session("parent", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as p,
            agent_session("child", **otel.kwargs()) as child,
        ):
            levels = (child._ledger, p._ledger)
            span = start()
            claim = membership.STRAND.get().call  # type: ignore[union-attr]
            assert claim is not None and claim.default_cap
            assert [level.reserved for level in levels] == [placeholder] * 2
            await door.afleet(SimpleNamespace(json_data=body), "openai")
            assert not claim.default_cap
            assert claim.expected == bound
            assert [level.reserved for level in levels] == [pytest.approx(bound, abs=1e-12)] * 2
            # Lowered once, from the placeholder only: a top-up never lowers it again.
            levels[0].top_up(claim, bound / 2)
            assert claim.expected == bound
            # A cap on the span is a bound already: not a placeholder, and raised only.
            assert await asyncio.create_task(one(**{"gen_ai.request.max_tokens": 10})) == (
                False,
                10 * 15 / 1e6,
                10 * 15 / 1e6,
            )
            assert await asyncio.create_task(one(built=True)) == (True, placeholder, bound)
            # An input the body does not hold (an image by URL, a stored conversation)
            # costs more than its characters: the placeholder is not lowered to them.
            image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            for unknown in (
                {**body, "messages": [{"role": "user", "content": [image]}]},
                {**body, "previous_response_id": "resp_1"},
            ):
                assert await asyncio.create_task(one(request=unknown)) == (
                    True,
                    placeholder,
                    placeholder,
                )
            for each in (span, *spans):
                end(each)
        with agent_session(
            "w", budget_usd=1.0, enforce_budget=True, call_estimate_usd=0.5, **otel.kwargs()
        ):
            assert await asyncio.create_task(one()) == (False, 0.5, 0.5)
            end(spans.pop())

    asyncio.run(main())


_SCHEMA_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {
                # A parameter named "type", and a strict-mode nullable: not content parts.
                "type": {"type": ["string", "null"]},
                "rows": {"type": "array", "items": {"type": "object", "properties": {}}},
            },
        },
    },
}


@pytest.mark.parametrize(
    ("request_body", "known"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [_SCHEMA_TOOL]}, True),
        ({"input": [{"type": "input_text", "text": "hi"}]}, True),
        ({"prompt": "a legacy completion's prompt"}, True),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, False),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, False),
        ({"input": "and then?", "previous_response_id": "resp_1"}, False),
        ({"prompt": {"id": "pmpt_1"}, "input": "hi"}, False),
    ],
    ids=["tool schema", "text parts", "text prompt", "image", "item ref", "stored", "prompt id"],
)
def test_input_known_says_when_a_requests_estimate_bounds_its_input(
    request_body: dict[str, Any], known: bool
) -> None:
    # A review: a tool whose schema has a property named "type" made the walk look a
    # dict up in a set (TypeError: the model call raised, nothing sent), and stored
    # input (an item reference, a prompt template) counted as text.
    assert input_known(request_body) is known


# -- after a cheap first call -------------------------------------------------------
#
# A probe: one cheap call of a model first (a yes/no question), then a burst of long
# answers of the same model. Each call of the burst was reserved at the cheap call's
# cost, the costliest the session had learned, even where its own request said more
# (max_tokens): 20 of 20 ran under a budget of 3.5 of them. The request's upper bound
# now counts too.

#: What a long answer costs: 1000 tokens in, 1000 out, at model-a's $3 / $15.
LONG_CALL = 0.018
LONG_USAGE = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}
CHEAP_USAGE = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}


def _staggered(session: Any, ask: Any) -> list[str]:
    """CALLS calls of ``ask`` on their own threads, started 20 ms apart (a fan-out)."""
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=session.wrap(lambda: outcomes.append(_outcome(ask))))
        for _ in range(CALLS)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    return outcomes


def _cheap_then_burst(
    api: FakeOpenAI, session: Any, client: Any, max_tokens: int | None, burst: Any = _burst
) -> list[str]:
    api.completion["usage"] = CHEAP_USAGE
    client.chat.completions.create(
        model="model-a", messages=[{"role": "user", "content": "yes?"}], max_tokens=1
    )
    api.completion["usage"] = LONG_USAGE
    api.delay = 0.3  # the long answers overlap: none settles before the others start
    cap = {} if max_tokens is None else {"max_tokens": max_tokens}
    # ~1008 tokens of prompt: with max_tokens=1000 the estimate ($0.018024) bounds
    # the call; without, 4,096 output tokens are assumed ($0.064464).
    messages = [{"role": "user", "content": "x" * 4000}]

    def ask() -> None:
        client.chat.completions.create(model="model-a", messages=messages, **cap)

    return burst(session, ask)


def test_a_cheap_first_call_does_not_lower_a_bare_clients_capped_burst(
    api: FakeOpenAI, otel: Otel
) -> None:
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    limits = {"budget_usd": 3.5 * LONG_CALL, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        outcomes = _cheap_then_burst(api, session, client, 1000)
    assert len(api.requests) == 1 + 4  # 1 + 20 before
    assert outcomes.count("refused") == CALLS - 4
    cheap = (10 * 3 + 1 * 15) / 1e6
    assert session.tracker.total_cost() == pytest.approx(cheap + 4 * LONG_CALL)


def test_a_learned_fan_out_without_max_tokens_is_not_refused_on_an_ample_budget(
    api: FakeOpenAI, otel: Otel
) -> None:
    # A probe of the change above: requests without max_tokens were raised to 4,096
    # output tokens each once another call was admitted (86 times a short answer), so
    # a fan-out after a first call needed 35 times what its calls cost: 5 parallel
    # LangGraph runs on 9 times their cost had 3 refused. Only a request's own cap
    # bounds its estimate once its model's cost is learned.
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    api.delay = 0.3  # the calls overlap
    messages = [{"role": "user", "content": "x" * 4000}]

    def ask() -> None:
        client.chat.completions.create(model="model-a", messages=messages)

    fan_out = 8  # (twenty at once overflow the stand-in's listen backlog)
    start = threading.Barrier(fan_out)

    def one(_: int) -> str:
        start.wait()
        return _outcome(ask)

    # Room for twice the calls; each reserving 4,096 output tokens ($0.064) would not fit 2.
    limits = {"budget_usd": 2 * (fan_out + 1) * ONE_CALL, "enforce_budget": True}
    with (
        agent_session("w", **limits, **otel.kwargs()) as session,
        ThreadPoolExecutor(max_workers=fan_out) as pool,
    ):
        ask()  # the model's cost is learned: $0.0045
        outcomes = list(pool.map(session.wrap(one), range(fan_out)))
    assert outcomes == ["ran"] * fan_out
    assert len(api.requests) == 1 + fan_out


def test_a_cheap_first_call_does_not_lower_an_instrumented_fan_out(api: FakeOpenAI) -> None:
    # The official instrumentation's spans are admitted at the learned cost when they
    # start; the guard reads each request, and the admissions that follow see its
    # upper bound. (A span that starts in the instants between another's start and
    # its request still sees that one at the learned cost: the calls start 20 ms apart.)
    from fake_openai import instrumented_openai

    with instrumented_openai() as (provider, _exporter):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        limits = {"budget_usd": 3.5 * LONG_CALL, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            outcomes = _cheap_then_burst(api, session, client, 1000, _staggered)
    assert len(api.requests) == 1 + 4  # 1 + 20 before
    assert outcomes.count("refused") == CALLS - 4


def test_a_turns_answered_request_does_not_hold_its_upper_bound(
    api: FakeOpenAI, otel: Otel
) -> None:
    # A review: a turn that makes two requests one after another kept its first
    # request's upper bound reserved after the answer arrived (the turn's call stays
    # open for its next step), so each second request saw ~$0.063 in flight: 9 of the
    # 21 requests a budget of 21 allows were sent.
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    messages = [{"role": "user", "content": "x" * 4000}]

    @agent_turn("model-a")
    def two_steps() -> None:
        for _ in range(2):
            client.chat.completions.create(model="model-a", messages=messages, max_tokens=4000)

    with agent_session("w", budget_usd=21 * ONE_CALL, enforce_budget=True, **otel.kwargs()):
        outcomes = [_outcome(two_steps) for _ in range(12)]
    assert len(api.requests) == 21  # 9 before
    # The 11th turn's second request is refused (its first, the 21st, spent the budget).
    assert outcomes == ["ran"] * 10 + ["refused"] * 2


def test_a_forked_child_does_not_estimate_its_parents_calls_in_flight() -> None:
    # A review: a call in flight in the parent at the fork was raised, at the child's
    # first admission, from its learned $0.0045 to its request's $0.063.
    from techrevati.runtime.telemetry.limits import estimate

    estimate.DEFERRED[object()] = ("model-a", {}, "openai")  # type: ignore[index]
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without running anything else
            os.write(write, str(len(estimate.DEFERRED)).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 16) == b"0"
    finally:
        estimate.DEFERRED.clear()


# -- a first call whose input is not all text ---------------------------------------
#
# An image (a file, a stored conversation) is billed by what it holds, not by the
# characters of its URL: such a request's text estimate (~$0.0016 here) bounds
# nothing. It was reserved anyway, so the "nothing tells its cost: probe" rule never
# fired and a burst of first calls ran: 10 of 20 (threads; tasks too) under a
# budget of 3.5 calls. Such a call now probes: it runs alone, the others wait for
# what it cost.

#: A short question about an image: its characters say ~30 tokens, the provider bills
#: 1000 (the image) + 100 out = ONE_CALL.
IMAGE_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
]


@pytest.mark.parametrize("span", ["none", "naming no model"])
def test_a_bare_clients_burst_of_first_image_calls_in_threads_probes(
    api: FakeOpenAI, otel: Otel, span: str
) -> None:
    # Under a span that names no model at its start (OpenLLMetry's), the call led its
    # model once the guard read its request, and a lead holds nobody while the budget
    # holds the others' text estimates: 10 of 20 sent under a budget of 3.5 calls.
    # Decided again as a call of its model, it waits for that model's first call.
    api.delay = 0.2  # every call in flight at once unless something holds them
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)

    def create() -> None:
        client.chat.completions.create(model="model-a", messages=IMAGE_MESSAGES, max_tokens=100)

    def ask() -> None:
        if span == "none":
            create()
        else:
            _unnamed_call(otel, create)

    with agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session:
        outcomes = _burst(session, ask)
    assert len(api.requests) <= int(BUDGET / ONE_CALL) + 1  # 10 of 20 before
    assert outcomes.count("refused") == CALLS - len(api.requests)
    assert session.tracker.total_cost() == pytest.approx(len(api.requests) * ONE_CALL)


def test_a_bare_async_clients_burst_of_first_image_calls_probes(
    api: FakeOpenAI, otel: Otel
) -> None:
    api.delay = 0.2

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def ask() -> str:
            try:
                await client.chat.completions.create(
                    model="model-a", messages=IMAGE_MESSAGES, max_tokens=100
                )
            except BudgetExceededError as stop:
                return "crossed" if stop.site is not None and stop.site.ran else "refused"
            return "ran"

        return await asyncio.gather(*(ask() for _ in range(CALLS)))

    with agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session:
        outcomes = asyncio.run(main())
        assert session._ledger.reserved_nano == 0
    assert len(api.requests) <= int(BUDGET / ONE_CALL) + 1  # 10 of 20 before
    assert outcomes.count("refused") == CALLS - len(api.requests)
    assert session.tracker.total_cost() == pytest.approx(len(api.requests) * ONE_CALL)


#: Five calls' cost: a third of what one call without max_tokens reserves at first
#: (its 4,096-token output bound, $0.064464): every first call but one was refused.
FIVE_CALLS = 5 * ONE_CALL


def test_a_bare_clients_first_burst_waits_for_its_lead_instead_of_being_refused(
    api: FakeOpenAI, otel: Otel
) -> None:
    # 20 concurrent first calls of a model, no max_tokens, under five calls' budget:
    # the first reserved its request's bound, more than the budget, and the other 19
    # were refused though the work cost a fraction of it. They wait for that lead to
    # settle and reserve what it cost: five run, the budget is spent exactly, none over.
    api.delay = 0.2  # every call in flight at once unless something holds them
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)

    def ask() -> None:
        client.chat.completions.create(
            model="model-a", messages=[{"role": "user", "content": "hi"}]
        )

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        outcomes = _burst(session, ask)
        assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 5  # 1 before
    assert outcomes.count("ran") == 5 and outcomes.count("refused") == CALLS - 5
    assert session.tracker.total_cost() == pytest.approx(FIVE_CALLS)


def test_a_bare_async_clients_first_burst_waits_for_its_lead(api: FakeOpenAI, otel: Otel) -> None:
    api.delay = 0.2
    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        outcomes = asyncio.run(_async_burst(api))
        assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 5  # 1 before
    assert outcomes.count("ran") == 5 and outcomes.count("refused") == CALLS - 5
    assert session.tracker.total_cost() == pytest.approx(FIVE_CALLS)


def test_a_stream_its_own_thread_left_unread_is_not_waited_for(api: FakeOpenAI, otel: Otel) -> None:
    # The lead is a stream this very thread opened and has not read: a second call
    # refused for its reservation would wait for itself (until probe_wait_s). It is
    # refused at once, as before (the wait is bounded by probe_wait_s, 30 s).
    api.stream = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "model-a",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
        },
    ]
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()):
        stream = client.chat.completions.create(model="model-a", messages=messages, stream=True)
        started = time.monotonic()
        with pytest.raises(BudgetExceededError):
            client.chat.completions.create(model="model-a", messages=messages)
        assert time.monotonic() - started < 5.0
        stream.close()
    assert len(api.requests) == 1


def test_a_sync_turn_on_an_event_loop_never_waits_for_a_lead(api: FakeOpenAI, otel: Otel) -> None:
    # A sync @agent_turn called from async code while an async client's first call of
    # its model (the lead) is in flight: the lead can only end on this very loop, so
    # waiting for it froze the loop until probe_wait_s. It is decided at once.
    api.delay = 1.0

    @agent_turn("model-a", usage=UsageSnapshot(1000, 100))
    def sync_turn() -> str:
        return "ok"

    async def main() -> tuple[str, float, list[float]]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
        ticks: list[float] = []

        async def ticker() -> None:
            start = time.monotonic()
            while time.monotonic() - start < 2:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.1)

        async with agent_session("s", budget_usd=FIVE_CALLS, enforce_budget=True, **otel.kwargs()):
            lead = asyncio.create_task(
                client.chat.completions.create(
                    model="model-a", messages=[{"role": "user", "content": "hi"}]
                )
            )
            ticking = asyncio.create_task(ticker())
            await asyncio.sleep(0.2)  # the lead is admitted and on the wire
            started = time.monotonic()
            outcome = _outcome(sync_turn)
            blocked = time.monotonic() - started
            await lead
            await ticking
        return outcome, blocked, ticks

    outcome, blocked, ticks = asyncio.run(main())
    assert outcome == "refused"  # the lead's bound fills the budget; nothing to wait for
    assert blocked < 0.5
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.8


@pytest.mark.parametrize("client_kind", ["sync", "async"])
def test_calls_admitted_after_their_lead_are_bounded_by_their_requests(
    api: FakeOpenAI, otel: Otel, client_kind: str
) -> None:
    # A small lead ($0.0045; no max_tokens, so it reserves its 4,096-token bound, more
    # than the budget), then ten calls asking for up to 2,000 output tokens ($0.033
    # each, and the server answers that many) under $0.02: all wait for the lead. They
    # were admitted at its cost and never bounded by their requests: five were sent,
    # $0.17 spent. Now as after a learned first call: the budget plus at most one call.
    api.delay = 0.5
    api.output_is_max_tokens = True
    budget = 0.02
    big = 1000 * 3 / 1e6 + 2000 * 15 / 1e6
    messages = [{"role": "user", "content": "hi"}]

    with agent_session("s", budget_usd=budget, enforce_budget=True, **otel.kwargs()) as session:
        if client_kind == "sync":
            client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
            with ThreadPoolExecutor(max_workers=11) as pool:
                lead = pool.submit(
                    client.chat.completions.create,
                    model="model-a",
                    messages=messages,
                    max_tokens=50,
                )
                time.sleep(0.1)
                outcomes = list(
                    pool.map(
                        lambda _: _outcome(
                            lambda: client.chat.completions.create(
                                model="model-a", messages=messages, max_tokens=2000
                            )
                        ),
                        range(10),
                    )
                )
                lead.result()
        else:

            async def main() -> list[str]:
                aclient = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

                def ask() -> Awaitable[str]:
                    return _aoutcome(
                        aclient.chat.completions.create(
                            model="model-a", messages=messages, max_tokens=2000
                        )
                    )

                lead = asyncio.create_task(
                    aclient.chat.completions.create(model="model-a", messages=messages)
                )
                await asyncio.sleep(0.1)
                found = await asyncio.gather(*(ask() for _ in range(10)))
                await lead
                return list(found)

            outcomes = asyncio.run(main())
    spent = session.tracker.total_cost()
    assert spent <= budget + big
    assert len(api.requests) <= 3  # 6 before
    assert outcomes.count("refused") == 10 - (len(api.requests) - 1)


def test_a_call_a_parents_cap_refuses_does_not_wait_for_a_lead(api: FakeOpenAI, otel: Otel) -> None:
    # The child's budget refuses it for its lead's reservation, but the parent's cap
    # refuses it outright: it could never run, so it is refused at once.
    api.delay = 2.0
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)

    def ask() -> None:
        client.chat.completions.create(
            model="model-a", messages=[{"role": "user", "content": "hi"}]
        )

    with (
        agent_session("parent", max_iterations=1, **otel.kwargs()),
        agent_session("child", budget_usd=FIVE_CALLS, enforce_budget=True, **otel.kwargs()),
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        lead = pool.submit(ask)
        time.sleep(0.3)
        started = time.monotonic()
        assert _outcome(ask) == "refused"
        assert time.monotonic() - started < 1.0
        lead.result()
    assert len(api.requests) == 1


def test_an_instrumented_first_burst_in_threads_waits_for_its_probe(api: FakeOpenAI) -> None:
    # The official instrumentation on threads: the first span probes, and the client
    # guard raises its reservation to its request's bound (4,096 output tokens without
    # max_tokens), more than five calls' budget: the other 19 were refused for it.
    # They wait for the probe and reserve what it cost instead.
    from fake_openai import instrumented_openai

    api.delay = 0.2
    with instrumented_openai() as (provider, _exporter):
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)

        def ask() -> None:
            client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}]
            )

        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            outcomes = _burst(session, ask)
    assert len(api.requests) == 5  # 1 before
    assert outcomes.count("ran") == 5
    assert session.tracker.total_cost() == pytest.approx(FIVE_CALLS)


@pytest.mark.parametrize("client_kind", ["sync", "async"])
def test_when_the_lead_fails_the_next_waiter_leads(
    api: FakeOpenAI, otel: Otel, client_kind: str
) -> None:
    # The lead answers HTTP 500 while five calls wait for it under a budget that holds
    # one call at its 4,096-token bound: one of them leads next, the others wait for it
    # (async ones were admitted as a $0 probe, then refused for its bound: 2 ran of 5).
    api.delay = 0.5
    api.statuses = [500]
    budget = 0.07
    messages = [{"role": "user", "content": "hi"}]

    def outcome(error: BaseException | None) -> str:
        if error is None:
            return "ran"
        if isinstance(error, openai.APIStatusError):
            return f"http{error.status_code}"
        assert isinstance(error, BudgetExceededError)
        return "crossed" if error.site is not None and error.site.ran else "refused"

    with agent_session("s", budget_usd=budget, enforce_budget=True, **otel.kwargs()):
        if client_kind == "sync":
            client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)

            def ask() -> str:
                try:
                    client.chat.completions.create(model="model-a", messages=messages)
                except (BudgetExceededError, openai.APIStatusError) as error:
                    return outcome(error)
                return outcome(None)

            with ThreadPoolExecutor(max_workers=6) as pool:
                lead = pool.submit(ask)
                time.sleep(0.1)
                others = list(pool.map(lambda _: ask(), range(5)))
                first = lead.result()
        else:

            async def main() -> tuple[str, list[str]]:
                aclient = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

                async def ask() -> str:
                    try:
                        await aclient.chat.completions.create(model="model-a", messages=messages)
                    except (BudgetExceededError, openai.APIStatusError) as error:
                        return outcome(error)
                    return outcome(None)

                lead = asyncio.create_task(ask())
                await asyncio.sleep(0.1)
                found = await asyncio.gather(*(ask() for _ in range(5)))
                return await lead, list(found)

            first, others = asyncio.run(main())
    assert first == "http500"
    assert others == ["ran"] * 5
    assert len(api.requests) == 6


@pytest.mark.parametrize("breaker", [False, True], ids=["session", "with a breaker"])
def test_an_instrumented_async_clients_first_burst_waits_for_its_lead(
    api: FakeOpenAI, breaker: bool
) -> None:
    # The official instrumentation's spans start on the loop, where nothing may block:
    # each of 20 first calls reserved its request's bound (4,096 output tokens, more
    # than five calls' budget) and the other 19 were refused for the first one's: 1 ran.
    # Their spans now wait, uncounted, while the guard awaits the first call's end
    # before their requests are sent, as a bare async client's calls do: 5 run. Also
    # in a session whose breaker admits each call first.
    from fake_openai import instrumented_openai
    from techrevati.runtime import CircuitBreaker

    api.delay = 0.2
    with instrumented_openai() as (provider, exporter):
        limits: dict[str, Any] = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        if breaker:
            limits["circuit_breaker"] = CircuitBreaker("model-a")
        with agent_session("w", **limits, tracer_provider=provider) as session:
            outcomes = asyncio.run(_async_burst(api))
            assert session._ledger.reserved_nano == 0
            assert session._ledger.calls == 5  # the refused ones never counted
        spans = [s for s in exporter.get_finished_spans() if s.name == "chat model-a"]
    assert len(api.requests) == 5  # 1 before
    assert outcomes.count("ran") == 5 and outcomes.count("refused") == CALLS - 5
    assert session.tracker.total_cost() == pytest.approx(FIVE_CALLS)
    assert membership.WAITING == {}
    # The spans of the calls that ran say their session iteration, 1 to 5 (those that
    # waited say it once admitted); the refused ones' spans say none, and failed.
    ran = [s for s in spans if s.status.is_ok]
    assert sorted(s.attributes["techrevati.session.iteration"] for s in ran) == [1, 2, 3, 4, 5]
    refused = [s for s in spans if not s.status.is_ok]
    assert len(refused) == CALLS - 5
    assert all("techrevati.session.iteration" not in s.attributes for s in refused)


def test_an_instrumented_async_call_cancelled_while_it_waits_is_never_counted(
    api: FakeOpenAI,
) -> None:
    from fake_openai import instrumented_openai

    api.delay = 3.0  # the lead answers long after the three others began to wait
    with instrumented_openai() as (provider, _exporter):

        async def main() -> None:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

            def ask() -> Awaitable[Any]:
                return client.chat.completions.create(
                    model="model-a", messages=[{"role": "user", "content": "hi"}]
                )

            lead = asyncio.create_task(ask())
            await _until(lambda: len(api.requests) == 1)
            waiting = [asyncio.create_task(ask()) for _ in range(3)]
            await _until(lambda: len(membership.WAITING) == 3)
            assert not lead.done()
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            assert membership.WAITING == {}
            await lead

        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            asyncio.run(main())
            assert session._ledger.calls == 1
            assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL)


@pytest.mark.parametrize("ended_by", ["cancel", "timeout", "timeout caught"])
def test_a_span_whose_task_ends_before_its_request_waits_no_more(
    api: FakeOpenAI, otel: Otel, ended_by: str
) -> None:
    # OpenLLMetry's async wrapper ends its span only on an Exception: a task cancelled
    # between its span's start and its request (an await of the caller's, or of the
    # client's before it builds the request), or timed out there by ``asyncio.timeout``
    # (the task then raises TimeoutError, or catches it and goes on), left a span the
    # guard never sees and nobody ends. Waiting for its admission, it was held in
    # WAITING for the process's life (and every later call asked it). Its task's end
    # drops it; nothing was counted for it.
    api.delay = 1.0  # the lead answers after the others began to wait and ended

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def create(before: float) -> None:
            _unnamed_span(otel)  # never ended
            await asyncio.sleep(before)  # cancelled or timed out here
            await client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}]
            )

        async def waits() -> None:
            if ended_by == "cancel":
                await create(60.0)
                return
            try:
                async with asyncio.timeout(0.2):
                    await create(60.0)
            except TimeoutError:
                if ended_by == "timeout":
                    raise

        lead = asyncio.create_task(create(0.0))
        await _until(lambda: len(api.requests) == 1)
        waiting = [asyncio.create_task(waits()) for _ in range(3)]
        await _until(lambda: len(membership.WAITING) == 3)
        if ended_by == "cancel":
            for task in waiting:
                task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.sleep(0)  # (done callbacks run on the loop's next turn)
        assert membership.WAITING == {}
        assert not lead.done()
        lead.cancel()
        await asyncio.gather(lead, return_exceptions=True)

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        asyncio.run(main())
        assert session._ledger.calls == 1  # the lead's; none of the three that ended
    assert membership.WAITING == {}


def test_unnamed_spans_whose_requests_are_built_after_their_lead_settled(
    api: FakeOpenAI, otel: Otel
) -> None:
    # Spans naming no model wait for any lead in flight; their requests, built only
    # after an await (OpenLLMetry's wrapper awaits before the request), came after the
    # lead had settled: each was then decided at its request's upper bound, as a call
    # that never waited, and the first took the whole budget in reservations: 2 of 20
    # sent under five calls' budget. Its wait is over at once: admitted at what the
    # lead cost, as a span that named its model at its start is (5 sent).
    api.delay = 0.2

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def create(before: float) -> None:
            async def send() -> None:
                await asyncio.sleep(before)
                await client.chat.completions.create(
                    model="model-a", messages=[{"role": "user", "content": "hi"}]
                )

            await _aunnamed_call(otel, send)

        lead = asyncio.create_task(_aoutcome(create(0.0)))
        await _until(lambda: len(api.requests) == 1)
        rest = [asyncio.create_task(_aoutcome(create(0.6))) for _ in range(CALLS - 1)]
        await _until(lambda: len(membership.WAITING) == CALLS - 1)
        return [await lead, *await asyncio.gather(*rest)]

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        outcomes = asyncio.run(main())
        assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 5
    assert outcomes.count("ran") + outcomes.count("crossed") == 5
    assert session.tracker.total_cost() == pytest.approx(5 * ONE_CALL)
    assert membership.WAITING == {}


def test_a_waiting_span_the_guard_never_saw_is_counted_when_it_ends_answered(
    otel: Otel,
) -> None:
    # A span of the official instrumentation that waits for its admission, whose
    # request the guard never sees (spans made by hand here: every client of a guarded
    # package goes through the guard): counted and booked when it ends with its usage,
    # as a span known only at its end; its limit could not refuse it.
    tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.genai.openai")
    attributes = _CHAT_START

    async def start() -> tuple[Any, membership.SpanEntry | None]:
        # A task of its own, as each call of a burst has.
        span = tracer.start_span("chat model-a", attributes=attributes)
        return span, membership.STRAND.get()

    async def main() -> None:
        assert guard.awaits_request("opentelemetry.instrumentation.genai.openai", "openai")
        lead, first = await asyncio.create_task(start())
        assert first is not None and first.call is not None  # the lead, at the default length
        unseen, waiting = await asyncio.create_task(start())
        assert waiting is not None and waiting.call is None and waiting in membership.WAITING
        _answered(unseen)
        assert membership.WAITING == {}
        assert waiting.call is not None and not waiting.call.open
        _answered(lead)

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        asyncio.run(main())
        assert session._ledger.calls == 2
        assert session._ledger.reserved_nano == 0
    assert session.tracker.total_cost() == pytest.approx(2 * ONE_CALL)


def test_a_sync_clients_call_on_the_loop_is_decided_at_once(api: FakeOpenAI) -> None:
    # A sync client called on the event loop's thread (it blocks the loop) while its
    # model's first call is in flight: nothing may wait there, so its span is decided
    # when the guard reads its request, at that request's estimate: refused before
    # anything is sent, as a bare sync client's call on the loop is.
    from fake_openai import instrumented_openai

    api.delay = 1.0
    messages = [{"role": "user", "content": "hi"}]
    with instrumented_openai() as (provider, _exporter):

        async def main() -> str:
            aclient = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
            client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
            lead = asyncio.create_task(
                aclient.chat.completions.create(model="model-a", messages=messages)
            )
            await _until(lambda: api.requests)
            try:
                client.chat.completions.create(model="model-a", messages=messages)
            except BudgetExceededError:
                outcome = "refused"
            else:
                outcome = "ran"
            assert membership.WAITING == {}
            await lead
            return outcome

        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            outcome = asyncio.run(main())
            assert session._ledger.calls == 1
    assert outcome == "refused"
    assert len(api.requests) == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL)


def test_two_instrumentations_of_one_waiting_request_are_one_call(otel: Otel) -> None:
    # A second client instrumentation's span of the same request starts inside one that
    # waits for its admission: the same call (another producer, its request not sent).
    # It was admitted as a call of its own, and the first counted again at its end.
    official = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.genai.openai")
    other = otel.tracer_provider.get_tracer("openinference.instrumentation.openai")
    attributes = _CHAT_START
    options = SimpleNamespace(
        method="post",
        url="/chat/completions",
        json_data={"model": "model-a", "messages": [{"role": "user", "content": "hi"}]},
        idempotency_key="k2",
    )

    async def call(lead: Any) -> None:
        outer = official.start_span("chat model-a", attributes=attributes)
        waiting = membership.STRAND.get()
        assert waiting is not None and waiting in membership.WAITING
        with otel_trace.use_span(outer, end_on_exit=False):
            inner = other.start_span("ChatCompletion", attributes=attributes)
            assert door.begin(options, "openai", awaits=True) is not None  # held
            asyncio.get_running_loop().call_later(0.05, _answered, lead)
            await door.arequest_fleet()  # admitted once the lead ended
        assert waiting.call is not None
        _answered(inner)
        _answered(outer)

    async def main() -> None:
        lead = official.start_span("chat model-a", attributes=attributes)
        await asyncio.create_task(call(lead))

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        asyncio.run(main())
        assert session._ledger.calls == 2  # the lead and this one, counted once
        assert session._ledger.reserved_nano == 0
    assert session.tracker.total_cost() == pytest.approx(2 * ONE_CALL)
    assert membership.WAITING == {}


@pytest.mark.parametrize("then", ["go on", "cancelled"])
def test_a_session_closed_while_its_spans_wait(api: FakeOpenAI, then: str) -> None:
    # The session closes while three first calls wait for their lead (tasks left
    # running past its block). Going on, they are admitted as calls in flight at a
    # close are, and booked when they end: nothing stays reserved in the parent, every
    # request sent is booked, nothing waits for a lead whose span can no longer end.
    # Cancelled in the same step as the close (a task group whose block failed), they
    # are cancelled and send nothing: on Python 3.11 the wait swallowed that
    # cancellation, and the three went on to send their requests (4 requests).
    from fake_openai import instrumented_openai

    api.delay = 0.5
    with instrumented_openai() as (provider, _exporter):

        async def main() -> list[str]:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

            async def ask() -> str:
                try:
                    return await _aoutcome(
                        client.chat.completions.create(
                            model="model-a", messages=[{"role": "user", "content": "hi"}]
                        )
                    )
                except asyncio.CancelledError:
                    return "cancelled"

            inner = agent_session(
                "w", budget_usd=FIVE_CALLS, enforce_budget=True, tracer_provider=provider
            )
            inner.__enter__()._ledger.probe_wait_s = 600.0
            lead = asyncio.create_task(ask())
            await _until(lambda: api.requests)
            waiting = [asyncio.create_task(ask()) for _ in range(3)]
            await _until(lambda: len(membership.WAITING) == 3)
            inner.__exit__(None, None, None)
            if then == "cancelled":
                for task in waiting:
                    task.cancel()
            tasks = asyncio.gather(*waiting, lead)
            return list(await asyncio.wait_for(tasks, timeout=10))

        with agent_session("p", budget_usd=1.0, enforce_budget=True, tracer_provider=provider) as p:
            outcomes = asyncio.run(main())
            assert p._ledger.reserved_nano == 0
            assert p._ledger.calls == len(api.requests)
            # (Booked in the closed session's ledger chain: the parent's spend.)
            assert p._ledger.spent_nano == pytest.approx(len(api.requests) * ONE_CALL * 1e9)
    if then == "go on":
        assert outcomes == ["ran"] * 4
        assert len(api.requests) == 4
    else:
        assert outcomes == ["cancelled"] * 3 + ["ran"]
        assert len(api.requests) == 1
    assert membership.WAITING == {}


def test_a_frameworks_span_around_the_instrumented_client_is_one_call_a_request(
    api: FakeOpenAI,
) -> None:
    # A framework's model span (which wraps more than a request) around the official
    # instrumentation's: only a client instrumentation's span waits; the framework's
    # is decided at its start as before, and the client's inside it is the same call.
    from fake_openai import instrumented_openai

    api.delay = 0.2
    with instrumented_openai() as (provider, _exporter):
        framework = provider.get_tracer("some.agent.framework")

        async def main() -> list[str]:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

            async def ask() -> Any:
                with framework.start_as_current_span(
                    "chat model-a",
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": "model-a",
                        "gen_ai.provider.name": "openai",
                    },
                ) as span:
                    answer = await client.chat.completions.create(
                        model="model-a", messages=[{"role": "user", "content": "hi"}]
                    )
                    span.set_attribute("gen_ai.usage.input_tokens", 1000)
                    span.set_attribute("gen_ai.usage.output_tokens", 100)
                    return answer

            return await asyncio.gather(*(_aoutcome(ask()) for _ in range(CALLS)))

        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            outcomes = asyncio.run(main())
            assert session._ledger.reserved_nano == 0
            assert session._ledger.calls == len(api.requests)
    assert outcomes.count("ran") == len(api.requests) >= 1
    assert session.tracker.total_cost() == pytest.approx(len(api.requests) * ONE_CALL)
    assert membership.WAITING == {}


def _answered(span: Any) -> None:
    """End a model span as its instrumentation does once the call was answered (ONE_CALL)."""
    span.set_attribute("gen_ai.usage.input_tokens", 1000)
    span.set_attribute("gen_ai.usage.output_tokens", 100)
    span.end()


def test_a_span_on_another_libraries_event_loop_never_waits_for_its_probe(otel: Otel) -> None:
    # Under trio no asyncio loop runs, so a model span starting on trio's thread took
    # the thread's path and waited for its model's probe: the loop stopped, with the
    # probe's own call on it, until probe_wait_s (30 s by default) ran out. It is now
    # decided at once, as on an asyncio loop. (sniffio, which anyio asks, says trio.)
    import sniffio

    tracer = otel.tracer_provider.get_tracer("some.genai.library")
    attributes = _CHAT_START
    outcome: list[str] = []

    def on_trio() -> None:
        sniffio.thread_local.name = "trio"
        try:
            _answered(tracer.start_span("chat model-a", attributes=attributes))
        except BudgetExceededError:
            outcome.append("refused")
        else:
            outcome.append("admitted")

    with agent_session("w", budget_usd=FIVE_CALLS, enforce_budget=True, **otel.kwargs()) as s:
        s._ledger.probe_wait_s = 600.0
        probe = tracer.start_span("chat model-a", attributes=attributes)  # its model's probe
        try:
            other = threading.Thread(target=s.wrap(on_trio))  # in the session
            other.start()
            other.join(timeout=10)
            stopped = other.is_alive()  # still waiting: it would hold trio's loop
        finally:
            _answered(probe)
            other.join()
        # Decided without waiting: admitted unreserved, nothing known of its cost.
        assert not stopped
        assert outcome == ["admitted"]
        assert s._ledger.calls == 2
    assert s.tracker.total_cost() == pytest.approx(2 * ONE_CALL)


def test_an_instrumented_async_stream_never_leads_the_calls_that_wait(api: FakeOpenAI) -> None:
    # The official instrumentation's span does not say it is a stream when it starts,
    # so a stream's span may lead its model's first calls. Its reader here reads it
    # only once every call of the burst returned: calls waiting for that stream's end
    # would wait for their own caller, until probe_wait_s. The guard sees the request
    # is a stream: it leads no more, and the others are decided at once.
    from fake_openai import instrumented_openai

    api.stream = [_LAST_CHUNK]
    with instrumented_openai() as (provider, _exporter):

        async def main() -> list[str]:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
            messages = [{"role": "user", "content": "hi"}]

            async def ask(stream: bool) -> Any:
                return await client.chat.completions.create(
                    model="model-a", messages=messages, stream=stream
                )

            lead = asyncio.create_task(ask(True))
            await asyncio.sleep(0)  # its span starts first: the lead
            others = [_aoutcome(ask(False)) for _ in range(4)]
            burst = asyncio.gather(lead, *others)
            stream, *outcomes = await asyncio.wait_for(burst, timeout=10)
            async for _chunk in stream:  # read once the burst returned
                pass
            return list(outcomes)

        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            session._ledger.probe_wait_s = 600.0
            outcomes = asyncio.run(main())
    # Refused for the stream's reservation (its 4,096-token bound), as before any wait.
    assert outcomes == ["refused"] * 4
    assert len(api.requests) == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL)
    assert membership.WAITING == {}


def test_a_streamed_response_never_leads_the_calls_that_wait(api: FakeOpenAI) -> None:
    # ``with_streaming_response``: the span ends when the body is read, here only once
    # four more first calls returned. They waited for it until probe_wait_s. The guard
    # sees the request is read as a stream: it leads no more (its bound reserved
    # first), and the four are decided at once.
    from fake_openai import instrumented_openai

    messages = [{"role": "user", "content": "hi"}]
    with instrumented_openai() as (provider, _exporter):

        async def main() -> list[str]:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
            streamed = client.chat.completions.with_streaming_response
            async with streamed.create(model="model-a", messages=messages) as response:
                others = (
                    _aoutcome(client.chat.completions.create(model="model-a", messages=messages))
                    for _ in range(4)
                )
                outcomes = await asyncio.wait_for(asyncio.gather(*others), timeout=10)
                await response.parse()
            return list(outcomes)

        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, tracer_provider=provider) as session:
            session._ledger.probe_wait_s = 600.0
            outcomes = asyncio.run(main())
            assert session._ledger.reserved_nano == 0
    # Refused for the streamed call's reservation, its 4,096-token bound, as before.
    assert outcomes == ["refused"] * 4
    assert len(api.requests) == 1
    assert membership.WAITING == {}


def _ends_only_on_exception(tracer: Any, client: openai.AsyncOpenAI) -> Any:
    """A client instrumentation that ends its span only on Exception, as OpenLLMetry's async
    wrapper does: a call cancelled (asyncio.timeout) leaves its span open for good."""
    messages = [{"role": "user", "content": "hi"}]

    async def create() -> Any:
        span = tracer.start_span(
            "openai.chat",
            attributes={
                "gen_ai.system": "openai",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "model-a",
            },
        )
        try:
            answer = await client.chat.completions.create(model="model-a", messages=messages)
        except Exception:
            span.end()
            raise
        _answered(span)
        return answer

    return create


def test_waiting_calls_that_time_out_leave_nothing_waiting(api: FakeOpenAI, otel: Otel) -> None:
    # Three first calls wait for their lead under asyncio.timeout and time out; their
    # spans are never ended. None was sent or counted, and none stays registered as
    # waiting (they stayed, kept past their session's close).
    tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    api.delay = 1.0

    async def main() -> list[str]:
        create = _ends_only_on_exception(
            tracer, openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
        )

        async def timed() -> str:
            try:
                async with asyncio.timeout(0.2):
                    await create()
            except TimeoutError:
                return "timed out"
            return "ran"

        lead = asyncio.create_task(create())
        await _until(lambda: api.requests)
        outcomes = await asyncio.gather(*(timed() for _ in range(3)))
        assert membership.WAITING == {}
        await lead
        return list(outcomes)

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        outcomes = asyncio.run(main())
        assert session._ledger.calls == 1
        assert session._ledger.reserved_nano == 0
    assert outcomes == ["timed out"] * 3
    assert len(api.requests) == 1
    assert membership.WAITING == {}


def test_a_lead_whose_span_is_never_ended_does_not_hold_later_calls(
    api: FakeOpenAI, otel: Otel
) -> None:
    # The lead cancelled once its request was sent keeps its span open for good. The calls
    # after it waited for that lead until probe_wait_s. The request method's end says
    # the lead failed: they are decided at once (refused here: the open span keeps its
    # reservation, as it did before any wait).
    tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    api.delay = 0.5

    async def main() -> list[str]:
        create = _ends_only_on_exception(
            tracer, openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
        )
        lead = asyncio.create_task(create())
        await _until(lambda: api.requests)
        lead.cancel()  # the lead, cancelled on the wire: its span left open
        with contextlib.suppress(asyncio.CancelledError):
            await lead
        return list(
            await asyncio.wait_for(
                asyncio.gather(*(_aoutcome(create()) for _ in range(4))), timeout=10
            )
        )

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        session._ledger.probe_wait_s = 600.0
        outcomes = asyncio.run(main())
    assert outcomes == ["refused"] * 4
    assert len(api.requests) == 1
    assert membership.WAITING == {}


@pytest.mark.parametrize("door_kind", ["image streams", "turns streaming"])
def test_a_stream_the_guard_or_a_turn_admits_keeps_its_probe(
    api: FakeOpenAI, otel: Otel, door_kind: str
) -> None:
    # Only another instrumentation's span call stops leading when its request is a
    # stream. The guard's own first image streams probe at $0 and our turns' calls
    # probe too: ending their probes at once let every next call probe at $0 (image
    # streams: 20 requests under a budget of 3.5 calls) or refused the turns waiting.
    api.delay = 0.2
    api.stream = [_LAST_CHUNK]
    messages = (
        IMAGE_MESSAGES if door_kind == "image streams" else [{"role": "user", "content": "hi"}]
    )

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def stream() -> None:
            answer = await client.chat.completions.create(
                model="model-a",
                messages=messages,
                max_tokens=100,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _chunk in answer:
                pass

        ask = stream if door_kind == "image streams" else agent_turn("model-a")(stream)
        return await asyncio.gather(*(_aoutcome(ask()) for _ in range(CALLS)))

    with agent_session("w", budget_usd=BUDGET, enforce_budget=True, **otel.kwargs()) as session:
        outcomes = asyncio.run(main())
        assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 4  # 3.5 calls' budget: the 4th crosses it
    assert outcomes.count("ran") + outcomes.count("crossed") == 4
    assert session.tracker.total_cost() == pytest.approx(4 * ONE_CALL)


@pytest.mark.parametrize("client_kind", ["async", "sync"])
def test_a_burst_of_spans_naming_no_model_at_their_start_waits_for_its_lead(
    api: FakeOpenAI, otel: Otel, client_kind: str
) -> None:
    # OpenLLMetry's wrapper starts its span before the client's request method, naming
    # only the operation (0.62: no model, no provider) until the end. With nothing
    # learned of any model, each span's call was admitted reserving nothing, and on a
    # loop the guard read its request only after the client's first await: 20 first
    # calls under five calls' budget all ran. Its request's bound is reserved as the
    # request method starts, so the next span sees it; that first call was then the
    # only one to run (the rest refused for what it reserved), since a span naming no
    # model could not wait for its model's lead. It leads now, once its request named
    # the model, and the spans refused only for what it reserves wait for what it cost,
    # as under an instrumentation that names the model at its start: 5 ran.
    api.delay = 0.2
    messages = [{"role": "user", "content": "hi"}]

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def send() -> None:
            await client.chat.completions.create(model="model-a", messages=messages)

        calls = (_aoutcome(_aunnamed_call(otel, send)) for _ in range(CALLS))
        return list(await asyncio.gather(*calls))

    def create(client: openai.OpenAI) -> None:
        _unnamed_call(
            otel, lambda: client.chat.completions.create(model="model-a", messages=messages)
        )

    limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
    with agent_session("w", **limits, **otel.kwargs()) as session:
        if client_kind == "async":
            outcomes = asyncio.run(main())
        else:
            client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
            outcomes = _burst(session, lambda: create(client))
        assert session._ledger.reserved_nano == 0
    assert len(api.requests) == 5
    assert outcomes.count("ran") + outcomes.count("crossed") == 5
    assert outcomes.count("refused") == CALLS - 5
    assert session.tracker.total_cost() == pytest.approx(5 * ONE_CALL)
    assert membership.WAITING == {}


def _unnamed_span(otel: Otel) -> Any:
    """A span as OpenLLMetry's OpenAI instrumentation starts it: no model, no provider."""
    tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    return tracer.start_span("openai.chat", attributes={"gen_ai.operation.name": "chat"})


def _unnamed_call(otel: Otel, send: Callable[[], object], model: str = "model-a") -> None:
    """``send`` inside a span as OpenLLMetry's wraps a call: the model named at its end
    (answered: ONE_CALL), the span ended on an error."""
    span = _unnamed_span(otel)
    try:
        with otel_trace.use_span(span, end_on_exit=False):
            send()
    except BaseException:
        span.end()
        raise
    span.set_attribute("gen_ai.request.model", model)
    _answered(span)


async def _aunnamed_call(otel: Otel, send: Callable[[], Awaitable[object]]) -> None:
    """``_unnamed_call`` around an awaited call."""
    span = _unnamed_span(otel)
    try:
        await send()
    except BaseException:
        span.end()
        raise
    span.set_attribute("gen_ai.request.model", "model-a")
    _answered(span)


def test_an_unnamed_probe_hands_over_to_its_models_lead_once_its_request_is_read(
    api: FakeOpenAI, otel: Otel
) -> None:
    # On a thread, the first span naming no model probes as "" (nothing tells what it
    # costs): the other such spans wait for it, whatever model they call. Held until its
    # call settled, a slow first call of model-b held every first call of model-a. Once
    # the guard reads its request it leads model-b instead, and "" is free again.
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    api.delay = 1.0
    seen: dict[str, Any] = {}

    def slow_b() -> None:
        messages = [{"role": "user", "content": "hi"}]
        _unnamed_call(
            otel,
            lambda: client.chat.completions.create(model="model-b", messages=messages),
            "model-b",
        )

    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        probes = session._ledger._chain[-1].probes
        worker = threading.Thread(target=session.wrap(slow_b))
        worker.start()
        for _ in range(500):
            if api.requests:
                break
            time.sleep(0.01)
        seen = dict(probes)
        worker.join()
    assert len(api.requests) == 1
    assert set(seen) == {"model-b"}  # its request was sent: it leads model-b, not ""
    assert probes == {}


@pytest.mark.parametrize("client_kind", ["async", "async, after an await", "sync"])
def test_unnamed_first_calls_of_a_dearer_model_hold_the_budget(
    api: FakeOpenAI, otel: Otel, client_kind: str
) -> None:
    # A span naming no model reserves the costliest call learned in the tree. With only
    # a cheap model learned, a burst of first calls of a dearer one was admitted at the
    # cheap one's cost, topped up once the guard read each request, and never refused:
    # 20 sent, $0.09 spent of a $0.0227 budget (on threads; 15 on a loop when an await
    # separates each span's start from its request). Each is decided again as a call
    # of the model its request names, before it is sent: it waits for that model's
    # first call in flight, or is refused, as a span naming it at its start.
    register_pricing("model-cheap", ModelPricing(0.1, 0.1))
    api.delay = 0.3
    messages = [{"role": "user", "content": "hi"}]
    budget = FIVE_CALLS + 0.0002

    def cheap_call() -> None:
        tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.openai.v1")
        span = tracer.start_span("openai.chat", attributes={"gen_ai.operation.name": "chat"})
        span.set_attribute("gen_ai.request.model", "model-cheap")
        _answered(span)

    def sync_call(client: openai.OpenAI) -> None:
        _unnamed_call(
            otel, lambda: client.chat.completions.create(model="model-a", messages=messages)
        )

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def send() -> None:
            if client_kind != "async":
                await asyncio.sleep(0.01)  # (OpenLLMetry's wrapper may await first)
            await client.chat.completions.create(model="model-a", messages=messages)

        async def create() -> None:
            await _aunnamed_call(otel, send)

        return list(await asyncio.gather(*(_aoutcome(create()) for _ in range(CALLS))))

    with agent_session("w", budget_usd=budget, enforce_budget=True, **otel.kwargs()) as session:
        cheap_call()
        if client_kind == "sync":
            client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
            outcomes = _burst(session, lambda: sync_call(client))
        else:
            outcomes = asyncio.run(main())
        assert session._ledger.reserved_nano == 0
    sent = len(api.requests)
    assert outcomes.count("ran") + outcomes.count("crossed") == sent
    assert 4 <= sent <= 6  # what the budget holds (5), and at most the call that crosses
    spent = session.tracker.total_cost()
    assert spent <= budget + ONE_CALL
    assert spent == pytest.approx(sent * ONE_CALL + (0.1 * 1000 + 0.1 * 100) / 1e6)


@pytest.mark.parametrize("client_kind", ["async", "sync"])
def test_an_unnamed_call_of_an_unpriced_model_is_refused_before_it_is_sent(
    api: FakeOpenAI, otel: Otel, client_kind: str
) -> None:
    # A span naming its model at its start is refused at once when that model has no
    # price under an enforced budget; a span naming none was admitted, and its call ran
    # once the guard read its request. Decided again by the request: refused, unsent.
    messages = [{"role": "user", "content": "hi"}]

    async def acreate() -> None:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)
        await client.chat.completions.create(model="model-unpriced", messages=messages)

    def create() -> None:
        client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
        client.chat.completions.create(model="model-unpriced", messages=messages)

    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        span = _unnamed_span(otel)
        with otel_trace.use_span(span, end_on_exit=False), pytest.raises(UnpricedModelError):
            if client_kind == "async":
                asyncio.run(acreate())
            else:
                create()
        span.end()
        assert session._ledger.calls == 0
        assert session._ledger.reserved_nano == 0
    assert api.requests == []
    assert session.tracker.total_cost() == 0.0


def test_an_unnamed_span_never_waits_for_its_own_threads_probe(otel: Otel) -> None:
    # A thread whose unnamed span is still open (a stream it has not read yet) makes
    # another call: that one waited for the first, its own thread's, until the wait
    # ran out (30 s by default). It is admitted at once, as no probe.
    done = threading.Event()

    def two_calls() -> None:
        first = _unnamed_span(otel)
        second = _unnamed_span(otel)  # waited for `first` on this very thread
        done.set()
        for span in (second, first):
            span.set_attribute("gen_ai.request.model", "model-a")
            _answered(span)

    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        session._ledger.probe_wait_s = 60.0
        worker = threading.Thread(target=session.wrap(two_calls), daemon=True)
        worker.start()
        assert done.wait(20), "the second span waited for its own thread's probe"
        worker.join()
        assert session._ledger.calls == 2
    assert session.tracker.total_cost() == pytest.approx(2 * ONE_CALL)


def test_unnamed_spans_run_together_once_any_cost_is_learned(otel: Otel) -> None:
    # A span naming no model reserves the costliest call learned in the tree: once one
    # call settled, at $0 too (a free local model), it knows what to reserve and does
    # not probe. Probing as "" each time (nothing is ever learned under "") ran a burst
    # of them one at a time.
    register_pricing("local-free", ModelPricing(0.0, 0.0))
    bodies = Bodies()
    start = threading.Barrier(8)

    def call() -> None:
        span = _unnamed_span(otel)
        bodies.enter()
        time.sleep(0.2)
        bodies.leave()
        span.set_attribute("gen_ai.request.model", "local-free")
        _answered(span)

    def one(_: int) -> None:
        start.wait()
        call()

    with agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        call()  # learned: local-free costs $0
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(session.wrap(one), range(8)))
    assert bodies.ran == 9
    assert bodies.most > 1  # not one at a time


@pytest.mark.parametrize("client_kind", ["async", "sync"])
def test_a_request_method_another_instrumentation_wrapped_first_is_guarded(
    api: FakeOpenAI, otel: Otel, client_kind: str
) -> None:
    # OpenInference sets its wrapper on the client class itself (``AsyncOpenAI.request``),
    # around the base class's method as it found it, and names the model only at its
    # span's end. Instrumented before the guard (at start-up, before any session), that
    # wrapper shadowed the guarded base method: its requests skipped the guard's request
    # door, and 20 first async calls under five calls' budget all ran (measured with the
    # real OpenInference instrumentation too). Its wrapper is guarded as well, and its
    # span, started inside the guarded request method, is admitted at the request's
    # bound, waiting for its model's first call as the official instrumentation's does.
    tracer = otel.tracer_provider.get_tracer("openinference.instrumentation.openai")
    cls: Any = openai.AsyncOpenAI if client_kind == "async" else openai.OpenAI
    guard.uninstall_guard()
    base = cls.request  # the base class's, unguarded: what the wrapper finds

    def start() -> Any:
        return tracer.start_span(
            "ChatCompletion", attributes={"openinference.span.kind": "LLM", "llm.system": "openai"}
        )

    def finish(span: Any) -> None:
        span.set_attribute("llm.model_name", "model-a")
        span.set_attribute("llm.token_count.prompt", 1000)
        span.set_attribute("llm.token_count.completion", 100)
        span.end()

    async def arequest(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = start()
        try:
            answer = await base(self, *args, **kwargs)
        except BaseException:
            span.end()
            raise
        finish(span)
        return answer

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = start()
        try:
            answer = base(self, *args, **kwargs)
        except BaseException:
            span.end()
            raise
        finish(span)
        return answer

    wrapper: Any = arequest if client_kind == "async" else request
    wrapper.__wrapped__ = base  # as wrapt's and functools.wraps' wrappers say
    cls.request = wrapper
    api.delay = 0.2
    try:
        limits = {"budget_usd": FIVE_CALLS, "enforce_budget": True}
        with agent_session("w", **limits, **otel.kwargs()) as session:
            guarded = hasattr(cls.__dict__["request"], "__wrapped__")
            if client_kind == "async":
                outcomes = asyncio.run(_async_burst(api))
            else:
                client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
                messages = [{"role": "user", "content": "hi"}]
                outcomes = _burst(
                    session,
                    lambda: client.chat.completions.create(model="model-a", messages=messages),
                )
            assert session._ledger.reserved_nano == 0
    finally:
        guard.uninstall_guard()
        del cls.request
    assert len(api.requests) <= 6  # five calls' budget, and at most the one that crosses
    assert len(api.requests) == session._ledger.calls  # each request counted once
    assert outcomes.count("ran") + outcomes.count("crossed") == len(api.requests)
    assert session.tracker.total_cost() == pytest.approx(len(api.requests) * ONE_CALL)
    assert membership.WAITING == {}
    assert guarded  # the wrapper set on the client class, guarded
