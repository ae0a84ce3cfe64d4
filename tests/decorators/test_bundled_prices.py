"""Real ``openai`` and ``anthropic`` clients, priced from the bundled database.

Each test drives the real SDK client against a local stand-in of the
provider's HTTP API, inside ``@agent_turn`` / ``agent_session``, and registers
no price for the model it calls. The expected dollars are written out from the
providers' published per-million-token rates (OpenAI and Anthropic pricing
pages), not read from ``genai-prices``, so a wrong database entry, a wrong
mapping of token kinds or a double-priced reasoning token fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

import fake_anthropic
from fake_openai import FakeOpenAI, serve
from otel_harness import Otel
from techrevati.runtime import (
    PRICING_TABLE,
    BudgetExceededError,
    ModelPricing,
    UnpricedModelError,
    has_pricing,
    register_pricing,
)
from techrevati.runtime.decorators import agent_session, agent_turn
from techrevati.runtime.pricing import price_source
from techrevati.runtime.telemetry.calls.turn import _DECLARED_CHECKED

from . import payloads as p
from .clients import MESSAGES, chat_turns

COST = "techrevati.cost.usd"

# Published rates, USD per million tokens.
GPT_4O_MINI = {"input": 0.15, "cached_input": 0.075, "output": 0.60}
CLAUDE_HAIKU_4_5 = {"input": 1.00, "cache_write_5m": 1.25, "cache_read": 0.10, "output": 5.00}
# Claude Sonnet 4.5 bills a whole request at the long-context rates once its
# input (uncached + cache reads + cache writes) exceeds 200,000 tokens.
CLAUDE_SONNET_4_5 = {"input": 3.00, "cache_write_5m": 3.75, "cache_read": 0.30, "output": 15.00}
CLAUDE_SONNET_4_5_LONG = {
    "input": 6.00,
    "cache_write_5m": 7.50,
    "cache_read": 0.60,
    "output": 22.50,
}


@pytest.fixture(scope="module")
def openai_api() -> Iterator[FakeOpenAI]:
    with serve(FakeOpenAI(p.OPENAI_COMPLETION, p.OPENAI_STREAM)) as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_api() -> Iterator[fake_anthropic.FakeAnthropic]:
    first = fake_anthropic.message("Hi.", input_tokens=1, output_tokens=1)
    with fake_anthropic.serve(fake_anthropic.FakeAnthropic(first)) as fake:
        yield fake


def _cost(span_attrs: Any) -> float:
    value = dict(span_attrs or {})[COST]
    assert isinstance(value, float)
    return value


def test_gpt_4o_mini_priced_from_the_database(otel: Otel, openai_api: FakeOpenAI) -> None:
    assert "gpt-4o-mini" not in PRICING_TABLE
    client = openai.OpenAI(base_url=openai_api.url, api_key="test", max_retries=0)

    ask, stream = chat_turns(client)

    with agent_session("writer", **otel.kwargs()) as session:
        ask()
        "".join(c.choices[0].delta.content or "" for c in stream() if c.choices)

    # 5,000 prompt tokens of which 4,000 cached; 100 completion tokens of which
    # 40 are reasoning: reasoning is output, billed once.
    completion = (
        1000 * GPT_4O_MINI["input"]
        + 4000 * GPT_4O_MINI["cached_input"]
        + 100 * GPT_4O_MINI["output"]
    ) / 1e6
    # Streamed: 2,006 prompt (1,920 cached), 300 completion (64 reasoning).
    streamed = (
        86 * GPT_4O_MINI["input"] + 1920 * GPT_4O_MINI["cached_input"] + 300 * GPT_4O_MINI["output"]
    ) / 1e6
    spans = otel.spans("chat gpt-4o-mini")
    assert len(spans) == 2
    assert _cost(spans[0].attributes) == pytest.approx(completion, rel=1e-12)
    assert _cost(spans[1].attributes) == pytest.approx(streamed, rel=1e-12)
    assert session.tracker.total_cost() == pytest.approx(completion + streamed, rel=1e-12)
    assert price_source("gpt-4o-mini", "openai") == "bundled"
    assert "gpt-4o-mini" not in PRICING_TABLE  # priced without registering anything


def test_claude_haiku_cache_write_and_read_rates(
    otel: Otel, anthropic_api: fake_anthropic.FakeAnthropic
) -> None:
    anthropic_api.message = fake_anthropic.message(
        "Cached.",
        input_tokens=1200,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=50_000,
        output_tokens=400,
    )
    client = anthropic.Anthropic(base_url=anthropic_api.url, api_key="test", max_retries=0)

    @agent_turn("claude-haiku-4-5", provider="anthropic")
    def ask() -> Any:
        return client.messages.create(
            model="claude-haiku-4-5", max_tokens=500, messages=[{"role": "user", "content": "hi"}]
        )

    with agent_session("writer", **otel.kwargs()) as session:
        answer = ask()
        assert answer.content[0].text == "Cached."
    rates = CLAUDE_HAIKU_4_5
    expected = (
        1200 * rates["input"]
        + 3000 * rates["cache_write_5m"]
        + 50_000 * rates["cache_read"]
        + 400 * rates["output"]
    ) / 1e6
    span = otel.span("chat claude-haiku-4-5")
    assert _cost(span.attributes) == pytest.approx(expected, rel=1e-12)
    assert session.tracker.total_cost() == pytest.approx(expected, rel=1e-12)
    assert anthropic_api.requests[-1]["model"] == "claude-haiku-4-5"
    assert has_pricing("claude-haiku-4-5") and "claude-haiku-4-5" not in PRICING_TABLE


# The client warns that this model retires on 2026-11-30; it is the Sonnet whose
# long-context rates the test can state from Anthropic's price list.
@pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-5' is deprecated")
def test_claude_sonnet_long_context_tier_per_call(
    otel: Otel, anthropic_api: fake_anthropic.FakeAnthropic
) -> None:
    client = anthropic.Anthropic(base_url=anthropic_api.url, api_key="test", max_retries=0)
    model = "claude-sonnet-4-5"

    @agent_turn(model, provider="anthropic")
    def ask() -> Any:
        return client.messages.create(
            model=model, max_tokens=2000, messages=[{"role": "user", "content": "summarise"}]
        )

    short = {"input": 150_000, "write": 0, "read": 50_000, "out": 1000}  # exactly 200,000
    long = {"input": 150_000, "write": 1000, "read": 50_000, "out": 1000}  # 201,000
    with agent_session("writer", **otel.kwargs()) as session:
        for usage in (short, long, short):
            anthropic_api.message = fake_anthropic.message(
                "ok",
                input_tokens=usage["input"],
                cache_creation_input_tokens=usage["write"],
                cache_read_input_tokens=usage["read"],
                output_tokens=usage["out"],
            )
            ask()

    def dollars(usage: dict[str, int], rates: dict[str, float]) -> float:
        return (
            usage["input"] * rates["input"]
            + usage["write"] * rates["cache_write_5m"]
            + usage["read"] * rates["cache_read"]
            + usage["out"] * rates["output"]
        ) / 1e6

    base = dollars(short, CLAUDE_SONNET_4_5)
    over = dollars(long, CLAUDE_SONNET_4_5_LONG)
    assert base == pytest.approx(0.48, rel=1e-12)  # the arithmetic itself, spelled out
    assert over == pytest.approx(0.96, rel=1e-12)
    costs = [_cost(s.attributes) for s in otel.spans(f"chat {model}")]
    assert costs == [
        pytest.approx(base, rel=1e-12),
        pytest.approx(over, rel=1e-12),
        pytest.approx(base, rel=1e-12),
    ]
    tracker = session.tracker
    assert tracker.total_cost() == pytest.approx(2 * base + over, rel=1e-12)
    # Recomputed from the tracker's per-band sums (not the running total) after
    # an unrelated price change: still each call at its own band.
    register_pricing("unrelated-model", ModelPricing(1.0, 1.0))
    assert tracker.total_cost() == pytest.approx(2 * base + over, rel=1e-12)
    assert tracker.per_model_summary() == {model: pytest.approx(2 * base + over, rel=1e-12)}


def test_registered_gpt_4o_does_not_price_gpt_4o_mini(otel: Otel, openai_api: FakeOpenAI) -> None:
    register_pricing("gpt-4o", ModelPricing(100.0, 100.0))
    client = openai.OpenAI(base_url=openai_api.url, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini", provider="openai")
    def mini() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    @agent_turn("gpt-4o", provider="openai")
    def full() -> Any:
        return client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    with agent_session("writer", **otel.kwargs()):
        mini()
        # The stand-in answers every request as gpt-4o-mini-2024-07-18: the turn that
        # declared gpt-4o is priced as declared, and says so (once per process: reset).
        _DECLARED_CHECKED.clear()
        with pytest.warns(RuntimeWarning, match="declared model 'gpt-4o' but the response"):
            full()
    mini_cost = (1000 * 0.15 + 4000 * 0.075 + 100 * 0.60) / 1e6  # the database's gpt-4o-mini
    full_cost = (1000 * 100.0 + 100 * 100.0) / 1e6  # registered: cache reads are free here
    assert _cost(otel.span("chat gpt-4o-mini").attributes) == pytest.approx(mini_cost, rel=1e-12)
    assert _cost(otel.span("chat gpt-4o").attributes) == pytest.approx(full_cost, rel=1e-12)
    assert price_source("gpt-4o") == "registered"
    assert price_source("gpt-4o-mini") == "bundled"


def test_registered_rate_prices_the_dated_response_model(
    otel: Otel, openai_api: FakeOpenAI
) -> None:
    """Issue 20's case: a negotiated rate for gpt-4o-mini, the API answers -2024-07-18."""
    register_pricing("gpt-4o-mini", ModelPricing(100.0, 0.0))
    client = openai.OpenAI(base_url=openai_api.url, api_key="test", max_retries=0)

    @agent_turn(provider="openai")  # no model: the turn learns it from the response
    def ask() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    with agent_session("writer", **otel.kwargs()) as session:
        ask()
    # 1,000 uncached input tokens at $100/M; cache reads and output registered free.
    assert session.tracker.total_cost() == pytest.approx(0.1, rel=1e-12)
    span = otel.span("chat gpt-4o-mini-2024-07-18")
    assert _cost(span.attributes) == pytest.approx(0.1, rel=1e-12)
    assert dict(span.attributes or {})["techrevati.cost.source"] == "registered"


