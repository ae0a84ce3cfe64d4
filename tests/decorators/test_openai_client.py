"""The real openai client against a local stand-in for the API, streamed and not.

A plain ``@agent_turn`` function may simply return the SDK's stream object: the
turn then stays open until that stream is consumed, closed or dropped, and is
priced from its final ``include_usage`` chunk.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry import trace

from fake_openai import FakeOpenAI, serve
from otel_harness import Otel
from techrevati.runtime import ModelPricing, Orchestrator, UsageSnapshot, register_pricing
from techrevati.runtime.decorators import agent_session, agent_turn
from techrevati.runtime.pricing import price_call
from techrevati.runtime.telemetry.calls.turn import _DECLARED_CHECKED, _GIVEN_CHECKED
from techrevati.runtime.usage_tracking import usd_text

from . import payloads as p
from .clients import MESSAGES, chat_turns


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with serve(FakeOpenAI(p.OPENAI_COMPLETION, p.OPENAI_STREAM)) as fake:
        yield fake.url


@pytest.fixture(autouse=True)
def gpt_prices() -> None:
    register_pricing("gpt-4o-mini", ModelPricing(*p.OPENAI_RATES))


COMPLETION_COST = (1000 * 0.15 + 4000 * 0.075 + 100 * 0.60) / 1e6


def test_sync_client_completion_and_returned_stream(otel: Otel, api: str) -> None:
    client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)

    ask, stream = chat_turns(client)

    with agent_session("writer", **otel.kwargs()) as session:
        answer = ask()
        assert answer.choices[0].message.content == "RAG is retrieval first."
        returned = stream()
        assert isinstance(returned, openai.Stream)  # still the SDK's type to the caller
        assert len(otel.spans("chat")) == 1  # the stream's turn is still open
        text = "".join(c.choices[0].delta.content or "" for c in returned if c.choices)
        assert text == "Retrieval-augmented generation."
        with stream() as early:  # closed early through the context manager
            next(iter(early))
    chats = otel.spans("chat gpt-4o-mini")
    assert len(chats) == 3
    completion, streamed, closed = (dict(c.attributes or {}) for c in chats)
    assert completion["techrevati.cost.usd"] == pytest.approx(COMPLETION_COST, rel=1e-12)
    assert completion["gen_ai.usage.reasoning.output_tokens"] == 40
    assert streamed["techrevati.cost.usd"] == pytest.approx(p.OPENAI_STREAM_COST, rel=1e-12)
    assert streamed["gen_ai.usage.cache_read.input_tokens"] == 1920
    # Stopped before the usage chunk: its tokens are unknown, so left unset (not 0).
    assert "gen_ai.usage.input_tokens" not in closed
    assert closed["techrevati.usage.missing"] is True
    assert "error.type" not in closed
    assert all(otel.ended_once(c) for c in chats)
    assert session.tracker.total_cost() == pytest.approx(
        COMPLETION_COST + p.OPENAI_STREAM_COST, rel=1e-12
    )


def test_returned_stream_dropped_unread_still_ends_the_turn(otel: Otel, api: str) -> None:
    client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini")
    def stream() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    with agent_session("writer", **otel.kwargs()):
        before = trace.get_current_span()
        returned = stream()
        assert trace.get_current_span() is before
        del returned
        gc.collect()
        assert len(otel.spans("chat gpt-4o-mini")) == 1
        partly = stream()
        next(partly)
        del partly
        gc.collect()
        assert len(otel.spans("chat gpt-4o-mini")) == 2
    assert all(otel.ended_once(s) for s in otel.spans("chat"))


def test_returned_stream_closed_unread_ends_the_turn_at_close(otel: Otel, api: str) -> None:
    # Closing before the first chunk used to close a driver that had never started
    # (which runs none of it): the turn stayed open, unbooked, and its HTTP response
    # unreleased, until the session closed.
    client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini")
    def stream() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    with agent_session("writer", **otel.kwargs()) as session:
        gc.disable()  # the close alone must end it, not a collection
        try:
            returned = stream()
            released = returned.__wrapped__.response
            returned.close()
            assert released.is_closed
            assert session.tracker.turn_count == 1
            assert len(otel.spans("chat gpt-4o-mini")) == 1
            with stream():  # the context manager's exit closes it the same way
                pass
            assert session.tracker.turn_count == 2
        finally:
            gc.enable()
    chats = otel.spans("chat gpt-4o-mini")
    assert len(chats) == 2 and all(otel.ended_once(c) for c in chats)
    assert all("error.type" not in (c.attributes or {}) for c in chats)


def test_async_returned_stream_closed_unread_ends_the_turn_at_close(otel: Otel, api: str) -> None:
    client = openai.AsyncOpenAI(base_url=api, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini", provider="openai")
    async def stream() -> Any:
        return await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )

    async def main() -> tuple[int, int, bool]:
        async with agent_session("writer", **otel.kwargs()) as session:
            returned = await stream()
            response = returned.__wrapped__.response
            await returned.close()
            closed_once = session.tracker.turn_count
            async with await stream():
                pass
            both = session.tracker.turn_count
        await client.close()
        return closed_once, both, response.is_closed

    gc.disable()
    try:
        assert asyncio.run(main()) == (1, 2, True)
    finally:
        gc.enable()
    chats = otel.spans("chat gpt-4o-mini")
    assert len(chats) == 2 and all(otel.ended_once(c) for c in chats)


def test_async_client_returned_stream(otel: Otel, api: str) -> None:
    client = openai.AsyncOpenAI(base_url=api, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini", provider="openai")
    async def stream() -> Any:
        return await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )

    @agent_turn("gpt-4o-mini", provider="openai")
    async def relay() -> Any:  # the generator style over the same SDK stream
        async for chunk in await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        ):
            yield chunk

    async def main() -> Any:
        async with agent_session("writer", **otel.kwargs()) as session:
            returned = await stream()
            assert isinstance(returned, openai.AsyncStream)
            chunks = [c async for c in returned]
            assert chunks[-1].usage.prompt_tokens == 2006
            assert len([c async for c in relay()]) == len(p.OPENAI_STREAM)
            async with await stream() as early:
                await early.__anext__()
        await client.close()
        return session

    session = asyncio.run(main())
    chats = [dict(c.attributes or {}) for c in otel.spans("chat gpt-4o-mini")]
    assert [c["techrevati.cost.usd"] for c in chats] == [
        pytest.approx(p.OPENAI_STREAM_COST, rel=1e-12),
        pytest.approx(p.OPENAI_STREAM_COST, rel=1e-12),
        0.0,
    ]
    assert session.tracker.total_cost() == pytest.approx(2 * p.OPENAI_STREAM_COST, rel=1e-12)
    assert all(otel.ended_once(s) for s in otel.spans("chat"))


def test_a_turn_declaring_a_cheaper_model_than_the_one_that_answered_warns_once(
    otel: Otel,
) -> None:
    # model= prices the turn (as documented): a call that went to a dearer model was
    # booked, and held against the budget, at the declared price without a word.
    register_pricing("declared-cheap", ModelPricing(1.0, 1.0))
    register_pricing("answered-dear", ModelPricing(10.0, 10.0))
    register_pricing("declared-cheap-2026-01-01", ModelPricing(1.0, 1.0))
    answer = {"model": "answered-dear", "usage": {"prompt_tokens": 1000, "completion_tokens": 0}}
    dated = {**answer, "model": "declared-cheap-2026-01-01"}

    @agent_turn("declared-cheap")
    def ask(response: dict[str, Any]) -> dict[str, Any]:
        return response

    _DECLARED_CHECKED.clear()  # warned once per process: whatever ran before

    with agent_session("w", **otel.kwargs()) as session:
        with pytest.warns(RuntimeWarning, match="declared model 'declared-cheap'") as warned:
            ask(answer)
            ask(answer)
        ask(dated)  # the same price: nothing to say
    assert len([w for w in warned if "declared model" in str(w.message)]) == 1
    assert warned[0].filename == __file__
    assert "($0.0010)" in str(warned[0].message) and "costs $0.0100." in str(warned[0].message)
    assert session.tracker.total_cost() == pytest.approx(0.003)  # the documented rule stands


def test_a_turn_returning_text_of_a_dearer_model_than_declared_warns_once(
    otel: Otel, api: str
) -> None:
    # The usual body returns the answer's text, not the response: the declared-model
    # check only saw a returned response, so a turn declaring a cheap model that
    # called a dearer one was booked at the cheap price without a word (a probe: 3 of
    # 3 calls at $0.021 where each cost $0.35, under a $0.50 enforced budget). The
    # client guard read the response inside the turn: that reading is checked too.
    register_pricing("declared-cheap", ModelPricing(0.01, 0.01))
    client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)

    @agent_turn("declared-cheap")
    def ask() -> str:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return answer.choices[0].message.content or ""

    _DECLARED_CHECKED.clear()  # warned once per process: whatever ran before

    with (
        agent_session("w", **otel.kwargs()) as session,
        pytest.warns(RuntimeWarning, match="declared model 'declared-cheap'") as warned,
    ):
        assert ask() == "RAG is retrieval first."
        ask()
    said = [w for w in warned if "declared model" in str(w.message)]
    assert len(said) == 1
    assert said[0].filename == __file__
    message = str(said[0].message)
    assert "the response came from 'gpt-4o-mini'" in message
    assert f"${COMPLETION_COST:.6f}" in message  # what the call that answered costs
    declared = price_call("declared-cheap", UsageSnapshot(1000, 100, 0, 4000)).cost
    assert f"${declared:.6f}" in message
    # The documented rule stands: model= prices the turn.
    assert session.tracker.total_cost() == pytest.approx(2 * declared, rel=1e-12)


def test_usage_given_below_what_the_response_used_warns_once(otel: Otel, api: str) -> None:
    # The tutorial's shape, `usage=UsageSnapshot(...)` left as the page has it, with a
    # real client call as the body: booked at usage= (it wins, as documented), a
    # fraction of what the provider billed, silently (a probe: 10 of 10 calls sent under
    # a $0.05 budget, booked $0.0147 of $0.21). The guard read the response: said once.
    client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)
    given = UsageSnapshot(input_tokens=10, output_tokens=2)
    orch = Orchestrator(role="writer", **otel.kwargs())
    _GIVEN_CHECKED.discard("gpt-4o-mini")
    with warnings.catch_warnings(record=True) as warned, orch.session() as session:
        warnings.simplefilter("always")
        for _ in range(3):
            session.run_turn(
                lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
                model="gpt-4o-mini",
                usage=given,
            )
        # A usage= at least what the response used says nothing.
        session.run_turn(
            lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
            model="gpt-4o-mini",
            usage=UsageSnapshot(input_tokens=6000, output_tokens=200),
        )
    said = [w for w in warned if "was given usage=" in str(w.message)]
    assert len(said) == 1
    assert said[0].filename == __file__
    message = str(said[0].message)
    booked = price_call("gpt-4o-mini", given).cost
    # (Each amount exact as printed: ``usd_text``, not six decimals, which printed the
    # $0.0000027 given as "$0.000003".)
    assert f"worth ${usd_text(booked)} (10 input, 2 output tokens)" in message
    assert f"5000 input and 100 output tokens, worth ${usd_text(COMPLETION_COST)}" in message
    expected = 3 * booked + price_call("gpt-4o-mini", UsageSnapshot(6000, 200)).cost
    assert session.summary()["usage"]["total_cost_usd"] == pytest.approx(expected, abs=1e-4)
    assert session.tracker.total_cost() == pytest.approx(expected, rel=1e-12)


def test_usage_given_as_the_response_s_under_another_model_blames_the_model(
    otel: Otel, api: str
) -> None:
    # A review: usage= exactly the response's, on a turn declaring a cheaper model than
    # the one called, was said to be "worth less than the response" (the two priced at
    # different models, the token counts equal), and the model was not named.
    register_pricing("declared-cheap", ModelPricing(0.01, 0.01))
    client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)
    same = UsageSnapshot(input_tokens=1000, output_tokens=100, cache_read_tokens=4000)

    @agent_turn("declared-cheap", usage=same)
    def ask() -> str:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return answer.choices[0].message.content or ""

    _DECLARED_CHECKED.clear()
    _GIVEN_CHECKED.discard("declared-cheap")
    with warnings.catch_warnings(record=True) as caught, agent_session("w", **otel.kwargs()):
        warnings.simplefilter("always")
        ask()
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "was given usage=" in m]
    assert len([m for m in said if "the response came from 'gpt-4o-mini'" in m]) == 1


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_generator_turn_its_caller_stops_reading_is_booked_at_its_request(
    otel: Otel, api: str, how: str
) -> None:
    # decorators.md's streaming turn (`yield from` the client's stream) under an
    # enforced budget, its caller done after the first chunk: the turn ends there,
    # but the client's stream is closed only when collected. The turn was booked at
    # $0 and the session then refused gpt-4o-mini for good (UnpricedModelError).
    from techrevati.runtime.telemetry.limits.estimate import request_tokens

    prompt = [{"role": "user", "content": "x" * 3900}]
    ask: dict[str, Any] = {"model": "gpt-4o-mini", "messages": prompt, "max_tokens": 100}
    sync_client = openai.OpenAI(base_url=api, api_key="test", max_retries=0)
    async_client = openai.AsyncOpenAI(base_url=api, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini")
    def chunks() -> Iterator[Any]:
        yield from sync_client.chat.completions.create(**ask, stream=True)

    @agent_turn("gpt-4o-mini")
    async def achunks() -> Any:
        async for chunk in await async_client.chat.completions.create(**ask, stream=True):
            yield chunk

    async def read_one() -> None:
        stream = achunks()
        async for _ in stream:
            break
        await stream.aclose()

    with (
        pytest.warns(RuntimeWarning, match="booked at an estimate"),
        agent_session("w", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session,
    ):
        gc.disable()  # the turn's end must book it, not a collection
        try:
            if how == "sync":
                for _ in chunks():
                    break
            else:
                asyncio.run(read_one())
            estimate = request_tokens({"messages": prompt}, "openai")[0] * 0.15 / 1e6
            assert session.tracker.total_cost() == pytest.approx(estimate, rel=1e-9)
        finally:
            gc.enable()
        sync_client.chat.completions.create(**ask)  # the model is not refused after it
    assert session._iteration_count == 2
