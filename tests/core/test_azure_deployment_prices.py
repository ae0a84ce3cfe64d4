"""Azure OpenAI deployments under a budget: booked at what answered, or at your rate.

The real ``openai.AzureOpenAI`` client against the local stand-in, which
answers every deployment with the model a test sets. An Azure deployment is
named by its owner, often like a base model (``gpt-4o``) while another model
serves it; the response names that model. Expected dollars are written out from
OpenAI's published per-million-token rates for 1000 input and 200 output tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import openai
import pytest

from fake_openai import FakeOpenAI, instrumented_openai, serve
from otel_harness import Otel
from techrevati.runtime import ModelPricing, UnpricedModelError, agent_session, register_pricing
from techrevati.runtime.telemetry.limits import guard


def _cost(input_per_million: float, output_per_million: float) -> float:
    return (1000 * input_per_million + 200 * output_per_million) / 1e6


GPT_4O = _cost(2.50, 10.00)
GPT_4O_2024_05_13 = _cost(5.00, 15.00)
GPT_4O_MINI = _cost(0.15, 0.60)
GPT_4 = _cost(30.00, 60.00)
GPT_4_1 = _cost(2.00, 8.00)
GPT_4_1_NANO = _cost(0.10, 0.40)
GPT_5 = _cost(1.25, 10.00)
GPT_5_NANO = _cost(0.05, 0.40)
O3 = _cost(2.00, 8.00)
O3_MINI = _cost(1.10, 4.40)

COMPLETION: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
}
ENFORCED: dict[str, Any] = {"budget_usd": 1.0, "enforce_budget": True}


@pytest.fixture(autouse=True)
def fresh_guard() -> Iterator[None]:
    guard.uninstall_guard()
    yield
    guard.uninstall_guard()


def _azure(api: FakeOpenAI) -> openai.AzureOpenAI:
    endpoint = api.url.removesuffix("/v1")
    return openai.AzureOpenAI(
        azure_endpoint=endpoint, api_version="2024-10-21", api_key="k", max_retries=0
    )


def _ask(client: openai.AzureOpenAI, deployment: str) -> None:
    client.chat.completions.create(model=deployment, messages=[{"role": "user", "content": "hi"}])


def _door(instrumented: bool) -> AbstractContextManager[Any]:
    return instrumented_openai() if instrumented else nullcontext(None)


@pytest.mark.parametrize("instrumented", [False, True], ids=["bare", "official instrumentation"])
@pytest.mark.parametrize(
    ("deployment", "served", "cost", "asked_cost"),
    [
        # Before: each was booked at the price of the name asked for.
        ("gpt-4o", "gpt-4o-2024-05-13", GPT_4O_2024_05_13, GPT_4O),
        ("gpt-4o", "gpt-4o-mini-2024-07-18", GPT_4O_MINI, GPT_4O),
        ("gpt-4", "gpt-4o-2024-08-06", GPT_4O, GPT_4),
        ("gpt-4.1", "gpt-4.1-nano-2025-04-14", GPT_4_1_NANO, GPT_4_1),
        ("gpt-5", "gpt-5-nano-2025-08-07", GPT_5_NANO, GPT_5),
        ("o3", "o3-mini-2025-01-31", O3_MINI, O3),
    ],
)
def test_a_deployment_named_like_a_model_is_booked_at_what_answered(
    instrumented: bool, deployment: str, served: str, cost: float, asked_cost: float, otel: Otel
) -> None:
    with serve(FakeOpenAI({**COMPLETION, "model": served})) as api, _door(instrumented) as door:
        traced = {"tracer_provider": door[0]} if door else otel.kwargs()
        with agent_session("w", **ENFORCED, **traced) as session:
            _ask(_azure(api), deployment)
    assert api.requests and cost != pytest.approx(asked_cost)
    assert session.tracker.per_model_summary() == {served: pytest.approx(cost, rel=1e-12)}


@pytest.mark.parametrize("instrumented", [False, True], ids=["bare", "official instrumentation"])
def test_a_snapshot_at_the_price_asked_for_stays_the_model_asked_for(
    instrumented: bool, otel: Otel
) -> None:
    answered = {**COMPLETION, "model": "gpt-4o-mini-2024-07-18"}
    with serve(FakeOpenAI(answered)) as api, _door(instrumented) as door:
        traced = {"tracer_provider": door[0]} if door else otel.kwargs()
        with agent_session("w", **ENFORCED, **traced) as session:
            _ask(_azure(api), "gpt-4o-mini")
    assert session.tracker.per_model_summary() == {"gpt-4o-mini": pytest.approx(GPT_4O_MINI)}


@pytest.mark.parametrize("instrumented", [False, True], ids=["bare", "official instrumentation"])
def test_your_rate_for_a_deployment_is_reserved_and_booked(instrumented: bool, otel: Otel) -> None:
    # Before: reserved at the registered rate, booked at the database's gpt-4o
    # ($0.0045 for $0.009).
    register_pricing("prod-4o", ModelPricing(5.0, 20.0))
    answered = {**COMPLETION, "model": "gpt-4o-2024-08-06"}
    with serve(FakeOpenAI(answered)) as api, _door(instrumented) as door:
        traced = {"tracer_provider": door[0]} if door else otel.kwargs()
        with agent_session("w", **ENFORCED, **traced) as session:
            _ask(_azure(api), "prod-4o")
            _ask(_azure(api), "prod-4o")
    assert session.tracker.per_model_summary() == {"prod-4o": pytest.approx(2 * _cost(5.0, 20.0))}
    assert session._ledger.learned_cost("prod-4o") == pytest.approx(_cost(5.0, 20.0))


def test_an_unpriced_deployment_under_an_enforced_budget_says_what_to_do(otel: Otel) -> None:
    answered = {**COMPLETION, "model": "gpt-4o-2024-08-06"}
    with serve(FakeOpenAI(answered)) as api:
        client = _azure(api)
        with (
            agent_session("w", **ENFORCED, **otel.kwargs()),
            pytest.raises(UnpricedModelError) as refused,
        ):
            _ask(client, "prod-4o")
        assert api.requests == []
        said = str(refused.value)
        assert "register_pricing('prod-4o', ModelPricing(input_per_million=" in said
        assert "Azure deployment" in said and "allow_unpriced=True" in said

        # What it says works: allow_unpriced books at the response's model's price,
        # and the next call of the name is reserved at what the first cost.
        with agent_session("w", **ENFORCED, allow_unpriced=True, **otel.kwargs()) as session:
            _ask(client, "prod-4o")
            _ask(client, "prod-4o")
        booked = session.tracker.per_model_summary()
        assert booked == {"gpt-4o-2024-08-06": pytest.approx(2 * GPT_4O)}
        assert session._ledger.learned_cost("prod-4o") == pytest.approx(GPT_4O)

        # A soft budget runs it, with a warning, at the response's model's price.
        with (
            pytest.warns(RuntimeWarning, match="'prod-4o' has no known price"),
            agent_session("w", budget_usd=1.0, **otel.kwargs()) as session,
        ):
            _ask(client, "prod-4o")
        assert session.tracker.total_cost() == pytest.approx(GPT_4O)