def test_registered_rate_prices_instrumented_calls(openai_api: FakeOpenAI) -> None:
    """The official OpenAI instrumentation's spans, priced by the processor, follow it too."""
    from fake_openai import instrumented_openai
    from techrevati.runtime import Orchestrator

    register_pricing("openai/gpt-4o-mini", ModelPricing(100.0, 0.0))  # a gateway's spelling
    client = openai.OpenAI(base_url=openai_api.url, api_key="test", max_retries=0)
    with instrumented_openai() as (provider, _exporter):
        orch = Orchestrator(role="writer", phase="draft", tracer_provider=provider)
        with orch.session() as session:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert session.tracker.total_cost() == pytest.approx(0.1, rel=1e-12)


def test_registered_family_still_prices_a_dated_name_by_prefix(otel: Otel) -> None:
    completion = p.fresh(p.OPENAI_COMPLETION)
    completion["model"] = "family-20260514"
    register_pricing("family", ModelPricing(2.0, 4.0, cache_read_per_million=1.0))
    with serve(FakeOpenAI(completion)) as api:
        client = openai.OpenAI(base_url=api.url, api_key="test", max_retries=0)

        @agent_turn("family-20260514")
        def ask() -> Any:
            return client.chat.completions.create(model="family-20260514", messages=MESSAGES)

        with agent_session("writer", **otel.kwargs()) as session:
            ask()
    expected = (1000 * 2.0 + 4000 * 1.0 + 100 * 4.0) / 1e6
    assert _cost(otel.span("chat family-20260514").attributes) == pytest.approx(expected, rel=1e-12)
    assert session.tracker.total_cost() == pytest.approx(expected, rel=1e-12)
    assert price_source("family-20260514") == "registered"


