"""A framework's own tools under a session's permission policy and guardrails.

Usage: ``python tools_scenario.py SETUP`` (a key of ``frameworks_scenario.SETUPS``)
in the ``frameworks`` venv (``venvs.py``) with ``PYTHONPATH=<checkout>/src``.

The runaway stand-in (``standin.serve(runaway=True)``) asks for the framework's
``lookup`` tool on every answer (a code agent's code calls it), so the agent
calls it until something stops it. Four sessions, one after another:

* ``deny``: the session's permission policy denies ``lookup`` to its role;
* ``allow``: the role may call it (``READ_ONLY``, the tool's requirement);
* ``guard``: allowed, but its result carries an API key that a post-guardrail blocks;
* ``none``: no policy, no guardrails (the tool doors pass straight through), the
  key in the result as in ``guard``: it reaches the stand-in;
* ``loop``: allowed, under ``LoopGuard(on_loop="raise")``, the stand-in asking for
  the same call every time (a cap of ``LOOP_CAP``, so the loop guard is what stops it);
* ``fails``: allowed, the tool's body raising.

Each other session under a cap of ``CAP`` model calls. Two set-ups are this
scenario's own: ``langgraph-injected`` (a tool that LangGraph hands the graph's
state) and ``pydantic-ai-prefixed`` (a prefixed toolset: the model calls
``prod_lookup``, the name the policy denies). Prints one JSON line: per session, how
many times the tool's body ran, the requests the stand-in got, the exception
chain the caller saw, the package's own tool spans by permission decision and
guardrail outcome, and whether the key ever reached the stand-in.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import frameworks_scenario as fs
import standin
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from techrevati.runtime import (
    GuardrailOutcome,
    LoopDetectedError,
    LoopGuard,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    agent_session,
    configure,
)

RESULT_MARK = "TOOLS-RESULT "
ROLE = "researcher"
CAP = 4
KEY = "sk-live-4f9a2c"
#: A code agent's step: its code calls the tool (the stand-in's default code does not).
CODE = "Thought: look it up.\n<code>\nprint(lookup(query='again'))\n</code>"

LOOP_CAP = 8
MODES = ("deny", "allow", "guard", "none", "loop", "fails")

RAN: list[str] = []
SECRET = [False]
FAIL = [False]


def _lookup(query: str) -> str:
    RAN.append(query)
    if FAIL[0]:
        raise RuntimeError("lookup is down")
    return f"found {KEY} for {query}" if SECRET[0] else f"nothing found for {query}"


def _same_arguments(tool: str, number: int) -> str:
    return json.dumps({"query": "again"})


def run_langgraph_injected(url: str, setup: fs.Setup) -> None:
    from typing import Annotated

    from langchain_core.tools import tool
    from langgraph.prebuilt import InjectedState, create_react_agent

    def lookup(query: str, state: dict[str, Any]) -> str:
        """Look something up."""
        return _lookup(query)

    # (Given as objects: this module's annotations are strings, which LangChain would
    # resolve in its globals, where InjectedState is not.)
    lookup.__annotations__ = {
        "query": str,
        "state": Annotated[dict[str, Any], InjectedState],
        "return": str,
    }
    graph = create_react_agent(fs._chat_openai(url, setup), [tool(lookup)])
    limit = {"recursion_limit": 2 * fs.FRAMEWORK_STEPS + 1}
    graph.invoke({"messages": [("user", "research")]}, limit)  # type: ignore[arg-type]


def run_pydantic_ai_prefixed(url: str, setup: fs.Setup) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.toolsets import FunctionToolset
    from pydantic_ai.usage import UsageLimits

    tools: FunctionToolset[None] = FunctionToolset()

    @tools.tool_plain
    def lookup(query: str) -> str:
        return _lookup(query)

    model = OpenAIChatModel(fs.MODEL, provider=OpenAIProvider(base_url=url, api_key="test-key"))
    agent = Agent(model, toolsets=[tools.prefixed("prod")])
    agent.run_sync("research", usage_limits=UsageLimits(request_limit=fs.FRAMEWORK_STEPS))


fs.RUNS["langgraph-injected"] = run_langgraph_injected
fs.RUNS["pydantic-ai-prefixed"] = run_pydantic_ai_prefixed
fs.SETUPS["langgraph-injected"] = fs.Setup("langgraph", "langgraph-injected")
fs.SETUPS["pydantic-ai-prefixed"] = fs.Setup("pydantic-ai", "pydantic-ai-prefixed")
#: The name the model calls the tool by, which the policy denies.
CALLED = {"pydantic-ai-prefixed": "prod_lookup"}


def _direct_call(url: str) -> str:  # the hand-built graph's tool: the same body here
    return _lookup("direct")


@dataclass
class NoKeys:
    name: str = "no_keys"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(True)

    def check_post(self, value: object, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome("sk-live-" not in str(value), "result carries an API key")


def _policy(denied: str | None) -> PermissionEnforcer:
    config = RolePermissionConfig(
        ROLE, PermissionMode.READ_ONLY, denied_tools=[denied] if denied else []
    )
    return PermissionEnforcer(PermissionPolicy(role_configs={ROLE: config}))


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(found) < 8:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _session(
    api: standin.StandIn, setup: fs.Setup, spans: InMemorySpanExporter, mode: str, called: str
) -> dict[str, Any]:
    options: dict[str, Any] = {"max_iterations": LOOP_CAP if mode == "loop" else CAP}
    if mode != "none":
        options["permissions"] = _policy(called if mode == "deny" else None)
    if mode == "guard":
        options["guardrails"] = [NoKeys()]
    if mode == "loop":
        options["loop_guard"] = LoopGuard(on_loop="raise")
    RAN.clear()
    SECRET[0] = mode in ("guard", "none")
    FAIL[0] = mode == "fails"
    arguments = standin._arguments
    if mode == "loop":
        standin._arguments = _same_arguments
    spans.clear()
    before = len(api.hits)
    chain: list[BaseException] = []
    try:
        with agent_session(ROLE, **options):
            fs.RUNS[setup.run](api.url + "/v1", setup)
    except Exception as exc:
        chain = _chain(exc)
    finally:
        standin._arguments = arguments
    loop = next((e for e in chain if isinstance(e, LoopDetectedError)), None)
    ours = [
        s
        for s in spans.get_finished_spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name == "techrevati.runtime"
        and s.name.startswith("execute_tool")
    ]
    decisions: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    failed = 0
    for span in ours:
        failed += span.status.status_code is StatusCode.ERROR
        attributes = span.attributes or {}
        decision = str(attributes.get("techrevati.permission.decision"))
        decisions[decision] = decisions.get(decision, 0) + 1
        outcome = str(attributes.get("techrevati.guardrail.outcome"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "tool_runs": len(RAN),
        "requests": len(api.hits) - before,
        "chain": [type(e).__name__ for e in chain],
        # How the loop was told (a repeat of one call), and which call it refused.
        "loop": [loop.pattern, loop.refused] if loop is not None else None,
        "decisions": decisions,
        "outcomes": outcomes,
        "failed": failed,
        "key_sent": any(KEY in json.dumps(body) for body in api.bodies),
    }


def main() -> None:
    name = sys.argv[1]
    setup = fs.SETUPS[name]
    fs._lookup = _lookup  # the framework's tool body, counted
    fs._direct_call = _direct_call
    standin.RUNAWAY_CODE = CODE
    handle = configure(
        spans_file=False,
        report=False,
        metrics=False,
        instrument=["openai"] if setup.instrument_openai else None,
    )
    assert handle.tracer_provider is not None
    spans = InMemorySpanExporter()
    handle.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    for instrumentation in setup.instrumentations:
        fs._instrument(instrumentation, handle.tracer_provider)
    results: dict[str, Any] = {"setup": name}
    with standin.serve(runaway=True) as api:
        for mode in MODES:
            results[mode] = _session(api, setup, spans, mode, CALLED.get(name, "lookup"))
            api.bodies.clear()
    print(RESULT_MARK + json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
