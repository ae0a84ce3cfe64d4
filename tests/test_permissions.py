"""Tests for techrevati.runtime.permissions (contract §7)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from techrevati.runtime.permissions import (
    PermissionEnforcer,
    PermissionMode,
    PermissionOutcome,
    PermissionPolicy,
    RolePermissionConfig,
)

RO, WW, FA = PermissionMode.READ_ONLY, PermissionMode.WORKSPACE_WRITE, PermissionMode.FULL_ACCESS

REQUIREMENTS = {"search": RO, "write_file": WW, "shell": FA}


def _policy(*configs: RolePermissionConfig) -> PermissionPolicy:
    return PermissionPolicy(
        role_configs={c.role: c for c in configs}, tool_requirements=dict(REQUIREMENTS)
    )


# -- enum and data classes ----------------------------------------------------------


def test_mode_values_and_order() -> None:
    assert [(m.name, m.value) for m in PermissionMode] == [
        ("READ_ONLY", 1),
        ("WORKSPACE_WRITE", 2),
        ("FULL_ACCESS", 3),
    ]
    assert RO < WW < FA
    assert not FA < RO


def test_outcome_defaults_and_to_dict() -> None:
    o = PermissionOutcome(True)
    assert (o.reason, o.active_mode, o.required_mode) == (None, "", "")
    assert o.to_dict() == {"allowed": True}
    assert PermissionOutcome(False, "r", "READ_ONLY", "FULL_ACCESS").to_dict() == {
        "allowed": False,
        "reason": "r",
        "active_mode": "READ_ONLY",
        "required_mode": "FULL_ACCESS",
    }
    assert PermissionOutcome(False, "", "", "N/A").to_dict() == {
        "allowed": False,
        "required_mode": "N/A",
    }


def test_role_config_positional_and_defaults() -> None:
    cfg = RolePermissionConfig("writer", RO)
    assert cfg.role == "writer" and cfg.mode is RO
    assert cfg.allowed_tools is None
    assert cfg.denied_tools == []
    assert RolePermissionConfig("other", RO).denied_tools is not cfg.denied_tools


def test_policy_defaults() -> None:
    p = PermissionPolicy()
    assert p.role_configs == {} and p.tool_requirements == {}


# -- authorize: step 0, unknown role -----------------------------------------------


def test_unknown_role_default_allow() -> None:
    out = _policy(RolePermissionConfig("writer", RO)).authorize("stranger", "shell")
    assert out == PermissionOutcome(True, "no config for role, default allow", "", "")


# -- step 1: deny list ---------------------------------------------------------------


@pytest.mark.parametrize("tool", ["shell", "SHELL", "Shell", "sHeLl"])
def test_deny_list_case_insensitive_even_with_full_access(tool: str) -> None:
    p = _policy(RolePermissionConfig("ops", FA, denied_tools=["Shell"]))
    out = p.authorize("ops", tool)
    assert out == PermissionOutcome(
        False, f"tool '{tool}' is explicitly denied for role 'ops'", "FULL_ACCESS", "N/A"
    )


def test_deny_list_wins_over_whitelist() -> None:
    p = _policy(RolePermissionConfig("ops", FA, allowed_tools=["search"], denied_tools=["search"]))
    assert "explicitly denied" in (p.authorize("ops", "search").reason or "")


def test_deny_list_is_exact_not_substring() -> None:
    p = _policy(RolePermissionConfig("ops", FA, denied_tools=["shell"]))
    assert p.authorize("ops", "shell_safe").allowed is True


# -- step 2: mode check ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "tool", "allowed"),
    [
        (RO, "search", True),
        (RO, "write_file", False),
        (RO, "shell", False),
        (WW, "search", True),
        (WW, "write_file", True),
        (WW, "shell", False),
        (FA, "search", True),
        (FA, "write_file", True),
        (FA, "shell", True),
        (RO, "unlisted_tool", True),  # default requirement is READ_ONLY
    ],
)
def test_mode_matrix(mode: PermissionMode, tool: str, allowed: bool) -> None:
    out = _policy(RolePermissionConfig("r", mode)).authorize("r", tool)
    assert out.allowed is allowed
    required = REQUIREMENTS.get(tool, RO)
    assert out.active_mode == mode.name
    assert out.required_mode == required.name
    if allowed:
        assert out.reason is None
    else:
        assert out.reason == f"role 'r' has {mode.name} but tool requires {required.name}"


def test_mode_denial_reason_mentions_read_only() -> None:
    out = _policy(RolePermissionConfig("writer", RO)).authorize("writer", "shell")
    assert "READ_ONLY" in (out.reason or "")
    assert "FULL_ACCESS" in (out.reason or "")


def test_requirement_lookup_is_case_sensitive() -> None:
    p = _policy(RolePermissionConfig("writer", RO))
    assert p.authorize("writer", "shell").allowed is False
    # "SHELL" is not a key in tool_requirements, so it needs only READ_ONLY
    out = p.authorize("writer", "SHELL")
    assert out.allowed is True
    assert out.required_mode == "READ_ONLY"


# -- step 3: whitelist ---------------------------------------------------------------------


def test_whitelist_case_insensitive() -> None:
    p = _policy(RolePermissionConfig("r", FA, allowed_tools=["Search", "shell"]))
    assert p.authorize("r", "SEARCH").allowed is True
    assert p.authorize("r", "search").allowed is True
    out = p.authorize("r", "write_file")
    assert out == PermissionOutcome(
        False,
        "tool 'write_file' not in allowed list for role 'r'",
        "FULL_ACCESS",
        "WORKSPACE_WRITE",
    )


def test_empty_whitelist_blocks_everything() -> None:
    p = _policy(RolePermissionConfig("r", FA, allowed_tools=[]))
    for tool in ("search", "write_file", "shell", "anything"):
        out = p.authorize("r", tool)
        assert out.allowed is False
        assert "not in allowed list" in (out.reason or "")


def test_mode_check_precedes_whitelist() -> None:
    p = _policy(RolePermissionConfig("r", RO, allowed_tools=["shell"]))
    assert "but tool requires FULL_ACCESS" in (p.authorize("r", "shell").reason or "")


# -- step 4: allow ---------------------------------------------------------------------------


def test_allowed_outcome_shape() -> None:
    out = _policy(RolePermissionConfig("r", WW)).authorize("r", "write_file")
    assert out == PermissionOutcome(True, None, "WORKSPACE_WRITE", "WORKSPACE_WRITE")


def test_policy_reads_mutable_config_live() -> None:
    cfg = RolePermissionConfig("r", FA)
    p = _policy(cfg)
    assert p.authorize("r", "shell").allowed
    cfg.denied_tools.append("SHELL")
    assert not p.authorize("r", "shell").allowed


# -- enforcer ---------------------------------------------------------------------------------


def test_enforcer_check_and_is_allowed() -> None:
    p = _policy(RolePermissionConfig("writer", RO))
    enf = PermissionEnforcer(p)
    assert enf.policy is p
    assert enf.check("writer", "shell") == p.authorize("writer", "shell")
    assert enf.is_allowed("writer", "search") is True
    assert enf.is_allowed("writer", "shell") is False
    assert enf.is_allowed("nobody", "shell") is True


def search() -> str:
    return "s"


def write_file() -> str:
    return "w"


def shell() -> str:
    return "sh"


class NamelessTool:
    def __call__(self) -> str:
        return "n"

    def __str__(self) -> str:
        return "search"


def test_filter_tools_keeps_order_and_uses_names() -> None:
    enf = PermissionEnforcer(_policy(RolePermissionConfig("writer", WW)))
    tools: list[Callable[..., Any]] = [shell, search, write_file, search]
    assert enf.filter_tools("writer", tools) == [search, write_file, search]
    assert enf.filter_tools("writer", []) == []


def test_filter_tools_falls_back_to_str() -> None:
    enf = PermissionEnforcer(_policy(RolePermissionConfig("r", RO, allowed_tools=["search"])))
    nameless = NamelessTool()
    partial = functools.partial(shell)  # no __name__, str() is not "search"
    assert enf.filter_tools("r", [nameless, partial, search]) == [nameless, search]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("READ_ONLY", RO), ("full_access", FA), (2, WW), (PermissionMode.FULL_ACCESS, FA)],
)
def test_role_config_coerces_mode_names_and_values(given: Any, expected: PermissionMode) -> None:
    cfg = RolePermissionConfig("r", given)
    assert cfg.mode is expected


@pytest.mark.parametrize("bad", ["ADMIN", "", 0, 4, -1])
def test_role_config_unknown_mode_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="unknown permission mode") as info:
        RolePermissionConfig("r", bad)
    assert repr(bad) in str(info.value)
    assert "READ_ONLY" in str(info.value)  # lists the valid names


@pytest.mark.parametrize("bad", [None, 1.0, True, ["READ_ONLY"]])
def test_role_config_wrong_mode_type(bad: Any) -> None:
    with pytest.raises(TypeError, match="permission mode"):
        RolePermissionConfig("r", bad)


@pytest.mark.parametrize("field_name", ["allowed_tools", "denied_tools"])
def test_role_config_rejects_bare_string_tool_list(field_name: str) -> None:
    with pytest.raises(TypeError, match=field_name):
        RolePermissionConfig("r", RO, **{field_name: "shell"})


def test_policy_coerces_requirement_names_into_copy() -> None:
    reqs: dict[str, Any] = {"shell": "FULL_ACCESS", "write_file": 2}
    p = PermissionPolicy(tool_requirements=reqs)
    assert p.tool_requirements == {"shell": FA, "write_file": WW}
    assert reqs == {"shell": "FULL_ACCESS", "write_file": 2}  # caller's dict untouched


def test_policy_keeps_well_typed_requirement_dict() -> None:
    reqs = {"shell": FA}
    p = PermissionPolicy(tool_requirements=reqs)
    assert p.tool_requirements is reqs


def test_policy_unknown_requirement_mode() -> None:
    with pytest.raises(ValueError, match=r"tool_requirements\['shell'\].*'ROOT'"):
        PermissionPolicy(tool_requirements={"shell": "ROOT"})  # type: ignore[dict-item]


def test_policy_rejects_non_config_values() -> None:
    with pytest.raises(TypeError, match=r"role_configs\['writer'\]"):
        PermissionPolicy(role_configs={"writer": RO})  # type: ignore[dict-item]


def test_authorize_rejects_non_string_tool_name() -> None:
    with pytest.raises(TypeError, match="tool_name"):
        PermissionPolicy().authorize("r", None)  # type: ignore[arg-type]