def test_enforced_budget_holds_on_a_database_price(otel: Otel, openai_api: FakeOpenAI) -> None:
    """The issue's case: an unregistered gpt model under a tiny enforced budget."""
    client = openai.OpenAI(base_url=openai_api.url, api_key="test", max_retries=0)

    @agent_turn("gpt-4o-mini", provider="openai")
    def ask() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    per_call = (1000 * 0.15 + 4000 * 0.075 + 100 * 0.60) / 1e6  # $0.00051
    sent = len(openai_api.requests)
    with (
        pytest.raises(BudgetExceededError) as crossed,
        agent_session("writer", budget_usd=0.0005, enforce_budget=True, **otel.kwargs()),
    ):
        ask()  # runs, is booked at $0.00051, then raises: it crossed the budget
    assert crossed.value.current_cost_usd == pytest.approx(per_call, rel=1e-12)
    assert not isinstance(crossed.value, UnpricedModelError)
    assert len(openai_api.requests) == sent + 1

    with agent_session("writer", budget_usd=0.0008, enforce_budget=True, **otel.kwargs()):
        ask()
        with pytest.raises(BudgetExceededError):
            ask()  # spent $0.00102 > $0.0008 after this one
        with pytest.raises(BudgetExceededError):
            ask()  # refused before it runs
    assert len(openai_api.requests) == sent + 3


