"""One instrumentation's scenario: run it in that instrumentation's venv, read its JSON.

Usage: ``python scenario.py PRODUCER [--dump]``. It starts the local API
stand-in, switches on exactly one third-party instrumentation (or the
Anthropic SDK's own tracing) and nothing of ours (no set-up call: the limits
processor and the client guard come with the first session), and runs the checks
of issue 12 against a session enforced by our limits processor. It prints one
JSON object: what was booked and priced, how many requests reached the server
under a budget and under a cap, and (with ``--dump``) every finished span's
name, scope and attributes.

The prices make one call cost exactly $0.009 when cache reads are priced at
their own rate: 20 plain input tokens at $100/M, 100 cache reads at $10/M,
30 output tokens at $200/M. A producer that reports no cache count prices
the same call at $0.018.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

# The stand-in lives beside this file; the venv has this package installed.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import standin
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from techrevati.runtime import (
    BudgetExceededError,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.telemetry.limits.guard import disable_guard, enable_guard

OPENAI_MODEL = "gpt-interop"
ANTHROPIC_MODEL = "claude-interop"
PRICES = ModelPricing(100.0, 200.0, cache_read_per_million=10.0)
BUDGET_USD = 0.010
CAP = 2
ATTEMPTS = 3
RESULT_MARK = "INTEROP-RESULT "
#: Producers that catch exceptions from span start: only the guard stops their calls.
SWALLOWS_REFUSALS = frozenset(
    {"anthropic-sdk", "openinference-openai", "agents-openinference", "agents-chat-openinference"}
)


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Several producers (OpenLIT, the Anthropic SDK, the Agents SDK bridge) use the global one.
    trace.set_tracer_provider(provider)
    return provider, exporter


# --- the producers -----------------------------------------------------------------


def _instrument(producer: str, provider: TracerProvider) -> None:
    if producer == "genai-openai":
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif producer == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2

        V2().instrument(tracer_provider=provider)
    elif producer == "openllmetry-openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Lm

        Lm().instrument(tracer_provider=provider)
    elif producer == "openllmetry-anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(tracer_provider=provider)
    elif producer == "openinference-openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor as Oi

        Oi().instrument(tracer_provider=provider)
    elif producer == "openinference-anthropic":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor as OiA

        OiA().instrument(tracer_provider=provider)
    elif producer in ("openlit-openai", "openlit-anthropic"):
        import openlit

        only = "openai" if producer == "openlit-openai" else "anthropic"
        every = ["openai", "anthropic"]
        # A local, empty price list: OpenLIT would otherwise fetch one over the network.
        prices = os.path.join(
            os.environ.get("TMPDIR", "/tmp"), f"openlit-prices-{os.getpid()}.json"
        )
        with open(prices, "w") as out:
            out.write("{}")
        openlit.init(
            disable_metrics=True,
            disable_events=True,
            disable_batch=True,
            pricing_json=prices,
            disabled_instrumentors=[name for name in every if name != only],
        )
    elif producer == "anthropic-sdk":
        pass  # the SDK traces into the global provider by default
    elif producer == "genai-anthropic":
        from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor as GenA

        GenA().instrument(tracer_provider=provider)
    elif producer in ("agents-genai", "agents-chat-genai"):
        from opentelemetry.instrumentation.genai.openai_agents import (
            OpenAIAgentsInstrumentor as GenAgents,
        )

        # Replaces the SDK's default exporter, which would try to reach the real API.
        GenAgents().instrument(tracer_provider=provider, disable_openai_trace_export=True)
    elif producer == "genai-langchain":
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
    elif producer in ("agents-openinference", "agents-chat-openinference"):
        from agents import set_trace_processors
        from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

        set_trace_processors([])  # no exporter that would try to reach the real API
        OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)
    else:
        raise SystemExit(f"unknown producer {producer!r}")


def _client_kind(producer: str) -> str:
    if "anthropic" in producer:
        return "anthropic"
    if producer.startswith("agents"):
        return "agents"
    if "langchain" in producer:
        return "langchain"
    return "openai"


def _make_call(producer: str, url: str) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
    """(one call, one Responses API call or None) on the producer's client."""
    kind = _client_kind(producer)
    if kind == "anthropic":
        import anthropic

        aclient = anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0)

        def call_anthropic(stream: bool = False) -> Any:
            args: dict[str, Any] = {
                "model": ANTHROPIC_MODEL,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "hi"}],
            }
            if stream:
                return list(aclient.messages.create(stream=True, **args))
            return aclient.messages.create(**args)

        return call_anthropic, None
    if kind == "agents":
        from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner
        from openai import AsyncOpenAI

        # The Agents SDK's two model paths: Responses (response spans) and Chat
        # Completions (generation spans).
        model_class: Any = (
            OpenAIChatCompletionsModel
            if producer.startswith("agents-chat")
            else OpenAIResponsesModel
        )

        def call_agent(stream: bool = False) -> Any:
            # A client per run: each run has its own event loop, and a client's
            # connection pool belongs to the loop it was first used on.
            oclient = AsyncOpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
            agent = Agent(
                name="helper",
                instructions="be brief",
                model=model_class(model=OPENAI_MODEL, openai_client=oclient),
            )
            if stream:

                async def run_streamed() -> Any:
                    result = Runner.run_streamed(agent, "hi")
                    async for _ in result.stream_events():
                        pass
                    return result.final_output

                return asyncio.run(run_streamed())
            return Runner.run_sync(agent, "hi").final_output

        return call_agent, None
    if kind == "langchain":
        from langchain_openai import ChatOpenAI

        # stream_usage: langchain-openai asks for the usage chunk only from OpenAI's own URL.
        chat = ChatOpenAI(
            model=OPENAI_MODEL,
            base_url=url + "/v1",
            api_key="test-key",
            max_retries=0,
            stream_usage=True,
        )

        def call_langchain(stream: bool = False) -> Any:
            if stream:
                return list(chat.stream("hi"))
            return chat.invoke("hi")

        return call_langchain, None
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)

    def call_openai(stream: bool = False) -> Any:
        args: dict[str, Any] = {
            "model": OPENAI_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
        }
        if stream:
            chunks = client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **args
            )
            return list(chunks)
        return client.chat.completions.create(**args)

    def call_responses(stream: bool = False) -> Any:
        if stream:
            return list(client.responses.create(model=OPENAI_MODEL, input="hi", stream=True))
        return client.responses.create(model=OPENAI_MODEL, input="hi")

    return call_openai, call_responses


