"""One agent-framework set-up against the runaway stand-in, under a cap and under a budget.

Usage: ``python frameworks_scenario.py SETUP`` (a key of ``SETUPS``), run in
the ``frameworks`` venv (``venvs.py``) with ``PYTHONPATH=<checkout>/src``.

The stand-in (``standin.serve(runaway=True)``) answers every request with
another tool call, so the framework loops until something stops it. The
scenario wraps the framework's run in ``agent_session(...)`` the way a user
does, once with ``max_iterations=CAP`` and once with an enforced budget of
``BUDGET_CALLS`` calls, and prints one JSON line per set-up: how many requests
reached the server, how many calls the session counted and what it booked,
and how the refusal reached the caller (the exception's type, and whether
``limit_error`` finds ours inside it).

Prices are the published ones (``genai-prices``) for ``gpt-4o-mini``: one
stand-in call (120 input tokens of which 100 cache reads, 30 output) costs
20 x $0.15/M + 100 x $0.075/M + 30 x $0.60/M = $0.0000285.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# No framework may reach a real API, nor export its own traces anywhere.
os.environ.setdefault("OPENAI_API_KEY", "test-key")
os.environ.setdefault("LANGSMITH_TRACING", "false")
os.environ.setdefault("SMOLAGENTS_TELEMETRY", "false")

import standin

from techrevati.runtime import agent_session, configure, limit_error

MODEL = "gpt-4o-mini"
ONE_CALL_USD = 0.0000285
CAP = 5
BUDGET_CALLS = 3.5
BUDGET_USD = round(ONE_CALL_USD * BUDGET_CALLS, 10)
RESULT_MARK = "FRAMEWORK-RESULT "
#: Far above our limits: a framework's own cap must never be what stops the loop.
FRAMEWORK_STEPS = 40
#: One event loop for every async run: langchain-openai caches its async HTTP client per
#: base URL, and a client belongs to the loop it was first used on.
LOOP = asyncio.new_event_loop()


@dataclass
class Setup:
    """One row of the matrix: a framework run and the instrumentations switched on."""

    framework: str
    run: str
    #: Third-party instrumentations switched on (names of ``_INSTRUMENTORS``).
    instrumentations: tuple[str, ...] = ()
    #: ``configure(instrument=["openai"])``: the official OpenAI instrumentation + guard.
    instrument_openai: bool = True
    options: dict[str, Any] = field(default_factory=dict)


# --- the runs: each takes the stand-in's /v1 URL and runs the framework until stopped --------


def _lookup(query: str) -> str:
    """Look something up (the stand-in asks for this tool on every request)."""
    return f"nothing found for {query}"


def _direct_call(url: str) -> str:
    """A tool that makes its own model call with a plain ``openai`` client."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="test-key", max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "summarise"}]
    )
    return str(answer.choices[0].message.content)


def run_pydantic_ai(url: str, setup: Setup) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=url, api_key="test-key"))
    agent = Agent(model)

    @agent.tool_plain
    def lookup(query: str) -> str:
        return _lookup(query)

    agent.run_sync("research", usage_limits=UsageLimits(request_limit=FRAMEWORK_STEPS))


def run_agents(url: str, setup: Setup) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        RunConfig,
        Runner,
        function_tool,
    )
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="test-key", max_retries=0)
    model_class: Any = (
        OpenAIChatCompletionsModel if setup.options.get("chat") else OpenAIResponsesModel
    )
    direct = setup.options.get("direct_tool", False)

    @function_tool
    def lookup(query: str) -> str:
        """Look something up."""
        return _direct_call(url) if direct else _lookup(query)

    agent = Agent(
        name="researcher",
        instructions="use the tool",
        model=model_class(model=MODEL, openai_client=client),
        model_settings=ModelSettings(include_usage=setup.options.get("include_usage")),
        tools=[lookup],
    )
    # Traced only where an instrumentation listens (it replaced the default exporter,
    # which would try to reach the real API).
    config = RunConfig(tracing_disabled=not setup.instrumentations)
    if setup.options.get("stream"):

        async def streamed() -> None:
            result = Runner.run_streamed(
                agent, "research", max_turns=FRAMEWORK_STEPS, run_config=config
            )
            async for _ in result.stream_events():
                pass

        LOOP.run_until_complete(streamed())
    else:
        LOOP.run_until_complete(
            Runner.run(agent, "research", max_turns=FRAMEWORK_STEPS, run_config=config)
        )


