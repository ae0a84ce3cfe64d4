"""A burst of capped AsyncOpenAI calls under the official OpenAI instrumentation.

Usage: ``python async_cap_scenario.py``. It starts the local API stand-in,
switches on the official instrumentation (``opentelemetry-instrumentation-
genai-openai``) and nothing of ours (the limits processor and the client guard
come with the session), and runs bursts of concurrent ``max_tokens=50`` calls
of a model nothing is known of, under an enforced budget of 3.5 calls. It
prints one JSON object: for each burst, how many requests reached the server,
how each call ended, and what the first refusal said was reserved; and what
the instrumentation's spans carried of ``gen_ai.request.max_tokens`` when they
started and when they ended.

One call is 120 input tokens (100 of them cache reads) and 30 output tokens
at $100/$200/$10 per million input/output/cache-read: exactly $0.009.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

# The stand-in lives beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openai
import standin
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from techrevati.runtime import BudgetExceededError, ModelPricing, agent_session, register_pricing

MODEL = "gpt-interop"
ONE_CALL = 0.009
CALLS = 4
MAX_TOKENS = 50
RESULT_MARK = "ASYNC-CAP-RESULT "

MAX_TOKENS_ATTRIBUTE = "gen_ai.request.max_tokens"


class CapSeen(SpanProcessor):
    """What the model spans carried of ``gen_ai.request.max_tokens``, at start and at end."""

    def __init__(self) -> None:
        self.at_start: list[Any] = []
        self.at_end: list[Any] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.name.startswith("chat"):
            self.at_start.append((span.attributes or {}).get(MAX_TOKENS_ATTRIBUTE))

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith("chat"):
            self.at_end.append((span.attributes or {}).get(MAX_TOKENS_ATTRIBUTE))


async def _burst(api: standin.StandIn, client: openai.AsyncOpenAI) -> dict[str, Any]:
    """CALLS concurrent calls, each asking for MAX_TOKENS, under a budget for 3.5 calls."""
    before = len(api.hits)
    refusals: list[BudgetExceededError] = []

    async def one(i: int) -> str:
        try:
            await client.chat.completions.create(
                model=MODEL,
                # The same size for every call: "q0" ... "q3".
                messages=[{"role": "user", "content": f"q{i}"}],
                max_tokens=MAX_TOKENS,
            )
        except BudgetExceededError as stop:
            refusals.append(stop)
            return "crossed" if stop.site is not None and stop.site.ran else "refused"
        return "ran"

    async with agent_session("burst", budget_usd=3.5 * ONE_CALL, enforce_budget=True) as session:
        outcomes = list(await asyncio.gather(*(one(i) for i in range(CALLS))))
        spent = session.tracker.total_cost()
    first = refusals[0] if refusals else None
    return {
        "hits": len(api.hits) - before,
        "outcomes": sorted(outcomes),
        "spent": spent,
        "reserved_usd": first.reserved_usd if first is not None else None,
        "committed_usd": first.current_cost_usd if first is not None else None,
    }


async def _scenarios(api: standin.StandIn) -> dict[str, Any]:
    url = api.url + "/v1"
    # A fresh client: its first request awaits its platform lookup (on a thread) before
    # it is built, so every span of the burst starts before the guard sees any request.
    fresh = await _burst(api, openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0))
    # A client that sent before, outside any session (nothing learned of the model).
    warm_client = openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
    await warm_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    warm = await _burst(api, warm_client)
    return {"fresh": fresh, "warm": warm}


def main() -> None:
    register_pricing(MODEL, ModelPricing(100.0, 200.0, cache_read_per_million=10.0))
    provider = TracerProvider()
    seen = CapSeen()
    provider.add_span_processor(seen)
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    with standin.serve() as api:
        results = asyncio.run(_scenarios(api))
    results["max_tokens_at_start"] = seen.at_start
    results["max_tokens_at_end"] = seen.at_end
    print(RESULT_MARK + json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
