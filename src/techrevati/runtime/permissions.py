"""Role-based tool permissions: a deny-first policy and an enforcer around it.

Evaluation order for a configured role: explicit deny list (case-insensitive), then the
tool's required mode (exact-name lookup, default READ_ONLY), then the optional whitelist
(case-insensitive). Roles without a config are allowed.

Example::

    >>> from techrevati.runtime.permissions import (
    ...     PermissionEnforcer, PermissionMode, PermissionPolicy, RolePermissionConfig)
    >>> policy = PermissionPolicy(
    ...     role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
    ...     tool_requirements={"write_file": PermissionMode.WORKSPACE_WRITE},
    ... )
    >>> enforcer = PermissionEnforcer(policy)
    >>> enforcer.is_allowed("writer", "search"), enforcer.is_allowed("writer", "write_file")
    (True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "PermissionEnforcer",
    "PermissionMode",
    "PermissionOutcome",
    "PermissionPolicy",
    "RolePermissionConfig",
]


class PermissionMode(IntEnum):
    """Ordered access levels: READ_ONLY < WORKSPACE_WRITE < FULL_ACCESS.

    Example::

        >>> PermissionMode.FULL_ACCESS > PermissionMode.READ_ONLY
        True
    """

    READ_ONLY = 1
    WORKSPACE_WRITE = 2
    FULL_ACCESS = 3


def _coerce_mode(value: object, where: str) -> PermissionMode:
    # Configs often come from YAML/JSON, so accept a member name or value, but fail
    # loudly on anything unknown instead of comparing garbage later.
    if isinstance(value, PermissionMode):
        return value
    valid = ", ".join(m.name for m in PermissionMode)
    if isinstance(value, str):
        try:
            return PermissionMode[value.strip().upper()]
        except KeyError:
            raise ValueError(
                f"{where}: unknown permission mode {value!r}; expected one of: {valid}"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return PermissionMode(value)
        except ValueError:
            raise ValueError(
                f"{where}: unknown permission mode {value!r}; expected one of: {valid}"
            ) from None
    raise TypeError(f"{where}: permission mode must be a PermissionMode, got {value!r}")


def _check_tool_list(value: object, where: str) -> None:
    # A bare string is iterable, so "shell" would silently become {"s", "h", ...}.
    if isinstance(value, str | bytes):
        raise TypeError(f"{where} must be a list of tool names, not a string: {value!r}")


@dataclass(frozen=True)
class PermissionOutcome:
    """The decision for one (role, tool) pair; mode fields hold mode *names*.

    Example::

        >>> PermissionOutcome(True, None, "FULL_ACCESS", "READ_ONLY").to_dict()
        {'allowed': True, 'active_mode': 'FULL_ACCESS', 'required_mode': 'READ_ONLY'}
    """

    allowed: bool
    reason: str | None = None
    active_mode: str = ""
    required_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return ``allowed`` plus each other field that is truthy."""
        out: dict[str, Any] = {"allowed": self.allowed}
        if self.reason:
            out["reason"] = self.reason
        if self.active_mode:
            out["active_mode"] = self.active_mode
        if self.required_mode:
            out["required_mode"] = self.required_mode
        return out


@dataclass
class RolePermissionConfig:
    """Permissions for one role.

    ``allowed_tools=None`` means no whitelist; an empty list lets nothing through the
    whitelist step. ``mode`` may also be given as a member name such as ``"READ_ONLY"``.

    Example::

        >>> cfg = RolePermissionConfig("writer", PermissionMode.READ_ONLY, denied_tools=["Shell"])
        >>> cfg.allowed_tools is None, cfg.denied_tools
        (True, ['Shell'])
    """

    role: str
    mode: PermissionMode
    allowed_tools: list[str] | None = None
    denied_tools: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mode = _coerce_mode(self.mode, f"RolePermissionConfig(role={self.role!r}).mode")
        if self.allowed_tools is not None:
            _check_tool_list(self.allowed_tools, "allowed_tools")
        _check_tool_list(self.denied_tools, "denied_tools")