def test_unknown_model_refused_but_database_model_admitted(
    otel: Otel, anthropic_api: fake_anthropic.FakeAnthropic
) -> None:
    anthropic_api.message = fake_anthropic.message("ok", input_tokens=100, output_tokens=10)
    client = anthropic.Anthropic(base_url=anthropic_api.url, api_key="test", max_retries=0)

    def caller(model: str) -> Any:
        @agent_turn(model, provider="anthropic")
        def ask() -> Any:
            return client.messages.create(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )

        return ask

    sent = len(anthropic_api.requests)
    with agent_session("writer", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as session:
        caller("claude-haiku-4-5")()  # priced from the database: admitted
        with pytest.raises(UnpricedModelError) as refused:
            caller("claude-house-finetune-1")()
    assert refused.value.model == "claude-house-finetune-1"
    assert "register_pricing" in str(refused.value)
    assert [r["model"] for r in anthropic_api.requests[sent:]] == ["claude-haiku-4-5"]
    assert session.tracker.total_cost() == pytest.approx((100 * 1.00 + 10 * 5.00) / 1e6)


def test_span_records_where_the_price_came_from(otel: Otel, openai_api: FakeOpenAI) -> None:
    register_pricing("gpt-4o", ModelPricing(2.5, 10.0))
    client = openai.OpenAI(base_url=openai_api.url, api_key="test", max_retries=0)

    def caller(model: str) -> Any:
        @agent_turn(model, provider="openai")
        def ask() -> Any:
            return client.chat.completions.create(model=model, messages=MESSAGES)

        return ask

    with agent_session("writer", allow_unpriced=True, **otel.kwargs()):
        for model in ("gpt-4o-mini", "gpt-4o", "house-model-7"):
            caller(model)()
    sources = {
        s.name: dict(s.attributes or {})["techrevati.cost.source"] for s in otel.spans("chat ")
    }
    assert sources == {
        "chat gpt-4o-mini": "bundled",
        "chat gpt-4o": "registered",
        "chat house-model-7": "unpriced",
    }
