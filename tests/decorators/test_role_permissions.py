"""Roles in a session: the spelling of a role never buys more access (issue 20, point 8).

The session, its spans and the tools are real; the tools do nothing but record
that they ran.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import pytest

from otel_harness import Otel
from techrevati.runtime import (
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
)
from techrevati.runtime.decorators import agent_session, tool_call


def _researcher_policy(**extra: object) -> PermissionEnforcer:
    return PermissionEnforcer(
        PermissionPolicy(
            role_configs={"researcher": RolePermissionConfig("researcher", "READ_ONLY")},
            tool_requirements={"delete_index": PermissionMode.FULL_ACCESS},
            **extra,  # type: ignore[arg-type]
        )
    )


def test_a_capitalised_role_gets_the_researchers_config(otel: Otel) -> None:
    """The issue's case: a policy for "researcher", agent_session("Researcher")."""
    ran: list[str] = []

    @tool_call()
    def delete_index() -> None:
        ran.append("delete_index")

    with (
        agent_session("Researcher", permissions=_researcher_policy(), **otel.kwargs()),
        pytest.raises(PermissionDeniedError),
    ):
        delete_index()
    assert ran == []
    attributes = dict(otel.span("execute_tool delete_index").attributes or {})
    assert attributes["techrevati.permission.decision"] == "deny"
    assert attributes["techrevati.permission.granted_mode"] == "READ_ONLY"
    assert attributes["techrevati.permission.required_mode"] == "FULL_ACCESS"


def test_run_tool_of_an_orchestrator_session_compares_roles_the_same_way(otel: Otel) -> None:
    orch = Orchestrator(
        role=" RESEARCHER ", phase="p", permissions=_researcher_policy(), **otel.kwargs()
    )
    with orch.session() as session:
        with pytest.raises(PermissionDeniedError):
            session.run_tool("Delete_Index", lambda: "deleted")
        assert session.run_tool("search", lambda: "found") == "found"