def _chat_openai(url: str, setup: Setup) -> Any:
    from langchain_openai import ChatOpenAI

    # stream_usage: langchain-openai asks for the usage chunk only from the default
    # base_url; a proxy, vLLM or a stand-in gets it only when asked.
    stream_usage = setup.options.get("stream_usage", True)
    return ChatOpenAI(
        model=MODEL, base_url=url, api_key="test-key", max_retries=0, stream_usage=stream_usage
    )


def _langchain_tool(url: str, direct: bool) -> Any:
    from langchain_core.tools import tool

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return _direct_call(url) if direct else _lookup(query)

    return lookup


def run_langgraph(url: str, setup: Setup) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents
        from langgraph.prebuilt import create_react_agent

    graph = create_react_agent(_chat_openai(url, setup), [_langchain_tool(url, False)])
    inputs = {"messages": [("user", "research")]}
    config = {"recursion_limit": 2 * FRAMEWORK_STEPS + 1}
    how = setup.options.get("how", "invoke")
    if how == "invoke":
        graph.invoke(inputs, config)
    elif how == "ainvoke":
        LOOP.run_until_complete(graph.ainvoke(inputs, config))
    elif how == "abatch":
        # Three runs at once: concurrent first calls, and refusals beside running calls.
        # Every run ends before the session does (return_exceptions): a run left
        # pending would go on in the next check's loop, outside its own session.
        ended = LOOP.run_until_complete(graph.abatch([inputs] * 3, config, return_exceptions=True))
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
    elif how == "stream":
        for _ in graph.stream(inputs, config, stream_mode="messages"):
            pass
    else:
        raise SystemExit(f"unknown LangGraph run {how!r}")


def run_langgraph_graph(url: str, setup: Setup) -> None:
    """A hand-built graph: the model node under a RetryPolicy, ToolNode(handle_tool_errors=True).

    Its tool makes its own model call, so a refusal can arrive inside the tool:
    ToolNode turns it into an error message for the model, and the next model
    call is refused in turn.
    """
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    from langgraph.types import RetryPolicy

    tool = _langchain_tool(url, True)
    model = _chat_openai(url, setup).bind_tools([tool])

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node(
        "model", call_model, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01)
    )
    graph.add_node("tools", ToolNode([tool], handle_tool_errors=True))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "model")
    app = graph.compile()
    app.invoke({"messages": [("user", "research")]}, {"recursion_limit": 2 * FRAMEWORK_STEPS + 1})


def run_smolagents(url: str, setup: Setup) -> None:
    from smolagents import CodeAgent, OpenAIServerModel, ToolCallingAgent, tool

    @tool
    def lookup(query: str) -> str:
        """Look something up.

        Args:
            query: what to look up
        """
        return _lookup(query)

    model = OpenAIServerModel(MODEL, api_base=url, api_key="test-key")
    kind = CodeAgent if setup.options.get("code") else ToolCallingAgent
    agent = kind(tools=[lookup], model=model, max_steps=FRAMEWORK_STEPS, verbosity_level=0)
    agent.run("research")


RUNS: dict[str, Callable[[str, Setup], None]] = {
    "pydantic-ai": run_pydantic_ai,
    "agents": run_agents,
    "langgraph": run_langgraph,
    "langgraph-graph": run_langgraph_graph,
    "smolagents": run_smolagents,
}

# --- the set-ups ----------------------------------------------------------------------

