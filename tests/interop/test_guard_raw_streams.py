"""The guard books a raw streamed response when its caller parses it (issue 21).

The OpenAI Agents SDK streams the Responses API through
``responses.with_streaming_response.create(...)``: the client hands back a raw
response whose body is not read yet, and the event stream exists only once
the caller ``parse()``s it. Real ``openai`` client, real guard, the local
stand-in server; no instrumentation, so the guard is the only door.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import standin

from techrevati.runtime import ModelPricing, agent_session, register_pricing

MODEL = "gpt-raw-stream"
ONE_CALL = 0.009  # 20 input at $100/M, 100 cache reads at $10/M, 30 output at $200/M


@pytest.fixture
def api() -> Iterator[standin.StandIn]:
    register_pricing(MODEL, ModelPricing(100.0, 200.0, cache_read_per_million=10.0))
    with standin.serve() as server:
        yield server


def test_sync_streaming_raw_response_is_booked_from_its_events(api: standin.StandIn) -> None:
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
    raw_stream = client.responses.with_streaming_response.create(
        model=MODEL, input="hi", stream=True
    )
    with agent_session("raw", max_iterations=3) as session, raw_stream as raw:
        events = [event.type for event in raw.parse()]
    assert events[-1] == "response.completed"
    assert session.tracker.turn_count == 1
    assert session.tracker.total_cost() == pytest.approx(ONE_CALL, rel=1e-12)


def test_async_streaming_raw_response_is_booked_from_its_events(api: standin.StandIn) -> None:
    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        raw_stream = client.responses.with_streaming_response.create(
            model=MODEL, input="hi", stream=True
        )
        async with agent_session("raw", max_iterations=3) as session, raw_stream as raw:
            stream = await raw.parse()
            assert await raw.parse() is stream  # parsed once, wrapped once
            async for _ in stream:
                pass
        assert session.tracker.turn_count == 1
        return session.tracker.total_cost()

    assert asyncio.run(run()) == pytest.approx(ONE_CALL, rel=1e-12)
