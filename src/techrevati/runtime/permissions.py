"""Role-based tool permissions: a deny-first policy and an enforcer around it.

Evaluation order for a configured role: explicit deny list, then the tool's required
mode (default READ_ONLY), then the optional whitelist. Every tool-name comparison
(deny list, requirements, whitelist, and the guardrail helpers) goes through
:func:`normalize_tool_name`, so ``"DELETE_DB"``, ``" delete_db "`` and full-width
``"ｄｅｌｅｔｅ_ｄｂ"`` are all the tool ``delete_db``. Role names are compared in the
same normal form: a config for ``"researcher"`` governs ``"Researcher"``.

A role without a config is allowed, as in 0.1.0; a policy that has role configs
warns once per such role (it is most often a typo), and
``PermissionPolicy(unknown_role=PermissionMode.READ_ONLY)`` treats unknown roles
as having that mode instead.

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

import functools
import threading
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from .caller import warn_user

__all__ = [
    "PermissionEnforcer",
    "PermissionMode",
    "PermissionOutcome",
    "PermissionPolicy",
    "RolePermissionConfig",
    "normalize_tool_name",
]


# Invisible code points that are not category Cf (which is dropped as a whole):
# the combining grapheme joiner, variation selectors, Mongolian free variation
# selectors, Khmer inherent vowels and Hangul fillers. All are
# Default_Ignorable_Code_Point in Unicode's DerivedCoreProperties: a name that holds
# one looks exactly like the name without it.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)
# ASCII control characters (NUL, ESC, DEL, ...), deleted by str.translate.
_ASCII_CONTROLS = dict.fromkeys([*range(0x20), 0x7F])


def _invisible(char: str) -> bool:
    """Category Cf (format) or Cc (control), or one of the ignorables above."""
    if unicodedata.category(char) in ("Cf", "Cc"):
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


# Names come from a small, developer-written set plus whatever a model asks for;
# a bounded cache makes the common case a dict hit without letting odd names grow it.
@functools.lru_cache(maxsize=4096)
def _normalize(name: str) -> str:
    if name.isascii():
        # NFKC is the identity on ASCII and casefold() equals lower() there; the only
        # invisible ASCII characters are the controls (isprintable() is False for them).
        if not name.isprintable():
            name = name.translate(_ASCII_CONTROLS)
        return name.strip().lower()
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    # Invisible characters (zero-width space and joiner, soft hyphen, BOM, variation
    # selectors, NUL) would otherwise make a name that looks identical compare different.
    visible = "".join(ch for ch in folded if not _invisible(ch))
    return visible.strip()


def normalize_tool_name(name: str) -> str:
    """The form every permission, deny-list, whitelist and guardrail lookup compares.

    Unicode NFKC (full-width and other compatibility forms become their plain
    letters), case-folded, invisible characters removed (format characters, category
    Cf; control characters, category Cc; the combining grapheme joiner U+034F and
    the variation selectors U+FE00-U+FE0F and U+E0100-U+E01EF, among the other
    default-ignorable code points), surrounding whitespace stripped.

    Example::

        >>> normalize_tool_name(" Delete_DB "), normalize_tool_name("ｄｅｌｅｔｅ_ｄｂ")
        ('delete_db', 'delete_db')
    """
    if not isinstance(name, str):
        raise TypeError(f"tool name must be a str, got {name!r}")
    return _normalize(name)


def _contains(names: Iterable[object], key: str) -> bool:
    # Non-string entries in a config list can never name a tool; skip rather than crash.
    return any(isinstance(n, str) and _normalize(n) == key for n in names)


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
    if not isinstance(value, Collection):
        # A generator or iterator is used up by this check and by the first decision:
        # a deny list given as one would deny nothing after it.
        raise TypeError(f"{where} must be a list of tool names, got {value!r}")
    for name in value:
        # A non-string entry can never match a tool name: a deny list holding one
        # would silently deny nothing.
        if not isinstance(name, str):
            raise TypeError(f"{where} holds tool names (str), got {name!r} in {value!r}")


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


# An unknown role is warned about once per policy; the set is bounded so that
# role names coming from outside cannot grow it without end.
_WARNED_ROLES_LIMIT = 1024
_ROLE_SHOWN = 80  # characters of a role name quoted in a warning


def _shown(role: str) -> str:
    return repr(role if len(role) <= _ROLE_SHOWN else role[: _ROLE_SHOWN - 3] + "...")


class PermissionPolicy:
    """Deny-first authorisation over per-role configs and per-tool required modes.

    Role names are looked up exactly first, then in their
    :func:`normalize_tool_name` form (when two configured spellings share that
    form, the one with the lower mode governs). A role with no config is
    allowed (``unknown_role=None``, 0.1.0's rule; a policy with role configs
    warns once per such role) or treated as a role with the mode
    ``unknown_role`` and no tool lists.

    Example::

        >>> policy = PermissionPolicy(
        ...     role_configs={"ops": RolePermissionConfig("ops", PermissionMode.FULL_ACCESS,
        ...                                               denied_tools=["rm_rf"])})
        >>> policy.authorize("ops", "RM_RF").reason
        "tool 'RM_RF' is explicitly denied for role 'ops'"
        >>> strict = PermissionPolicy(
        ...     role_configs={"ops": RolePermissionConfig("ops", PermissionMode.FULL_ACCESS)},
        ...     tool_requirements={"deploy": PermissionMode.FULL_ACCESS},
        ...     unknown_role=PermissionMode.READ_ONLY)
        >>> strict.authorize("OPS", "deploy").allowed, strict.authorize("intern", "deploy").allowed
        (True, False)
    """

    def __init__(
        self,
        role_configs: dict[str, RolePermissionConfig] | None = None,
        tool_requirements: dict[str, PermissionMode] | None = None,
        *,
        unknown_role: PermissionMode | None = None,
    ) -> None:
        for name, given, what in (
            ("role_configs", role_configs, "role names to RolePermissionConfig"),
            ("tool_requirements", tool_requirements, "tool names to PermissionMode"),
        ):
            if given is not None and not isinstance(given, Mapping):
                raise TypeError(
                    f"{name} must be a mapping of {what} or None, "
                    f"got {type(given).__name__}: {given!r}"
                )
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
        for tool in reqs:
            if not isinstance(tool, str):
                raise TypeError(f"tool_requirements keys must be tool names, got {tool!r}")
        self.tool_requirements: dict[str, PermissionMode] = reqs
        #: The mode a role without a config gets; None allows it (0.1.0's rule).
        self.unknown_role: PermissionMode | None = (
            None if unknown_role is None else _coerce_mode(unknown_role, "unknown_role")
        )
        # tool_requirements keyed by normalised name, with the snapshot of the dict
        # it was built from; rebuilt whenever the contents differ (so edits still
        # apply). One attribute, so a racing thread sees a consistent pair.
        self._required: tuple[tuple[tuple[Any, Any], ...], dict[str, PermissionMode]] = ((), {})
        # role_configs keyed by normalised role, built the same way (on a miss only).
        self._roles: tuple[tuple[tuple[Any, Any], ...], dict[str, RolePermissionConfig]] = (
            (),
            {},
        )
        self._warned_roles: set[str] = set()
        self._warn_lock = threading.Lock()

    def _required_mode(self, key: str) -> PermissionMode:
        reqs = self.tool_requirements
        if not reqs:
            return PermissionMode.READ_ONLY
        snapshot = tuple(reqs.items())
        built_from, required = self._required
        if snapshot != built_from:
            required = {}
            for tool, mode in snapshot:
                if not isinstance(tool, str):
                    continue  # cannot name a tool; rejected at construction
                name = _normalize(tool)
                level = _coerce_mode(mode, f"tool_requirements[{tool!r}]")
                # Two spellings of one tool: the stricter requirement wins.
                required[name] = max(required.get(name, level), level)
            self._required = (snapshot, required)
        return required.get(key, PermissionMode.READ_ONLY)

    def config_for(self, role: str) -> RolePermissionConfig | None:
        """The config that governs ``role``: exact name first, then its normal form.

        Example::

            >>> policy = PermissionPolicy(
            ...     {"researcher": RolePermissionConfig("researcher", PermissionMode.READ_ONLY)})
            >>> policy.config_for(" Researcher ").role, policy.config_for("writer")
            ('researcher', None)
        """
        configs = self.role_configs
        exact = configs.get(role)  # the common case: one dict hit
        if exact is not None or not configs or not isinstance(role, str):
            return exact
        snapshot = tuple(configs.items())
        built_from, by_form = self._roles
        if snapshot != built_from:
            by_form = {}
            for name, cfg in snapshot:
                if not isinstance(name, str) or not isinstance(cfg, RolePermissionConfig):
                    continue
                form = _normalize(name)
                known = by_form.get(form)
                # Two spellings of one role: the lower mode governs.
                if known is None or cfg.mode < known.mode:
                    by_form[form] = cfg
            self._roles = (snapshot, by_form)
        return by_form.get(_normalize(role))

    def _warn_unknown(self, role: str) -> None:
        if role in self._warned_roles:
            return
        with self._warn_lock:
            if role in self._warned_roles or len(self._warned_roles) >= _WARNED_ROLES_LIMIT:
                return
            self._warned_roles.add(role)
        configured = ", ".join(_shown(r) for r in list(self.role_configs)[:10])
        warn_user(
            f"role {_shown(role)} has no config in this PermissionPolicy (configured: "
            f"{configured}): its tool calls are allowed. Check the spelling, add a "
            "RolePermissionConfig, or pass PermissionPolicy(unknown_role=PermissionMode."
            "READ_ONLY) to limit roles without a config",
            UserWarning,
        )

    def authorize(self, role: str, tool_name: str) -> PermissionOutcome:
        """Decide whether ``role`` may call ``tool_name``; the first deciding step wins.

        Tool and role names are compared in their :func:`normalize_tool_name`
        form; the reasons quote the names as given.
        """
        if not isinstance(tool_name, str):
            raise TypeError(f"tool_name must be a str, got {tool_name!r}")
        cfg = self.config_for(role)
        if cfg is None:
            fallback = self.unknown_role
            if fallback is None:
                if self.role_configs:
                    self._warn_unknown(role)
                return PermissionOutcome(allowed=True, reason="no config for role, default allow")
            return self._decide(role, tool_name, fallback, None, None, _UNKNOWN_ROLE_NOTE)
        return self._decide(role, tool_name, cfg.mode, cfg.denied_tools, cfg.allowed_tools, "")

    def _decide(
        self,
        role: str,
        tool_name: str,
        mode: PermissionMode,
        denied: Iterable[object] | None,
        allowed: Iterable[object] | None,
        why: str,
    ) -> PermissionOutcome:
        active = mode.name
        key = _normalize(tool_name)
        if denied and _contains(denied, key):
            return PermissionOutcome(
                allowed=False,
                reason=f"tool '{tool_name}' is explicitly denied for role '{role}'",
                active_mode=active,
                required_mode="N/A",
            )

        required = self._required_mode(key)
        if mode < required:
            return PermissionOutcome(
                allowed=False,
                reason=f"role '{role}' has {active} but tool requires {required.name}{why}",
                active_mode=active,
                required_mode=required.name,
            )

        if allowed is not None and not _contains(allowed, key):
            return PermissionOutcome(
                allowed=False,
                reason=f"tool '{tool_name}' not in allowed list for role '{role}'",
                active_mode=active,
                required_mode=required.name,
            )

        return PermissionOutcome(allowed=True, active_mode=active, required_mode=required.name)


#: Ends the reason of a mode refusal decided by ``unknown_role``.
_UNKNOWN_ROLE_NOTE = " (no config for role: unknown_role)"


def refused_before_run(outcome: PermissionOutcome, *, role: str, tool: str) -> PermissionOutcome:
    """``outcome`` as a session raises it: a mode refusal also names the tool and the fix.

    The contract pins a mode refusal's reason (``"role 'r' has READ_ONLY but
    tool requires FULL_ACCESS"``), which names no tool; the reason raised for a
    tool call refused before it ran keeps that text first and adds the tool and
    the two settings that would let it through. The policy's own answer
    (``authorize``, ``PermissionEnforcer.check``) is unchanged. Other outcomes
    (a deny list, a whitelist: their reasons name the tool) are returned as
    they are.

    Example::

        >>> out = PermissionOutcome(False, "role 'r' has READ_ONLY but tool requires FULL_ACCESS",
        ...                         "READ_ONLY", "FULL_ACCESS")
        >>> why = refused_before_run(out, role="r", tool="drop").reason
        >>> print(why)  # doctest: +NORMALIZE_WHITESPACE
        role 'r' has READ_ONLY but tool requires FULL_ACCESS: tool 'drop' was refused before
        it ran; give role 'r' mode FULL_ACCESS in its RolePermissionConfig, or lower
        tool_requirements['drop']
    """
    active = PermissionMode.__members__.get(outcome.active_mode)
    required = PermissionMode.__members__.get(outcome.required_mode)
    reason = outcome.reason
    if outcome.allowed or not reason or active is None or required is None or active >= required:
        return outcome
    if reason.endswith(_UNKNOWN_ROLE_NOTE):
        fix = (
            f"give role '{role}' a RolePermissionConfig with mode {required.name} (or raise "
            "the policy's unknown_role)"
        )
    else:
        fix = f"give role '{role}' mode {required.name} in its RolePermissionConfig"
    # The words added here must not read as a provider failure to classify_exception
    # (no "error", "failed", "timeout"): the refusal stays an llm_error, as 0.1.0's.
    return replace(
        outcome,
        reason=(
            f"{reason}: tool '{tool}' was refused before it ran; {fix}, or lower "
            f"tool_requirements[{tool!r}]"
        ),
    )


class PermissionEnforcer:
    """Convenience wrapper over a :class:`PermissionPolicy`; advisory on its own.

    Example::

        >>> def search() -> None: ...
        >>> enforcer = PermissionEnforcer(PermissionPolicy())
        >>> [t.__name__ for t in enforcer.filter_tools("anyone", [search])]
        ['search']
    """

    def __init__(self, policy: PermissionPolicy) -> None:
        if not callable(getattr(policy, "authorize", None)):
            # Else the first check() fails with a bare AttributeError, far from here.
            raise TypeError(
                f"policy must be a PermissionPolicy, got {type(policy).__name__}: {policy!r}"
            )
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
