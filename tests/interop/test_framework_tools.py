"""A session's permission policy and guardrails over agent frameworks' own tools, measured.

Each set-up of ``tools_scenario.py`` runs as a subprocess in the ``frameworks``
venv (``venvs.py``, cached): pydantic-ai, the OpenAI Agents SDK, LangGraph and
smolagents from PyPI, their real ``openai`` clients pointed at the local
runaway stand-in (every answer asks for the framework's ``lookup`` tool), the
real OpenTelemetry SDK and the instrumentations each set-up names. Nothing is
mocked. Six sessions per set-up (see the scenario): ``deny``, ``allow``,
``guard``, ``none``, ``loop`` and ``fails``.

What must hold (docs/permissions.md, docs/guardrails.md): a denied tool's body
never runs, whichever framework runs it; its refusal reaches the caller as
documented per framework; a blocked result never reaches the model (the
stand-in); each call is one tool span of ours with the decision; and a session
with neither a policy nor guardrails is left as it was (no span of ours, the
result goes to the model).
"""

from __future__ import annotations

import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import venvs  # noqa: E402

SCENARIO = HERE / "tools_scenario.py"
RESULT_MARK = "TOOLS-RESULT "
CAP = 4  # tools_scenario.CAP
LOOP_CAP = 8  # tools_scenario.LOOP_CAP

pytestmark = pytest.mark.timeout(900)

#: How a refused tool call reaches the caller, per framework (docs/permissions.md):
#: raised as is; inside the framework's error (ours its cause); or handed to the model
#: as the tool's error, the agent going on until the session's cap stops it.
SURFACE: dict[str, str] = {
    "pydantic-ai": "raised",
    "pydantic-ai+own": "raised",
    "agents-responses": "UserError",
    "agents-chat+openinference": "UserError",
    "agents-responses+genai-agents": "UserError",
    "langgraph-invoke": "raised",
    "langgraph-ainvoke": "raised",
    "langgraph-retry-toolnode": "to the model",  # ToolNode(handle_tool_errors=True)
    "langgraph-invoke+openinference-langchain": "raised",
    "langgraph-invoke+openllmetry-langchain": "raised",
    "langgraph-invoke+genai-langchain": "raised",
    "smolagents-toolcalling": "to the model",
    "smolagents-toolcalling+openinference": "to the model",
    "smolagents-code": "to the model",  # its code runs on a pool thread of its own
    # The scenario's own: a tool LangGraph hands its state (left out of the call's
    # arguments), and a prefixed pydantic-ai toolset (checked by the name called).
    "langgraph-injected": "raised",
    "pydantic-ai-prefixed": "raised",
}


def _run(setup: str) -> dict[str, Any]:
    return venvs.run_in_frameworks(SCENARIO, setup, mark=RESULT_MARK)


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(SURFACE, pool.map(_run, SURFACE), strict=True))


def _refused(got: dict[str, Any], setup: str, error: str) -> None:
    """The refusal reached the caller as documented for this set-up."""
    surface = SURFACE[setup]
    if surface == "raised":
        assert got["chain"][:1] == [error], got
        assert got["requests"] == 1, got  # the run stopped at the first tool call
    elif surface == "to the model":
        # Each answer asks for the tool again; each is refused, until the cap.
        assert got["chain"][-1] == "MaxIterationsExceededError", got
        assert got["requests"] == CAP, got
    else:
        assert got["chain"][:2] == [surface, error], got
        assert got["requests"] == 1, got