SETUPS: dict[str, Setup] = {
    "pydantic-ai": Setup("pydantic-ai", "pydantic-ai"),
    # No instrumentation at all: the client guard, on by default, is the only door.
    "pydantic-ai-bare": Setup("pydantic-ai", "pydantic-ai", instrument_openai=False),
    "langgraph-invoke-bare": Setup("langgraph", "langgraph", instrument_openai=False),
    "pydantic-ai+own": Setup(
        "pydantic-ai", "pydantic-ai", ("pydantic-ai",), instrument_openai=False
    ),
    "pydantic-ai+own+openai": Setup("pydantic-ai", "pydantic-ai", ("pydantic-ai",)),
    "agents-responses": Setup("agents", "agents"),
    "agents-responses-stream": Setup("agents", "agents", options={"stream": True}),
    "agents-chat": Setup("agents", "agents", options={"chat": True}),
    # The Chat Completions model streams without asking for usage unless told to.
    "agents-chat-stream": Setup("agents", "agents", options={"chat": True, "stream": True}),
    "agents-chat-stream-usage": Setup(
        "agents", "agents", options={"chat": True, "stream": True, "include_usage": True}
    ),
    "agents-responses+openinference": Setup("agents", "agents", ("openinference-agents",)),
    "agents-chat+openinference": Setup(
        "agents", "agents", ("openinference-agents",), options={"chat": True}
    ),
    "agents-responses+genai-agents": Setup("agents", "agents", ("genai-agents",)),
    "agents-chat+genai-agents": Setup(
        "agents", "agents", ("genai-agents",), options={"chat": True}
    ),
    "agents-direct-tool+openinference": Setup(
        "agents",
        "agents",
        ("openinference-agents",),
        instrument_openai=False,
        options={"direct_tool": True},
    ),
    "langgraph-invoke": Setup("langgraph", "langgraph"),
    "langgraph-ainvoke": Setup("langgraph", "langgraph", options={"how": "ainvoke"}),
    "langgraph-stream": Setup("langgraph", "langgraph", options={"how": "stream"}),
    "langgraph-retry-toolnode": Setup("langgraph", "langgraph-graph"),
    "langgraph-stream-no-usage": Setup(
        "langgraph", "langgraph", options={"how": "stream", "stream_usage": False}
    ),
    "smolagents-toolcalling": Setup("smolagents", "smolagents"),
    "smolagents-code": Setup("smolagents", "smolagents", options={"code": True}),
    "smolagents-toolcalling+openinference": Setup(
        "smolagents", "smolagents", ("openinference-smolagents",)
    ),
    "smolagents-code+openinference": Setup(
        "smolagents", "smolagents", ("openinference-smolagents",), options={"code": True}
    ),
    # Its span reports no cache counts and no client span is there: the guard's exact
    # reading of the same response is what is booked.
    "smolagents-toolcalling+openinference-only": Setup(
        "smolagents", "smolagents", ("openinference-smolagents",), instrument_openai=False
    ),
}
#: The control run (LangGraph, no instrumentation but ours): no limits, then the default cap.
CONTROL = "control-no-limits"
SETUPS[CONTROL] = Setup("langgraph", "langgraph")
# LangGraph under each LangChain instrumentation, alone and beside the OpenAI one.
for _lc in ("openinference-langchain", "openllmetry-langchain", "genai-langchain"):
    SETUPS[f"langgraph-invoke+{_lc}"] = Setup("langgraph", "langgraph", (_lc,), False)
    SETUPS[f"langgraph-invoke+{_lc}+openai"] = Setup("langgraph", "langgraph", (_lc,))
    SETUPS[f"langgraph-stream+{_lc}+openai"] = Setup(
        "langgraph", "langgraph", (_lc,), options={"how": "stream"}
    )
# An async run calls OpenLLMetry's handler in a task of its own: its model span and the
# client's span of the same request are siblings on two tasks (counted twice before).
SETUPS["langgraph-ainvoke+openllmetry-langchain+openai"] = Setup(
    "langgraph", "langgraph", ("openllmetry-langchain",), options={"how": "ainvoke"}
)
# Concurrent runs: OpenLLMetry's spans name no model at start (they reserved nothing, and
# all passed a nearly spent budget); OpenInference's late spans of refused runs took a
# sibling run's call (counted twice).
for _lc in ("openinference-langchain", "openllmetry-langchain"):
    SETUPS[f"langgraph-abatch+{_lc}+openai"] = Setup(
        "langgraph", "langgraph", (_lc,), options={"how": "abatch"}
    )