class PermissionPolicy:
    """Deny-first authorisation over per-role configs and per-tool required modes.

    Example::

        >>> policy = PermissionPolicy(
        ...     role_configs={"ops": RolePermissionConfig("ops", PermissionMode.FULL_ACCESS,
        ...                                               denied_tools=["rm_rf"])})
        >>> policy.authorize("ops", "RM_RF").reason
        "tool 'RM_RF' is explicitly denied for role 'ops'"
    """

    def __init__(
        self,
        role_configs: dict[str, RolePermissionConfig] | None = None,
        tool_requirements: dict[str, PermissionMode] | None = None,
    ) -> None:
        self.role_configs: dict[str, RolePermissionConfig] = (
            role_configs if role_configs is not None else {}
        )
        for role, cfg in self.role_configs.items():
            if not isinstance(cfg, RolePermissionConfig):
                raise TypeError(
                    f"role_configs[{role!r}] must be a RolePermissionConfig, got {cfg!r}"
                )
        reqs = tool_requirements if tool_requirements is not None else {}
        # Keep the caller's dict when it is already well-typed (so later edits to it
        # still apply); only normalise into a copy when names/ints need converting.
        if not all(isinstance(m, PermissionMode) for m in reqs.values()):
            reqs = {t: _coerce_mode(m, f"tool_requirements[{t!r}]") for t, m in reqs.items()}
        self.tool_requirements: dict[str, PermissionMode] = reqs

    def authorize(self, role: str, tool_name: str) -> PermissionOutcome:
        """Decide whether ``role`` may call ``tool_name``; the first deciding step wins."""
        if not isinstance(tool_name, str):
            raise TypeError(f"tool_name must be a str, got {tool_name!r}")
        cfg = self.role_configs.get(role)
        if cfg is None:
            return PermissionOutcome(allowed=True, reason="no config for role, default allow")

        active = cfg.mode.name
        lowered = tool_name.lower()
        if any(lowered == denied.lower() for denied in cfg.denied_tools):
            return PermissionOutcome(
                allowed=False,
                reason=f"tool '{tool_name}' is explicitly denied for role '{role}'",
                active_mode=active,
                required_mode="N/A",
            )

        required = self.tool_requirements.get(tool_name, PermissionMode.READ_ONLY)
        if cfg.mode < required:
            return PermissionOutcome(
                allowed=False,
                reason=f"role '{role}' has {active} but tool requires {required.name}",
                active_mode=active,
                required_mode=required.name,
            )

        if cfg.allowed_tools is not None and not any(
            lowered == allowed.lower() for allowed in cfg.allowed_tools
        ):
            return PermissionOutcome(
                allowed=False,
                reason=f"tool '{tool_name}' not in allowed list for role '{role}'",
                active_mode=active,
                required_mode=required.name,
            )

        return PermissionOutcome(allowed=True, active_mode=active, required_mode=required.name)


class PermissionEnforcer:
    """Convenience wrapper over a :class:`PermissionPolicy`; advisory on its own.

    Example::

        >>> def search() -> None: ...
        >>> enforcer = PermissionEnforcer(PermissionPolicy())
        >>> [t.__name__ for t in enforcer.filter_tools("anyone", [search])]
        ['search']
    """

    def __init__(self, policy: PermissionPolicy) -> None:
        self.policy = policy

    def check(self, role: str, tool_name: str) -> PermissionOutcome:
        """Return the policy's full outcome."""
        return self.policy.authorize(role, tool_name)

    def is_allowed(self, role: str, tool_name: str) -> bool:
        """Return only whether the call is allowed."""
        return self.policy.authorize(role, tool_name).allowed

    def filter_tools(self, role: str, tools: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
        """Keep, in order, the tools whose ``__name__`` (or ``str()``) is authorised."""
        return [t for t in tools if self.is_allowed(role, getattr(t, "__name__", str(t)))]
