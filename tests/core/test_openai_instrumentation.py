"""The official OpenAI instrumentation and the real openai client inside a session.

The only stand-in is the OpenAI API itself: a local HTTP server on 127.0.0.1
answering chat completions the way the API does, counting the requests it gets.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fake_openai import FakeOpenAI, instrumented_openai, serve
from techrevati.runtime import (
    BudgetExceededError,
    ModelPricing,
    Orchestrator,
    register_pricing,
)

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-test-2026-01-01",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 5000,
        "completion_tokens": 100,
        "total_tokens": 5100,
        "prompt_tokens_details": {"cached_tokens": 4000},
        "completion_tokens_details": {"reasoning_tokens": 40},
    },
}


@pytest.fixture
def fake_api() -> Iterator[FakeOpenAI]:
    with serve(FakeOpenAI(COMPLETION)) as fake:
        yield fake


@pytest.fixture
def instrumented() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with instrumented_openai() as pair:
        yield pair


def test_openai_spans_are_priced_and_over_budget_call_never_sent(
    fake_api: FakeOpenAI, instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = instrumented
    register_pricing(
        "gpt-test", ModelPricing(2.0, 8.0, cache_write_per_million=2.5, cache_read_per_million=0.5)
    )
    client = openai.OpenAI(base_url=fake_api.url, api_key="test-key", max_retries=0)
    per_call = (1000 * 2.0 + 4000 * 0.5 + 100 * 8.0) / 1e6  # 0.0048: cached at 0.5
    orch = Orchestrator(
        role="writer",
        phase="draft",
        budget_usd=0.005,
        enforce_budget=True,
        tracer_provider=provider,
    )
    with pytest.raises(BudgetExceededError) as refused, orch.session() as session:
        for _ in range(3):
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
    assert len(fake_api.requests) == 2  # the third request was never sent
    assert session.tracker.total_cost() == pytest.approx(2 * per_call, rel=1e-12)
    assert refused.value.current_cost_usd == pytest.approx(2 * per_call)
    model, usage = session.tracker.turns[0]
    assert model == "gpt-test"
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (1000, 4000, 100)
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert len(chats) == 2
    root = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent writer")
    assert all(c.parent is not None and c.parent.span_id == root.context.span_id for c in chats)


def test_openai_call_inside_run_turn_counts_once(
    fake_api: FakeOpenAI, instrumented: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = instrumented
    register_pricing("gpt-test", ModelPricing(2.0, 8.0, cache_read_per_million=0.5))
    client = openai.OpenAI(base_url=fake_api.url, api_key="test-key", max_retries=0)
    orch = Orchestrator(role="writer", phase="draft", max_iterations=5, tracer_provider=provider)
    with orch.session() as session:
        reply, _ = session.run_turn(
            lambda: client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            ),
            model="gpt-test",
        )
    assert reply.choices[0].message.content == "hello"
    assert session.tracker.turn_count == 1
    assert session._iteration_count == 1
    assert session.tracker.total_cost() == pytest.approx((1000 * 2.0 + 4000 * 0.5 + 800) / 1e6)
