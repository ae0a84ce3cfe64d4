"""GenAI semantic-convention attributes the conventions require and a bare turn left out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from fake_openai import FakeOpenAI, serve
from otel_harness import Otel
from techrevati.runtime import (
    MaxIterationsExceededError,
    ModelPricing,
    agent_session,
    agent_turn,
    register_pricing,
)

from .clients import chat_turns
from .payloads import OPENAI_COMPLETION, OPENAI_RATES, OPENAI_STREAM, fresh

PROVIDER = "gen_ai.provider.name"


def _completion() -> openai.types.chat.ChatCompletion:
    return openai.types.chat.ChatCompletion.model_validate(OPENAI_COMPLETION)


def test_a_failed_session_puts_its_error_type_on_the_duration_point(otel: Otel) -> None:
    @agent_turn("model-b")
    def ask() -> None:
        return None

    with (
        pytest.raises(MaxIterationsExceededError),
        agent_session("capped", max_iterations=1, **otel.kwargs()),
    ):
        ask()
        ask()
    with agent_session("fine", **otel.kwargs()):
        ask()

    span = otel.span("invoke_agent capped")
    assert (span.attributes or {})["error.type"] == "max_iterations"
    points = {
        a["gen_ai.agent.name"]: a.get("error.type")
        for a, _ in otel.metric_points("gen_ai.invoke_agent.duration")
    }
    assert points == {"capped": "max_iterations", "fine": None}


def test_session_durations_are_bucketed_for_minutes_and_calls_keep_theirs(otel: Otel) -> None:
    @agent_turn("model-b")
    def ask() -> None:
        return None

    with agent_session("w", **otel.kwargs()):
        ask()
    ((_, session),) = otel.metric_points("gen_ai.invoke_agent.duration")
    # opentelemetry-util-genai's boundaries for this metric: 0.1 s doubling to 409.6 s.
    assert list(session.explicit_bounds) == [0.1 * 2**i for i in range(13)]
    ((_, call),) = otel.metric_points("gen_ai.client.operation.duration")
    assert list(call.explicit_bounds) == [0.01 * 2**i for i in range(14)]


def test_streamed_turns_and_only_they_say_so(otel: Otel) -> None:
    register_pricing("gpt-4o-mini", ModelPricing(*OPENAI_RATES))

    @agent_turn("gpt-4o-mini", provider="openai")
    def generator() -> Iterator[Any]:
        yield from fresh(OPENAI_STREAM)

    @agent_turn("gpt-4o-mini", provider="openai")
    async def async_generator() -> AsyncIterator[Any]:
        for chunk in fresh(OPENAI_STREAM):
            yield chunk

    async def drain() -> None:
        async for _ in async_generator():
            pass

    with serve(FakeOpenAI(OPENAI_COMPLETION, OPENAI_STREAM)) as fake:
        ask, stream = chat_turns(openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0))
        with agent_session("w", **otel.kwargs()):
            ask()
            for _ in stream():  # stream=True: the SDK's stream, returned
                pass
            for _ in generator():
                pass
            asyncio.run(drain())
    streamed = [(s.attributes or {}).get("gen_ai.request.stream") for s in otel.spans("chat ")]
    assert streamed == [None, True, True, True]