def _instrument(name: str, provider: Any) -> None:
    if name == "pydantic-ai":
        from pydantic_ai import Agent, InstrumentationSettings

        Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))
    elif name == "openinference-agents":
        from agents import set_trace_processors
        from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

        set_trace_processors([])  # no exporter that would try to reach the real API
        OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)
    elif name == "genai-agents":
        from opentelemetry.instrumentation.genai.openai_agents import (
            OpenAIAgentsInstrumentor as GenAIAgents,
        )

        GenAIAgents().instrument(tracer_provider=provider, disable_openai_trace_export=True)
    elif name == "openinference-langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
    elif name == "openllmetry-langchain":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=provider)
    elif name == "genai-langchain":
        from opentelemetry.instrumentation.genai.langchain import (
            LangChainInstrumentor as GenAILangChain,
        )

        GenAILangChain().instrument(tracer_provider=provider)
    elif name == "openinference-smolagents":
        from openinference.instrumentation.smolagents import SmolagentsInstrumentor

        SmolagentsInstrumentor().instrument(tracer_provider=provider)
    else:
        raise SystemExit(f"unknown instrumentation {name!r}")


# --- one limited run -----------------------------------------------------------------------


def _chain(exc: BaseException) -> list[str]:
    names = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    return names


def _limited(api: standin.StandIn, setup: Setup, url: str, **limits: Any) -> dict[str, Any]:
    before = len(api.hits)
    raised: BaseException | None = None
    hits_at_raise = -1
    session_ref: Any = None
    try:
        with agent_session("framework-matrix", **limits) as session:
            session_ref = session
            RUNS[setup.run](url, setup)
    except Exception as exc:  # what the user's except clause sees
        raised = exc
        hits_at_raise = len(api.hits) - before
    ours = limit_error(raised) if raised is not None else None
    assert session_ref is not None
    return {
        "hits": len(api.hits) - before,
        "hits_at_raise": hits_at_raise,
        "iterations": session_ref._iteration_count,
        "booked_calls": session_ref.tracker.turn_count,
        "cost": round(session_ref.tracker.total_cost(), 12),
        "raised": type(raised).__name__ if raised is not None else "",
        "chain": _chain(raised) if raised is not None else [],
        "ours": type(ours).__name__ if ours is not None else "",
        "message": str(ours) if ours is not None else "",
    }


def main() -> None:
    name = sys.argv[1]
    setup = SETUPS[name]
    logging.basicConfig(level=logging.ERROR)
    warnings_seen: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings_seen.append(record.getMessage())

    ours = logging.getLogger("techrevati.runtime")
    ours.setLevel(logging.WARNING)
    ours.addHandler(_Collect(level=logging.WARNING))
    handle = configure(
        spans_file=False,
        report=False,
        metrics=False,
        instrument=["openai"] if setup.instrument_openai else None,
    )
    for instrumentation in setup.instrumentations:
        _instrument(instrumentation, handle.tracer_provider)
    results: dict[str, Any] = {"setup": name}
    checks: tuple[tuple[str, dict[str, Any]], ...] = (
        ("cap", {"max_iterations": CAP}),
        ("budget", {"budget_usd": BUDGET_USD, "enforce_budget": True}),
    )
    if name == CONTROL:
        # The stand-in really runs away: with a cap far above the framework's own
        # (FRAMEWORK_STEPS), the framework's cap ends the run; with none given, our
        # default cap does.
        checks = (("free", {"max_iterations": 10 * FRAMEWORK_STEPS}), ("default", {}))
    with standin.serve(runaway=True) as api:
        url = api.url + "/v1"
        for check, limits in checks:
            try:
                results[check] = _limited(api, setup, url, **limits)
            except Exception as exc:
                results[check] = {"failed": f"{type(exc).__name__}: {exc}"}
    results["warnings"] = warnings_seen
    print(RESULT_MARK + json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
