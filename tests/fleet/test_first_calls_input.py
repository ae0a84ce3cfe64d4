"""A fleet's first calls whose input is not all text in their body run one at a time.

An image part is billed by the image, not by the characters of its URL, so the
text estimate of such a request (~$0.03 here) bounds nothing. It was reserved
anyway: 12 concurrent first calls under a $5 scope, each billed $1, all went out
($12 booked, every one of them raising after it ran). Such a call now probes the
scope: it runs alone, the others wait for what it cost, then reserve that.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from fake_openai import FakeOpenAI, serve
from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    ModelPricing,
    agent_session,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import guard

from .redis_server import RedisServer

BUDGET = 5.0
#: What the stand-in bills each call: 1000 input tokens at $1000 per million.
ONE_CALL = 1.0
CALLS = 12
MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
]


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    register_pricing("image-model", ModelPricing(1000.0, 0.0))
    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "image-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 0, "total_tokens": 1000},
    }
    guard.uninstall_guard()
    with serve(FakeOpenAI(completion, delay=0.3)) as fake:
        yield fake
    guard.uninstall_guard()


def _outcome(error: BudgetExceededError | None) -> str:
    if error is None:
        return "ran"
    return "crossed" if error.site is not None and error.site.ran else "refused"


def test_first_image_calls_from_threads_probe_the_scope(
    redis_server: RedisServer, api: FakeOpenAI
) -> None:
    fleet = FleetLimits(redis_server.url, scope="image-threads", budget_usd=BUDGET)
    client = openai.OpenAI(base_url=api.url, api_key="k", max_retries=0)
    outcomes: list[str] = []
    start = threading.Barrier(CALLS)

    def one() -> None:
        start.wait()
        try:
            client.chat.completions.create(model="image-model", messages=MESSAGES, max_tokens=10)
        except BudgetExceededError as stop:
            outcomes.append(_outcome(stop))
        else:
            outcomes.append("ran")

    with agent_session("w", fleet=fleet) as session:
        threads = [threading.Thread(target=session.wrap(one)) for _ in range(CALLS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    usage = fleet.usage()
    assert len(api.requests) <= BUDGET / ONE_CALL + 1  # 12 before
    assert usage.spent_usd == pytest.approx(len(api.requests) * ONE_CALL)  # $12 before
    assert outcomes.count("refused") == CALLS - len(api.requests)  # 0 before


def test_first_image_calls_of_an_async_client_probe_the_scope(
    redis_server: RedisServer, api: FakeOpenAI
) -> None:
    fleet = FleetLimits(redis_server.url, scope="image-tasks", budget_usd=BUDGET)

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0)

        async def one() -> str:
            try:
                await client.chat.completions.create(
                    model="image-model", messages=MESSAGES, max_tokens=10
                )
            except BudgetExceededError as stop:
                return _outcome(stop)
            return "ran"

        results: Any = await asyncio.gather(*(one() for _ in range(CALLS)))
        return list(results)

    with agent_session("w", fleet=fleet):
        outcomes = asyncio.run(main())
    usage = fleet.usage()
    assert len(api.requests) <= BUDGET / ONE_CALL + 1  # 12 before
    assert usage.spent_usd == pytest.approx(len(api.requests) * ONE_CALL)  # $12 before
    assert outcomes.count("refused") == CALLS - len(api.requests)  # 0 before (7 crossed)
