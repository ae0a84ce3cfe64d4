"""A first burst of OpenAI calls under a real client instrumentation and an enforced budget.

Usage: ``python first_burst_scenario.py PRODUCER``, PRODUCER one of ``genai``
(the official ``opentelemetry-instrumentation-genai-openai``), ``openllmetry``
or ``openinference``. It starts the local API stand-in, switches that
instrumentation on (nothing of ours: the limits processor and the client guard
come with the session), and sends 20 first calls of a model nothing is known
of, without ``max_tokens``, at once: from ``AsyncOpenAI`` on one event loop,
then from ``OpenAI`` on 20 threads, each under a budget for five calls. Each
request's upper bound (4,096 output tokens) is over the budget on its own, so
a call the budget refuses only for what the first call reserves must wait for
what that call cost. It prints one JSON object: per burst, the requests the
server got, how each call ended, what the session booked, and whether a span
still waits for its admission.

One call is 120 input tokens (100 of them cache reads) and 30 output tokens at
$100/$200/$10 per million input/output/cache-read: exactly $0.009.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# The stand-in lives beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openai
import standin
from opentelemetry.sdk.trace import TracerProvider

from techrevati.runtime import BudgetExceededError, ModelPricing, agent_session, register_pricing
from techrevati.runtime.telemetry.limits import membership

MODEL = "gpt-interop"
ONE_CALL = 0.009
CALLS = 20
BUDGET = 5 * ONE_CALL
RESULT_MARK = "FIRST-BURST-RESULT "
MESSAGES = [{"role": "user", "content": "hi"}]


def _instrument(producer: str, provider: TracerProvider) -> None:
    if producer == "genai":
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    elif producer == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    elif producer == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        raise SystemExit(f"unknown producer {producer!r}")
    OpenAIInstrumentor().instrument(tracer_provider=provider)


def _outcome(stop: BudgetExceededError | None) -> str:
    if stop is None:
        return "ran"
    return "crossed" if stop.site is not None and stop.site.ran else "refused"


def _report(api: standin.StandIn, before: int, outcomes: list[str], session: Any) -> dict[str, Any]:
    return {
        "requests": len(api.hits) - before,
        "outcomes": {kind: outcomes.count(kind) for kind in ("ran", "crossed", "refused")},
        "spent": session.tracker.total_cost(),
        "reserved_nano": session._ledger.reserved_nano,
        "waiting": len(membership.WAITING),
    }


async def _async_burst(api: standin.StandIn, provider: TracerProvider) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)

    async def one() -> str:
        try:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        except BudgetExceededError as stop:
            return _outcome(stop)
        return "ran"

    before = len(api.hits)
    limits: dict[str, Any] = {"budget_usd": BUDGET, "enforce_budget": True}
    async with agent_session("async", **limits, tracer_provider=provider) as session:
        outcomes = list(await asyncio.gather(*(one() for _ in range(CALLS))))
    return _report(api, before, outcomes, session)


def _thread_burst(api: standin.StandIn, provider: TracerProvider) -> dict[str, Any]:
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
    start = threading.Barrier(CALLS)

    def one(_: int) -> str:
        start.wait()
        try:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        except BudgetExceededError as stop:
            return _outcome(stop)
        return "ran"

    before = len(api.hits)
    limits: dict[str, Any] = {"budget_usd": BUDGET, "enforce_budget": True}
    with (
        agent_session("threads", **limits, tracer_provider=provider) as session,
        ThreadPoolExecutor(max_workers=CALLS) as pool,
    ):
        outcomes = list(pool.map(session.wrap(one), range(CALLS)))
    return _report(api, before, outcomes, session)


def main() -> None:
    register_pricing(MODEL, ModelPricing(100.0, 200.0, cache_read_per_million=10.0))
    provider = TracerProvider()
    _instrument(sys.argv[1], provider)
    with standin.serve() as api:
        results = {
            "async": asyncio.run(_async_burst(api, provider)),
            "threads": _thread_burst(api, provider),
        }
    print(RESULT_MARK + json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
