"""Roles in a session: the spelling of a role never buys more access (issue 20, point 8).

The session, its spans and the tools are real; the tools do nothing but record
that they ran.
"""

from __future__ import annotations

import sys
import warnings

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
