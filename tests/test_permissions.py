"""Tests for techrevati.runtime.permissions (contract §7)."""

from __future__ import annotations

import functools
import warnings
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
    with pytest.warns(UserWarning, match="role 'stranger' has no config"):
        out = _policy(RolePermissionConfig("writer", RO)).authorize("stranger", "shell")
    assert out == PermissionOutcome(True, "no config for role, default allow", "", "")


def test_an_empty_policy_allows_every_role_silently() -> None:
    """0.1.0's pinned case: no role configs at all, so no role can be a typo."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = PermissionPolicy().authorize("anyone", "shell")
    assert out == PermissionOutcome(True, "no config for role, default allow", "", "")


# -- roles in the same normal form as tools (issue 20, point 8) ---------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "researcher",
        "Researcher",
        "RESEARCHER",
        " researcher ",
        "ｒｅｓｅａｒｃｈｅｒ",
        "re\u200bsearcher",
    ],
)
def test_a_role_spelling_variant_gets_that_roles_config(spelling: str) -> None:
    policy = _policy(RolePermissionConfig("researcher", RO))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known role, however spelled, is not warned about
        denied = policy.authorize(spelling, "shell")
        allowed = policy.authorize(spelling, "search")
    assert (denied.allowed, denied.active_mode, denied.required_mode) == (
        False,
        "READ_ONLY",
        "FULL_ACCESS",
    )
    assert allowed.allowed is True
    assert PermissionEnforcer(policy).is_allowed(spelling, "shell") is False


def test_configured_role_keys_in_any_spelling_are_found() -> None:
    policy = PermissionPolicy(
        role_configs={"Researcher": RolePermissionConfig("Researcher", RO)},
        tool_requirements=dict(REQUIREMENTS),
    )
    assert policy.authorize("researcher", "shell").allowed is False
    cfg = policy.config_for("RESEARCHER")
    assert cfg is not None and cfg.role == "Researcher"


def test_two_configured_spellings_of_one_role_the_lower_mode_governs() -> None:
    policy = PermissionPolicy(
        role_configs={
            "Ops": RolePermissionConfig("Ops", FA),
            "OPS": RolePermissionConfig("OPS", RO),
        },
        tool_requirements=dict(REQUIREMENTS),
    )
    assert policy.authorize("ops", "shell").allowed is False  # neither spelling exactly
    assert policy.authorize("Ops", "shell").allowed is True  # an exact key is that key


def test_roles_added_after_construction_are_found_in_any_spelling() -> None:
    configs: dict[str, RolePermissionConfig] = {"writer": RolePermissionConfig("writer", RO)}
    policy = PermissionPolicy(role_configs=configs, tool_requirements=dict(REQUIREMENTS))
    assert policy.config_for("Analyst") is None
    configs["analyst"] = RolePermissionConfig("analyst", WW)
    assert policy.authorize("Analyst", "write_file").allowed is True
    assert policy.authorize("Analyst", "shell").allowed is False


def test_an_unknown_role_is_warned_once_per_policy_at_the_callers_line() -> None:
    policy = _policy(RolePermissionConfig("researcher", RO))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert policy.authorize("reseacher", "shell").allowed is True  # a typo
        assert PermissionEnforcer(policy).is_allowed("reseacher", "search") is True
        assert policy.authorize("intern", "search").allowed is True
    assert [str(w.message).split(" has")[0] for w in caught] == [
        "role 'reseacher'",
        "role 'intern'",
    ]
    assert all(w.category is UserWarning for w in caught)
    assert {w.filename for w in caught} == {__file__}
    assert "configured: 'researcher'" in str(caught[0].message)
    assert "unknown_role=PermissionMode.READ_ONLY" in str(caught[0].message)
    # Another policy warns again: the warning is about that policy's configs.
    with pytest.warns(UserWarning, match="reseacher"):
        _policy(RolePermissionConfig("researcher", RO)).authorize("reseacher", "shell")


def test_warnings_about_unknown_roles_are_bounded() -> None:
    policy = _policy(RolePermissionConfig("researcher", RO))
    huge = "x" * 10_000_000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index in range(1500):
            policy.authorize(f"role-{index}", "search")
        policy.authorize(huge, "search")
    assert len(caught) == 1024  # then no more: role names from outside cannot grow it
    assert max(len(str(w.message)) for w in caught) < 500
    fresh = _policy(RolePermissionConfig("researcher", RO))
    with pytest.warns(UserWarning) as one:
        fresh.authorize(huge, "search")
    assert len(str(one[0].message)) < 500  # the name is quoted shortened


def test_unknown_role_mode_limits_roles_without_a_config() -> None:
    policy = PermissionPolicy(
        role_configs={"admin": RolePermissionConfig("admin", FA)},
        tool_requirements=dict(REQUIREMENTS),
        unknown_role=RO,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chosen deliberately: nothing to warn about
        refused = policy.authorize("intern", "write_file")
        read = policy.authorize("intern", "search")
    assert refused == PermissionOutcome(
        False,
        "role 'intern' has READ_ONLY but tool requires WORKSPACE_WRITE "
        "(no config for role: unknown_role)",
        "READ_ONLY",
        "WORKSPACE_WRITE",
    )
    assert read == PermissionOutcome(True, None, "READ_ONLY", "READ_ONLY")
    assert policy.authorize("Admin", "shell").allowed is True  # configured, any spelling
    assert PermissionPolicy(unknown_role="workspace_write").unknown_role is WW  # type: ignore[arg-type]
    assert PermissionPolicy().unknown_role is None


@pytest.mark.parametrize(
    ("value", "error"), [("EVERYTHING", ValueError), (0, ValueError), (True, TypeError)]
)
def test_a_bad_unknown_role_names_the_value(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=rf"unknown_role.*{value!r}"):
        PermissionPolicy(unknown_role=value)  # type: ignore[arg-type]


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


# Spelling variants of a protected tool (issue 13, point 9): case, surrounding
# whitespace, full-width letters, NFKC compatibility forms, an invisible zero-width space.
VARIANTS = [
    "delete_db",
    "DELETE_DB",
    "Delete_Db",
    "delete_db ",
    "\tdelete_db\n",
    "\u3000delete_db",  # ideographic space
    "ｄｅｌｅｔｅ_ｄｂ",  # full-width letters
    "ＤＥＬＥＴＥ＿ＤＢ",  # full-width capitals and low line
    "delete\u200b_db",  # zero-width space
    "DELETE_DB\ufeff",  # BOM / zero-width no-break space
    "delete\u00ad_db",  # soft hyphen
    "delete\u034f_db",  # combining grapheme joiner (Mn, not Cf)
    "delete_db\ufe0f",  # variation selector-16
    "delete_db\ufe00",  # variation selector-1
    "delete\U000e0100_db",  # variation selector-17 (supplementary)
    "delete_db\x00",  # NUL (Cc), on the ASCII path
    "delete\x1b_db",  # ESC (Cc), on the ASCII path
    "delete_db\x7f",  # DEL (Cc), on the ASCII path
    "ｄelete_db\x00",  # NUL (Cc), on the Unicode path
    "delete\x85_db",  # NEL, a C1 control (Cc)
]


@pytest.mark.parametrize("name", VARIANTS)
def test_requirement_lookup_normalises_the_called_name(name: str) -> None:
    p = PermissionPolicy(
        role_configs={"reader": RolePermissionConfig("reader", RO)},
        tool_requirements={"delete_db": FA},
    )
    out = p.authorize("reader", name)
    assert out.allowed is False
    assert out.required_mode == "FULL_ACCESS"
    assert out.reason == "role 'reader' has READ_ONLY but tool requires FULL_ACCESS"
    full = PermissionPolicy(
        role_configs={"admin": RolePermissionConfig("admin", FA)},
        tool_requirements={"delete_db": FA},
    )
    assert full.authorize("admin", name) == PermissionOutcome(
        True, None, "FULL_ACCESS", "FULL_ACCESS"
    )


@pytest.mark.parametrize("key", ["DELETE_DB", " Delete_DB ", "ｄｅｌｅｔｅ_ｄｂ"])
def test_requirement_keys_are_normalised_too(key: str) -> None:
    p = PermissionPolicy(
        role_configs={"reader": RolePermissionConfig("reader", RO)},
        tool_requirements={key: FA},
    )
    assert p.authorize("reader", "delete_db").required_mode == "FULL_ACCESS"
    assert p.tool_requirements == {key: FA}  # the caller's spelling is kept as given


def test_two_spellings_of_one_tool_the_stricter_requirement_wins() -> None:
    p = PermissionPolicy(
        role_configs={"w": RolePermissionConfig("w", WW)},
        tool_requirements={"shell": RO, "SHELL": FA, "Shell": WW},
    )
    assert p.authorize("w", "shell").required_mode == "FULL_ACCESS"


def test_requirement_edits_after_construction_apply() -> None:
    reqs = {"shell": FA}
    p = PermissionPolicy(role_configs={"r": RolePermissionConfig("r", RO)}, tool_requirements=reqs)
    assert p.authorize("r", "DROP_TABLE").allowed is True
    reqs["drop_table"] = FA
    assert p.authorize("r", "DROP_TABLE").required_mode == "FULL_ACCESS"
    reqs["drop_table"] = WW
    assert p.authorize("r", "drop_table").required_mode == "WORKSPACE_WRITE"
    del reqs["drop_table"]
    assert p.authorize("r", "Drop_Table").allowed is True
    p.tool_requirements = {"Drop_Table": "FULL_ACCESS"}  # type: ignore[dict-item]
    assert p.authorize("r", "drop_table").required_mode == "FULL_ACCESS"


@pytest.mark.parametrize("name", VARIANTS)
def test_deny_list_matches_every_spelling(name: str) -> None:
    p = _policy(RolePermissionConfig("ops", FA, denied_tools=["Delete_DB"]))
    out = p.authorize("ops", name)
    assert out.allowed is False
    assert out.reason == f"tool '{name}' is explicitly denied for role 'ops'"
    assert (
        _policy(RolePermissionConfig("ops", FA, denied_tools=[name]))
        .authorize("ops", "delete_db")
        .allowed
        is False
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_whitelist_matches_every_spelling(name: str) -> None:
    p = _policy(RolePermissionConfig("r", RO, allowed_tools=["delete_db"]))
    assert p.authorize("r", name).allowed is True
    assert p.authorize("r", name + "x").allowed is False


def test_similar_but_different_names_stay_different() -> None:
    p = PermissionPolicy(
        role_configs={"r": RolePermissionConfig("r", RO)},
        tool_requirements={"delete_db": FA},
    )
    for other in ("delete-db", "delete_db2", "delete db", "deletedb", "dеlete_db"):  # Cyrillic е
        assert p.authorize("r", other).allowed is True, other


def test_normalize_tool_name() -> None:
    from techrevati.runtime.permissions import normalize_tool_name

    assert {normalize_tool_name(v) for v in VARIANTS} == {"delete_db"}
    assert normalize_tool_name("Straße") == "strasse"  # full case folding, not lower()
    assert normalize_tool_name("ﬁle") == "file"  # NFKC ligature
    with pytest.raises(TypeError, match="tool name must be a str, got None"):
        normalize_tool_name(None)  # type: ignore[arg-type]


def test_enforcer_uses_normalised_names() -> None:
    enf = PermissionEnforcer(_policy(RolePermissionConfig("writer", RO)))
    assert enf.is_allowed("writer", "SHELL") is False
    assert enf.check("writer", " Shell ").required_mode == "FULL_ACCESS"

    def SHELL() -> None: ...  # a tool whose function name is upper case

    assert enf.filter_tools("writer", [SHELL, search]) == [search]


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
    with pytest.warns(UserWarning, match="role 'nobody' has no config"):
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


@pytest.mark.parametrize("field_name", ["allowed_tools", "denied_tools"])
@pytest.mark.parametrize("bad", [[5], ["shell", None], [b"shell"]])
def test_role_config_rejects_a_tool_list_entry_that_is_not_a_name(
    field_name: str, bad: list[Any]
) -> None:
    with pytest.raises(TypeError, match=rf"{field_name} holds tool names \(str\), got "):
        RolePermissionConfig("r", RO, **{field_name: bad})


@pytest.mark.parametrize("field_name", ["allowed_tools", "denied_tools"])
def test_role_config_rejects_a_tool_list_that_is_not_a_collection(field_name: str) -> None:
    with pytest.raises(TypeError, match=f"{field_name} must be a list of tool names, got 5"):
        RolePermissionConfig("r", RO, **{field_name: 5})


@pytest.mark.parametrize("field_name", ["allowed_tools", "denied_tools"])
def test_role_config_rejects_a_tool_list_used_up_by_its_first_check(field_name: str) -> None:
    # A generator passed the check by being iterated, and was then empty: a deny list
    # given as one denied nothing, an allowed list allowed nothing.
    names = (name for name in ["delete_index"])
    with pytest.raises(TypeError, match=f"{field_name} must be a list of tool names, got <gen"):
        RolePermissionConfig("r", FA, **{field_name: names})


def test_role_config_accepts_any_collection_of_names() -> None:
    cfg = RolePermissionConfig("r", FA, denied_tools=("shell",))  # type: ignore[arg-type]
    assert PermissionPolicy({"r": cfg}).authorize("r", "SHELL").allowed is False


@pytest.mark.parametrize("bad", [None, "policy", {"r": RO}])
def test_enforcer_rejects_what_is_not_a_policy(bad: Any) -> None:
    with pytest.raises(TypeError, match="policy must be a PermissionPolicy, got "):
        PermissionEnforcer(bad)


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


# -- through a session and the decorators (issue 13, point 9) --------------------------------


@pytest.mark.parametrize("name", ["delete_db", "DELETE_DB", "delete_db ", "ｄｅｌｅｔｅ_ｄｂ"])
def test_session_run_tool_refuses_every_spelling_for_read_only(name: str) -> None:
    from techrevati.runtime import Orchestrator, PermissionDeniedError

    policy = PermissionPolicy(
        role_configs={
            "reader": RolePermissionConfig("reader", RO),
            "admin": RolePermissionConfig("admin", FA),
        },
        tool_requirements={"delete_db": FA},
    )
    ran: list[str] = []
    reader = Orchestrator(role="reader", phase="p", permissions=PermissionEnforcer(policy))
    with reader.session() as session, pytest.raises(PermissionDeniedError) as info:
        session.run_tool(name, lambda: ran.append(name))
    assert ran == []
    assert info.value.outcome.required_mode == "FULL_ACCESS"
    admin = Orchestrator(role="admin", phase="p", permissions=PermissionEnforcer(policy))
    with admin.session() as session:
        session.run_tool(name, lambda: ran.append(name))
    assert ran == [name]


def test_tool_call_decorator_refuses_a_spelling_variant() -> None:
    from techrevati.runtime import PermissionDeniedError
    from techrevati.runtime.decorators import agent_session, tool_call

    policy = PermissionPolicy(
        role_configs={"reader": RolePermissionConfig("reader", RO)},
        tool_requirements={"delete_db": FA},
    )
    ran: list[int] = []

    @tool_call("ＤＥＬＥＴＥ_DB")
    def drop() -> None:
        ran.append(1)

    with (
        agent_session("reader", permissions=PermissionEnforcer(policy)),
        pytest.raises(PermissionDeniedError),
    ):
        drop()
    assert ran == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"role_configs": ["ops"]},
            "role_configs must be a mapping of role names to RolePermissionConfig or None, "
            "got list: ['ops']",
        ),
        (
            {"tool_requirements": ["x"]},
            "tool_requirements must be a mapping of tool names to PermissionMode or None, "
            "got list: ['x']",
        ),
    ],
)
def test_a_list_where_a_mapping_goes_is_a_type_error_naming_it(
    kwargs: dict[str, Any], message: str
) -> None:
    # A list raised a bare AttributeError ('list' object has no attribute 'items').
    with pytest.raises(TypeError) as caught:
        PermissionPolicy(**kwargs)
    assert str(caught.value) == message


# -- what a refusal tells the caller ------------------------------------------------


def test_a_mode_refusal_names_the_tool_and_what_to_change() -> None:
    import pickle

    from techrevati.runtime import Orchestrator, PermissionDeniedError

    policy = PermissionPolicy(
        role_configs={"researcher": RolePermissionConfig("researcher", RO)},
        tool_requirements={"delete_index": FA},
    )
    ran: list[int] = []
    orch = Orchestrator(role="researcher", permissions=PermissionEnforcer(policy))
    with orch.session() as session, pytest.raises(PermissionDeniedError) as info:
        session.run_tool("delete_index", lambda: ran.append(1))
    message = str(info.value)
    # The contract's reason stays first; the tool, the refusal and the fix follow it.
    assert message.startswith("role 'researcher' has READ_ONLY but tool requires FULL_ACCESS")
    assert "tool 'delete_index' was refused before it ran" in message
    assert message.endswith(
        "give role 'researcher' mode FULL_ACCESS in its RolePermissionConfig, or lower "
        "tool_requirements['delete_index']"
    )
    assert ran == []
    assert info.value.outcome.reason == message  # the message is the outcome's reason
    assert str(pickle.loads(pickle.dumps(info.value))) == message
    # The policy's own answer (enforcer.check, is_allowed) keeps the contract's text.
    assert policy.authorize("researcher", "delete_index").reason == (
        "role 'researcher' has READ_ONLY but tool requires FULL_ACCESS"
    )


def test_a_mode_refusal_of_a_role_without_config_points_at_unknown_role() -> None:
    from techrevati.runtime import Orchestrator, PermissionDeniedError

    policy = PermissionPolicy(
        role_configs={"ops": RolePermissionConfig("ops", FA)},
        tool_requirements={"deploy": WW},
        unknown_role=RO,
    )
    orch = Orchestrator(role="intern", permissions=PermissionEnforcer(policy))
    with orch.session() as session, pytest.raises(PermissionDeniedError) as info:
        session.run_tool("deploy", lambda: None)
    assert str(info.value).startswith(
        "role 'intern' has READ_ONLY but tool requires WORKSPACE_WRITE "
        "(no config for role: unknown_role): tool 'deploy' was refused before it ran"
    )
    assert "give role 'intern' a RolePermissionConfig with mode WORKSPACE_WRITE" in str(info.value)
    assert "lower tool_requirements['deploy']" in str(info.value)