# --- the checks ----------------------------------------------------------------------


def _booked(call: Callable[..., Any], provider: TracerProvider, **kw: Any) -> dict[str, Any]:
    orch = Orchestrator(role="interop", phase="check", tracer_provider=provider)
    with orch.session() as session:
        call(**kw)
    turns = [
        {
            "model": model,
            "input": usage.input_tokens,
            "cache_read": usage.cache_read_tokens,
            "cache_write": usage.cache_write_tokens,
            "output": usage.output_tokens,
        }
        for model, usage in session.tracker.turns
    ]
    return {
        "turns": turns,
        "cost": round(session.tracker.total_cost(), 12),
        "iterations": session._iteration_count,
    }


def _limited(
    call: Callable[..., Any], api: standin.StandIn, provider: TracerProvider, **limits: Any
) -> dict[str, Any]:
    before = len(api.hits)
    orch = Orchestrator(role="interop", phase="limits", tracer_provider=provider, **limits)
    error = ""
    completed = 0
    try:
        with orch.session():
            for _ in range(ATTEMPTS):
                call()
                completed += 1
    except (BudgetExceededError, MaxIterationsExceededError) as exc:
        error = type(exc).__name__
    except Exception as exc:  # an SDK that wraps our error: say which
        error = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            error += f" <- {type(cause).__name__}"
            cause = cause.__cause__ or cause.__context__
    return {"hits": len(api.hits) - before, "completed": completed, "error": error}


def _under_agent_turn(call: Callable[..., Any], model: str) -> dict[str, Any]:
    @agent_turn(model)
    def turn() -> Any:
        return call()

    with agent_session("interop-turn") as session:
        turn()
    return {
        "turns": session.tracker.turn_count,
        "cost": round(session.tracker.total_cost(), 12),
        "iterations": session._iteration_count,
    }


class _CountCacheWarnings(logging.Handler):
    """Counts our one-per-scope warning about producers that report no cache tokens."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "cache-token count" in record.getMessage():
            self.count += 1


def _check(name: str, results: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> None:
    try:
        results[name] = fn()
    except Exception as exc:
        results[name] = {"failed": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    producer = sys.argv[1]
    dump = "--dump" in sys.argv[2:]
    logging.basicConfig(level=logging.ERROR)
    warnings = _CountCacheWarnings()
    ours = logging.getLogger("techrevati.runtime.telemetry")
    ours.setLevel(logging.WARNING)  # the root logger above is at ERROR
    ours.addHandler(warnings)
    register_pricing(OPENAI_MODEL, PRICES)
    register_pricing(ANTHROPIC_MODEL, PRICES)
    provider, exporter = _provider()
    # No set-up call of ours: the limits processor joins the provider when a session
    # opens, and the client guard is on by default wherever limits exist.
    _instrument(producer, provider)
    model = ANTHROPIC_MODEL if _client_kind(producer) == "anthropic" else OPENAI_MODEL
    results: dict[str, Any] = {"producer": producer}
    with standin.serve() as api:
        call, responses = _make_call(producer, api.url)
        _check("booked", results, lambda: _booked(call, provider))
        _check("stream", results, lambda: _booked(call, provider, stream=True))
        if responses is not None:
            _check("responses", results, lambda: _booked(responses, provider))
            _check("responses_stream", results, lambda: _booked(responses, provider, stream=True))
        _check(
            "budget",
            results,
            lambda: _limited(call, api, provider, budget_usd=BUDGET_USD, enforce_budget=True),
        )
        _check("cap", results, lambda: _limited(call, api, provider, max_iterations=CAP))
        if producer in SWALLOWS_REFUSALS:
            # The same budget with the guard opted out (configure(guard=False) does
            # this): the refusal is swallowed, the call sent.
            disable_guard()
            _check(
                "budget_unguarded",
                results,
                lambda: _limited(call, api, provider, budget_usd=BUDGET_USD, enforce_budget=True),
            )
            enable_guard()
        _check("agent_turn", results, lambda: _under_agent_turn(call, model))
        results["hits_total"] = len(api.hits)
    results["no_cache_warnings"] = warnings.count
    if dump:
        results["spans"] = [
            {
                "name": span.name,
                "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
                "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
            }
            for span in exporter.get_finished_spans()
        ]
    # Some producers print to stdout (OpenLIT's console exporters): mark our line.
    print(RESULT_MARK + json.dumps(results, sort_keys=True), flush=True)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


if __name__ == "__main__":
    main()