def test_an_unknown_role_warns_at_the_users_line_from_a_decorated_tool(otel: Otel) -> None:
    @tool_call()
    def search() -> str:
        return "found"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("reseacher", permissions=_researcher_policy(), **otel.kwargs()):
            line = sys._getframe().f_lineno + 1
            assert search() == "found"  # allowed, as 0.1.0 pins, but not silently
            assert search() == "found"
    [warning] = [w for w in caught if "has no config" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_an_unknown_role_warns_at_the_users_line_from_run_tool(otel: Otel) -> None:
    orch = Orchestrator(role="intern", phase="p", permissions=_researcher_policy(), **otel.kwargs())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with orch.session() as session:
            session.run_tool("search", lambda: "found")
    [warning] = [w for w in caught if "has no config" in str(w.message)]
    assert warning.filename == __file__


def test_unknown_role_mode_denies_in_a_session(otel: Otel) -> None:
    enforcer = _researcher_policy(unknown_role=PermissionMode.READ_ONLY)

    @tool_call()
    def delete_index() -> None:
        raise AssertionError("must not run")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with (
            agent_session("intern", permissions=enforcer, **otel.kwargs()),
            pytest.raises(PermissionDeniedError, match="unknown_role"),
        ):
            delete_index()
    attributes = dict(otel.span("execute_tool delete_index").attributes or {})
    assert attributes["techrevati.permission.decision"] == "deny"
    assert attributes["techrevati.permission.granted_mode"] == "READ_ONLY"


def _recording_tools() -> tuple[list[str], Callable[[str], None], Callable[[str], str]]:
    """Two tools that only record their argument when their body runs: a denied one and
    an allowed one."""
    ran: list[str] = []

    @tool_call()
    def delete_index(name: str) -> None:
        ran.append(name)

    @tool_call()
    def search(query: str) -> str:
        ran.append(query)
        return "found"

    return ran, delete_index, search


def test_a_tool_on_a_pool_worker_is_checked_against_the_session_that_submitted_it(
    otel: Otel,
) -> None:
    """A pool task's context is empty: the tool is still the submitting session's call.

    Frameworks run tools on pools of their own (smolagents, a code agent's code).
    """
    from concurrent.futures import ThreadPoolExecutor

    ran, delete_index, search = _recording_tools()

    with (
        agent_session("researcher", permissions=_researcher_policy(), **otel.kwargs()),
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        with pytest.raises(PermissionDeniedError):
            pool.submit(delete_index, "docs").result()
        assert pool.submit(search, "rag").result() == "found"
    assert ran == ["rag"]
    (session,) = otel.spans("invoke_agent")
    denied = otel.span("execute_tool delete_index")
    allowed = otel.span("execute_tool search")
    assert dict(denied.attributes or {})["techrevati.permission.decision"] == "deny"
    assert dict(allowed.attributes or {})["techrevati.permission.decision"] == "allow"
    for tool in (denied, allowed):
        assert tool.parent is not None and session.context is not None
        assert tool.parent.span_id == session.context.span_id  # the session's own tool calls


def test_a_pool_task_that_outlives_its_session_is_still_checked_against_it(otel: Otel) -> None:
    """Fire and forget: the task calls the tool after the session that submitted it closed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ran: list[str] = []
    go = threading.Event()

    @tool_call()
    def delete_index(name: str) -> None:
        ran.append(name)

    def later() -> None:
        go.wait(5)
        delete_index("docs")

    with ThreadPoolExecutor(max_workers=1) as pool:
        with agent_session("researcher", permissions=_researcher_policy(), **otel.kwargs()):
            task = pool.submit(later)
        go.set()
        with pytest.raises(PermissionDeniedError):
            task.result(5)
    assert ran == []
    assert (
        dict(otel.span("execute_tool delete_index").attributes or {})[
            "techrevati.permission.decision"
        ]
        == "deny"
    )


def test_a_tool_handed_on_to_another_pool_after_the_session_closed_is_still_checked(
    otel: Otel,
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ran, delete_index, search = _recording_tools()
    go = threading.Event()

    with ThreadPoolExecutor(max_workers=1) as outer, ThreadPoolExecutor(max_workers=1) as inner:

        def hand_on() -> tuple[str, str]:
            go.wait(5)
            denied = inner.submit(delete_index, "docs")
            allowed = inner.submit(search, "rag")
            try:
                denied.result(5)
                said = "ran"
            except PermissionDeniedError:
                said = "denied"
            return said, allowed.result(5)

        with agent_session("researcher", permissions=_researcher_policy(), **otel.kwargs()):
            task = outer.submit(hand_on)
        go.set()
        assert task.result(5) == ("denied", "found")
    assert ran == ["rag"]
    # Checked against the closed session, and outside it: the spans start their own traces.
    (session_span,) = otel.spans("invoke_agent")
    for name in ("execute_tool delete_index", "execute_tool search"):
        span = otel.span(name)
        assert span.parent is None, name
        assert span.context is not None and session_span.context is not None
        assert span.context.trace_id != session_span.context.trace_id


def test_run_tool_of_a_closed_session_still_counts_there(otel: Otel) -> None:
    """Used after its block ended (warned): the call counts against it, as the warning says.

    Only a pool task's tool after its submitter closed runs outside the session.
    """
    orch = Orchestrator(
        role="researcher", phase="p", permissions=_researcher_policy(), **otel.kwargs()
    )
    with orch.session() as session:
        pass
    with pytest.warns(RuntimeWarning, match="used after its block ended"):
        assert session.run_tool("search", lambda: "found") == "found"
    (session_span,) = otel.spans("invoke_agent")
    tool = otel.span("execute_tool search")
    assert tool.parent is not None and session_span.context is not None
    assert tool.parent.span_id == session_span.context.span_id


def test_a_pool_task_outliving_a_child_with_a_policy_is_still_checked_against_it(
    otel: Otel,
) -> None:
    """The task was given 'researcher' (a child with a policy) under an open parent with
    none: once 'researcher' closed, the task's model calls go to the parent, but its
    tools are still checked against the researcher's policy (they ran unchecked)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ran: list[str] = []
    go = threading.Event()

    @tool_call()
    def delete_index(name: str) -> str:
        ran.append(name)
        return "deleted"

    def later() -> str:
        go.wait(5)
        try:
            return delete_index("docs")
        except PermissionDeniedError:
            return "denied"

    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        agent_session("orchestrator", max_iterations=5, **otel.kwargs()),
    ):
        with agent_session("researcher", permissions=_researcher_policy(), **otel.kwargs()):
            task = pool.submit(later)
        go.set()
        assert task.result(5) == "denied"
    assert ran == []