@pytest.mark.parametrize("setup", list(SURFACE))
def test_a_denied_framework_tool_never_runs(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["deny"]
    assert got["tool_runs"] == 0, got
    _refused(got, setup, "PermissionDeniedError")
    # One span of ours per refused call, each saying so.
    expected = CAP if SURFACE[setup] == "to the model" else 1
    assert got["decisions"] == {"deny": expected}, got


@pytest.mark.parametrize("setup", list(SURFACE))
def test_an_allowed_framework_tool_runs_as_a_tool_call(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["allow"]
    assert got["tool_runs"] == CAP, got  # every answer's call ran, until the cap
    assert got["decisions"] == {"allow": CAP}, got
    assert got["chain"][-1] == "MaxIterationsExceededError", got


@pytest.mark.parametrize("setup", list(SURFACE))
def test_a_blocked_result_never_reaches_the_model(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["guard"]
    assert got["key_sent"] is False, got
    _refused(got, setup, "GuardrailViolatedError")
    assert got["outcomes"] == {"blocked": got["tool_runs"]}, got
    assert got["tool_runs"] >= 1, got


@pytest.mark.parametrize("setup", list(SURFACE))
def test_without_a_policy_the_framework_runs_as_before(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["none"]
    assert got["decisions"] == {}, got  # the doors passed straight through
    assert got["tool_runs"] == CAP, got
    assert got["key_sent"] is True, got  # what the guardrail stops in the guard session


@pytest.mark.parametrize("setup", list(SURFACE))
def test_a_loop_of_framework_tool_calls_stops_at_its_third_call(
    results: dict[str, Any], setup: str
) -> None:
    # The same call, with the same result, asked for on every answer: the third one is
    # the loop (LoopGuard's default repeats), the fourth is refused before it runs.
    got = results[setup]["loop"]
    assert got["tool_runs"] == 3, got
    assert "LoopDetectedError" in got["chain"], got
    assert got["requests"] < LOOP_CAP, got  # the loop guard stopped it, not the cap
    # One call, however many spans describe it (an instrumentation's tool span beside
    # ours counted too told "a cycle of 2 different sets of arguments").
    assert got["loop"][0] == "repeat", got
    if SURFACE[setup] != "to the model":
        assert got["loop"][1] == "tool", got  # refused at the tool call itself


@pytest.mark.parametrize("setup", list(SURFACE))
def test_a_tool_that_raises_is_a_failed_tool_call(results: dict[str, Any], setup: str) -> None:
    got = results[setup]["fails"]
    assert got["tool_runs"] >= 1, got
    # Every call failed, and each of our spans says so, also where the framework
    # caught the error and handed its text to the model (the Agents SDK, ToolNode).
    assert got["failed"] == got["decisions"]["allow"] == got["tool_runs"], got


LATE_IMPORT = textwrap.dedent(
    """
    import json, warnings
    from techrevati.runtime import (
        PermissionDeniedError, PermissionEnforcer, PermissionMode, PermissionPolicy,
        RolePermissionConfig, agent_session, configure,
    )

    policy = PermissionEnforcer(PermissionPolicy(role_configs={
        "ops": RolePermissionConfig("ops", PermissionMode.FULL_ACCESS, denied_tools=["drop"]),
    }))
    configure(spans_file=False, report=False, metrics=False)
    said = {}
    with agent_session("ops", permissions=policy):
        # Imported after the session opened: the import hook patches it.
        from langchain_core.tools import tool

        ran = []

        @tool
        def drop(table: str) -> str:
            "Drop a table."
            ran.append(table)
            return "dropped"

        try:
            drop.invoke({"table": "users"})
        except PermissionDeniedError as refused:
            said["denied"] = str(refused)
        said["ran_denied"] = len(ran)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("ops", permissions=policy):
            configure(guard=False, spans_file=False, report=False, metrics=False)
            drop.invoke({"table": "users"})  # opted out: the framework runs it
    said["ran_opted_out"] = len(ran)
    said["warned"] = [str(w.message) for w in caught if "guard=False" in str(w.message)]
    print("LATE-RESULT " + json.dumps(said))
    """
)


def test_a_framework_imported_after_the_session_and_the_opt_out(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text(LATE_IMPORT, encoding="utf-8")
    got = venvs.run_scenario(
        str(venvs.python("frameworks")), script, mark="LATE-RESULT ", timeout=300
    )
    assert got["ran_denied"] == 0, got
    assert got["denied"] == "tool 'drop' is explicitly denied for role 'ops'", got
    assert got["ran_opted_out"] == 1, got
    assert len(got["warned"]) == 1, got
    assert "agent frameworks' tools no longer pass" in got["warned"][0], got


ORDERS = textwrap.dedent(
    """
    import asyncio, json, types
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from openinference.instrumentation.smolagents import SmolagentsInstrumentor
    from smolagents import tool
    from techrevati.runtime import (
        PermissionDeniedError, PermissionEnforcer, PermissionMode, PermissionPolicy,
        RolePermissionConfig, agent_session, configure,
    )

    policy = PermissionEnforcer(PermissionPolicy(role_configs={
        "ops": RolePermissionConfig(
            "ops", PermissionMode.FULL_ACCESS, denied_tools=["drop", "local_shell"]
        ),
    }))
    configure(spans_file=False, report=False, metrics=False)
    provider = TracerProvider()
    theirs = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    ran = []

    @tool
    def drop(table: str) -> str:
        \"\"\"Drop a table.

        Args:
            table: the table
        \"\"\"
        ran.append(table)
        return "dropped"

    def denied_runs(label):
        before = len(ran)
        with agent_session("ops", permissions=policy):
            try:
                drop(table=label)
            except PermissionDeniedError:
                pass
        return len(ran) - before

    said = {}
    # OpenInference wraps Tool.__call__ first; our door goes over its wrapper; its
    # uninstrument() puts back what it found, taking our door out: the next session
    # with a policy puts the door back.
    instrumentor = SmolagentsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    said["over_theirs"] = denied_runs("a")
    instrumentor.uninstrument()
    said["after_their_uninstrument"] = denied_runs("b")
    # Theirs over our door: turning ours off leaves their wrapper (and its spans) in place.
    instrumentor.instrument(tracer_provider=provider)
    configure(guard=False, spans_file=False, report=False, metrics=False)
    theirs.clear()
    drop(table="c")  # outside any session, the doors off
    said["their_spans_after_ours_off"] = len(theirs.get_finished_spans())
    configure(guard=True, spans_file=False, report=False, metrics=False)
    said["back_on"] = denied_runs("d")
    said["ran"] = ran

    # A wrapper over our door that hides it (no __wrapped__): the next session puts a
    # door over that too; the call is still checked once, one span of ours.
    from langchain_core.tools import BaseTool, tool as lc_tool
    ours = InMemorySpanExporter()
    handle = configure(spans_file=False, report=False, metrics=False)
    handle.tracer_provider.add_span_processor(SimpleSpanProcessor(ours))

    @lc_tool
    def lookup(query: str) -> str:
        \"\"\"Look something up.\"\"\"
        return "found"

    with agent_session("ops", permissions=policy):
        lookup.invoke({"query": "a"})
    hidden = BaseTool.run
    BaseTool.run = lambda self, *args, **kwargs: hidden(self, *args, **kwargs)
    ours.clear()
    with agent_session("ops", permissions=policy):
        lookup.invoke({"query": "b"})
    said["our_spans_under_a_hiding_wrapper"] = sum(
        1 for s in ours.get_finished_spans() if s.name == "execute_tool lookup"
    )

    # The Agents SDK's local tools (a shell): refused before the SDK's own code runs.
    from agents.run_internal.tool_actions import LocalShellAction
    call = types.SimpleNamespace(local_shell_tool=types.SimpleNamespace(name="local_shell"))
    with agent_session("ops", permissions=policy):
        try:
            asyncio.run(LocalShellAction.execute(
                agent=None, call=call, hooks=None, context_wrapper=None, config=None
            ))
        except Exception as refused:
            said["local_shell"] = type(refused).__name__
    print("ORDERS-RESULT " + json.dumps(said))
    """
)


def test_other_instrumentations_wrapping_the_same_place_and_the_sdks_local_tools(
    tmp_path: Path,
) -> None:
    script = tmp_path / "orders.py"
    script.write_text(ORDERS, encoding="utf-8")
    got = venvs.run_scenario(
        str(venvs.python("frameworks")), script, mark="ORDERS-RESULT ", timeout=300
    )
    assert got["over_theirs"] == 0, got
    assert got["after_their_uninstrument"] == 0, got
    assert got["their_spans_after_ours_off"] == 1, got
    assert got["back_on"] == 0, got
    assert got["ran"] == ["c"], got
    assert got["local_shell"] == "PermissionDeniedError", got
    assert got["our_spans_under_a_hiding_wrapper"] == 1, got


DECORATED = textwrap.dedent(
    """
    import asyncio, json
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from techrevati.runtime import (
        PermissionDeniedError, PermissionEnforcer, PermissionMode, PermissionPolicy,
        RolePermissionConfig, agent_session, configure, tool_call,
    )
    from langchain_core.tools import StructuredTool, tool

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(tracer_provider=provider, spans_file=False, report=False, metrics=False)
    ran = []

    @tool_call()
    def fetch(url: str) -> str:
        ran.append("fetch")
        return "page"

    @tool_call()
    def lookup(query: str) -> str:
        "Look something up."
        ran.append("lookup")
        return fetch("https://example.org/" + query)  # a tool call of its own

    @tool_call()
    async def alookup(query: str) -> str:
        "Look something up, awaited."
        ran.append("alookup")
        return "found"

    def policy(denied):
        return PermissionEnforcer(PermissionPolicy(role_configs={
            "ops": RolePermissionConfig("ops", PermissionMode.FULL_ACCESS, denied_tools=denied),
        }))

    tools = [tool(lookup), StructuredTool.from_function(coroutine=alookup, name="alookup",
                                                         description="Look up, awaited.")]
    said = {}
    with agent_session("ops", permissions=policy([])) as session:
        for query in ("a", "b", "c"):
            tools[0].invoke({"query": query})
        asyncio.run(tools[1].ainvoke({"query": "d"}))
        said["tool_calls"] = session._scope.tool_calls
    said["spans"] = sorted(s.name for s in exporter.get_finished_spans()
                           if s.name.startswith("execute_tool"))
    said["ran"] = list(ran)
    ran.clear()
    with agent_session("ops", permissions=policy(["lookup"])) as session:
        try:
            tools[0].invoke({"query": "e"})
        except PermissionDeniedError:
            said["denied"] = True
        said["denied_tool_calls"] = session._scope.tool_calls
    said["ran_denied"] = list(ran)
    ran.clear()

    @tool
    def lookups(query: str) -> str:
        "A framework tool named otherwise, whose body calls lookup three times."
        return ",".join(lookup(query + str(n)) for n in range(3))

    @tool("lookup")
    def delegating(query: str) -> str:
        "Named lookup; its body calls lookup twice, and a sub-agent's lookup once."
        first = lookup(query)
        second = lookup(query + "!")
        try:
            with agent_session("ops", permissions=policy(["lookup"])):  # a sub-agent
                lookup(query + "?")
        except PermissionDeniedError:
            return first + second + "|sub denied"
        return first + second + "|sub ran"

    with agent_session("ops", permissions=policy([])) as session:
        lookups.invoke({"query": "f"})
        said["other_name_tool_calls"] = session._scope.tool_calls
    with agent_session("ops", permissions=policy([])) as session:
        said["delegated"] = delegating.invoke({"query": "g"})
        said["delegated_tool_calls"] = session._scope.tool_calls
    said["ran_after"] = list(ran)

    @tool("lookup")
    def inner_lookup(query: str) -> str:
        "Another framework tool, also named lookup."
        return "inner"

    @tool_call("lookup")
    def outer_body(query: str) -> str:
        return inner_lookup.invoke({"query": query})

    outer = StructuredTool.from_function(func=outer_body, name="lookup", description="Outer.")
    with agent_session("ops", permissions=policy([])) as session:
        outer.invoke({"query": "h"})
        said["nested_door_tool_calls"] = session._scope.tool_calls
    print("DECORATED-RESULT " + json.dumps(said))
    """
)


def test_a_tool_call_function_run_as_a_frameworks_tool_is_one_tool_call(tmp_path: Path) -> None:
    """A ``@tool_call`` function handed to a framework: the door's call is its call (one
    span, one count, one check); a ``@tool_call`` it calls is a call of its own."""
    script = tmp_path / "decorated.py"
    script.write_text(DECORATED, encoding="utf-8")
    got = venvs.run_scenario(
        str(venvs.python("frameworks")), script, mark="DECORATED-RESULT ", timeout=300
    )
    assert got["spans"] == [
        "execute_tool alookup",
        *["execute_tool fetch"] * 3,
        *["execute_tool lookup"] * 3,
    ], got
    assert got["tool_calls"] == 7, got  # 3 lookups, their 3 fetches, 1 alookup
    assert got["ran"] == ["lookup", "fetch"] * 3 + ["alookup"], got
    assert got["denied"] is True and got["ran_denied"] == [], got
    assert got["denied_tool_calls"] == 1, got
    # A framework tool of another name: its 3 lookups are 3 calls besides it (and fetches).
    assert got["other_name_tool_calls"] == 1 + 3 + 3, got
    # Named lookup: its first lookup is its body (one call), the second is a call of its
    # own; the sub-agent's policy refuses the third, which never runs.
    assert got["delegated"].endswith("|sub denied"), got
    assert got["delegated_tool_calls"] == 1 + 1 + 2, got  # + the two fetches
    assert got["ran_after"].count("lookup") == 3 + 2, got
    # A framework tool of the same name run inside the body: a call of its own.
    assert got["nested_door_tool_calls"] == 2, got
