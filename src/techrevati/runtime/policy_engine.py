"""Declarative rules: when a condition over the phase state holds, propose actions.

The engine only *proposes* actions; the caller decides what to do with them.

Example::

    >>> from techrevati.runtime.policy_engine import (
    ...     And, PhaseCompleted, PhaseContext, PolicyAction, PolicyActionData,
    ...     PolicyEngine, PolicyRule, QualityAt,
    ... )
    >>> from techrevati.runtime.quality_gate import QualityLevel
    >>> rule = PolicyRule(
    ...     "advance",
    ...     And([PhaseCompleted(), QualityAt(QualityLevel.STANDARD)]),
    ...     [PolicyActionData(PolicyAction.ADVANCE_PHASE)],
    ... )
    >>> ctx = PhaseContext(phase_completed=True, quality_level=QualityLevel.STRICT)
    >>> [a.action.value for a in PolicyEngine([rule]).evaluate(ctx)]
    ['advance_phase']
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeGuard

from techrevati.runtime.quality_gate import QualityLevel

__all__ = [
    "AgentFailed",
    "AllAgentsComplete",
    "And",
    "CostExceeded",
    "GateBelow",
    "Or",
    "PhaseCompleted",
    "PhaseContext",
    "PolicyAction",
    "PolicyActionData",
    "PolicyCondition",
    "PolicyEngine",
    "PolicyRule",
    "QualityAt",
    "RetryExhausted",
    "TimedOut",
]

logger = logging.getLogger("techrevati.runtime.policy")
logger.addHandler(logging.NullHandler())


@dataclass
class PhaseContext:
    """Snapshot of a phase's state that conditions are evaluated against.

    ``retry_exhausted_scenarios`` holds scenario *value strings* such as ``"llm_timeout"``.

    Example::

        >>> PhaseContext(phase="build", gate_score=90.0).gate_score
        90.0
    """

    phase: str = ""
    quality_level: QualityLevel | None = None
    gate_score: float = 0.0
    gate_threshold: float = 0.0
    completed_roles: set[str] = field(default_factory=set)
    failed_roles: set[str] = field(default_factory=set)
    all_roles: set[str] = field(default_factory=set)
    elapsed_seconds: float = 0.0
    retry_exhausted_scenarios: set[str] = field(default_factory=set)
    phase_completed: bool = False
    total_cost_usd: float = 0.0


# What public arguments accept as a flag and as a number: True or False (NumPy's
# booleans too: a classifier's score < threshold is one), never a string, whose truth
# would read "no" as yes; any real number (NumPy's scalars included), never a bool.


def is_flag(value: object) -> TypeGuard[bool]:
    """True for a ``bool`` or a NumPy boolean scalar."""
    if isinstance(value, bool):
        return True
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")


def is_whole(value: object) -> TypeGuard[int]:
    """True for an integer (``int``, NumPy's integer scalars), not a flag."""
    return isinstance(value, numbers.Integral) and not is_flag(value)


def is_real(value: object) -> TypeGuard[float]:
    """True for a real number (``int``, ``float``, NumPy's scalars), not a flag."""
    return isinstance(value, numbers.Real) and not is_flag(value)


def check_number(name: str, value: object, *, minimum: float | None = None) -> float:
    """A number a policy compares with: NaN compares false with everything, so a NaN
    threshold or score would silently never (or always) match. Raises naming ``name``."""
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a number{bound} (not NaN), got {value!r}")
    return value


def check_roles(name: str, value: object) -> set[str]:
    """A set of role names (None: empty); a lone string would read as its letters."""
    if value is None:
        return set()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a collection of role names, got {value!r}")
    roles = set(value)
    for role in roles:
        if not isinstance(role, str):
            raise TypeError(f"{name} holds role names (str), got {role!r}")
    return roles


class PolicyCondition:
    """Base class for conditions; subclasses override :meth:`matches`.

    Example::

        >>> class Always(PolicyCondition):
        ...     def matches(self, ctx: PhaseContext) -> bool:
        ...         return True
        >>> Always().matches(PhaseContext())
        True
    """

    def matches(self, ctx: PhaseContext) -> bool:
        """Return whether the condition holds for ``ctx``."""
        raise NotImplementedError


class And(PolicyCondition):
    """Matches when every child matches; an empty list matches (vacuous truth)."""

    def __init__(self, conditions: list[PolicyCondition]) -> None:
        self.conditions = conditions

    def matches(self, ctx: PhaseContext) -> bool:
        return all(c.matches(ctx) for c in self.conditions)

    def __repr__(self) -> str:
        return f"And([{', '.join(repr(c) for c in self.conditions)}])"


class Or(PolicyCondition):
    """Matches when any child matches; an empty list does not match."""

    def __init__(self, conditions: list[PolicyCondition]) -> None:
        self.conditions = conditions

    def matches(self, ctx: PhaseContext) -> bool:
        return any(c.matches(ctx) for c in self.conditions)

    def __repr__(self) -> str:
        return f"Or([{', '.join(repr(c) for c in self.conditions)}])"


class QualityAt(PolicyCondition):
    """Matches when the observed quality level is at least ``level`` (``None`` never does)."""

    def __init__(self, level: QualityLevel) -> None:
        if not isinstance(level, QualityLevel):
            raise TypeError(f"QualityAt level must be a QualityLevel, got {level!r}")
        self.level = level

    def matches(self, ctx: PhaseContext) -> bool:
        return ctx.quality_level is not None and ctx.quality_level >= self.level

    def __repr__(self) -> str:
        return f"QualityAt({self.level.name})"


class PhaseCompleted(PolicyCondition):
    """Matches when ``ctx.phase_completed`` is true."""

    def matches(self, ctx: PhaseContext) -> bool:
        return ctx.phase_completed

    def __repr__(self) -> str:
        return "PhaseCompleted()"


class AgentFailed(PolicyCondition):
    """Matches when ``role`` failed, or, with no role, when any role failed."""

    def __init__(self, role: str | None = None) -> None:
        self.role = role

    def matches(self, ctx: PhaseContext) -> bool:
        if self.role:
            return self.role in ctx.failed_roles
        return bool(ctx.failed_roles)

    def __repr__(self) -> str:
        return f"AgentFailed(role={self.role!r})"


class GateBelow(PolicyCondition):
    """Matches when the gate score is strictly below ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = check_number("GateBelow threshold", threshold)

    def matches(self, ctx: PhaseContext) -> bool:
        return ctx.gate_score < self.threshold

    def __repr__(self) -> str:
        return f"GateBelow({self.threshold})"


class RetryExhausted(PolicyCondition):
    """Matches when ``scenario`` exhausted its retries, or, with none, when any did."""

    def __init__(self, scenario: str | None = None) -> None:
        self.scenario = scenario

    def matches(self, ctx: PhaseContext) -> bool:
        if self.scenario:
            return self.scenario in ctx.retry_exhausted_scenarios
        return bool(ctx.retry_exhausted_scenarios)

    def __repr__(self) -> str:
        return f"RetryExhausted(scenario={self.scenario!r})"


class TimedOut(PolicyCondition):
    """Matches when elapsed time is strictly greater than ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = check_number("TimedOut seconds", seconds, minimum=0.0)

    def matches(self, ctx: PhaseContext) -> bool:
        return ctx.elapsed_seconds > self.seconds

    def __repr__(self) -> str:
        return f"TimedOut({self.seconds}s)"


class AllAgentsComplete(PolicyCondition):
    """Matches when every role has either completed or failed (set equality)."""

    def matches(self, ctx: PhaseContext) -> bool:
        return (ctx.completed_roles | ctx.failed_roles) == ctx.all_roles

    def __repr__(self) -> str:
        return "AllAgentsComplete()"


class CostExceeded(PolicyCondition):
    """Matches when the total cost is strictly greater than ``budget_usd``."""

    def __init__(self, budget_usd: float) -> None:
        self.budget_usd = check_number("CostExceeded budget_usd", budget_usd, minimum=0.0)

    def matches(self, ctx: PhaseContext) -> bool:
        return ctx.total_cost_usd > self.budget_usd

    def __repr__(self) -> str:
        return f"CostExceeded(${self.budget_usd})"


# (str, Enum) rather than StrEnum: the contract pins str(member) == "PolicyAction.X".
class PolicyAction(str, Enum):  # noqa: UP042
    """Actions a rule can propose (the engine only returns them; the caller acts).

    Example::

        PolicyActionData(PolicyAction.ESCALATE, {"reason": "gate failed twice"})
    """

    ADVANCE_PHASE = "advance_phase"
    RETRY_AGENT = "retry_agent"
    RETRY_PHASE = "retry_phase"
    RECOVER_ONCE = "recover_once"
    ESCALATE = "escalate"
    STORE_GATE_FEEDBACK = "store_gate_feedback"
    GENERATE_HANDOFF = "generate_handoff"
    NOTIFY = "notify"
    ABORT_PHASE = "abort_phase"


@dataclass(frozen=True)
class PolicyActionData:
    """An action plus optional parameters.

    Example::

        >>> PolicyActionData(PolicyAction.ESCALATE, {"reason": "x"}).to_dict()
        {'action': 'escalate', 'params': {'reason': 'x'}}
    """

    action: PolicyAction
    params: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"action": value}``, plus ``"params"`` only when params is truthy."""
        out: dict[str, Any] = {"action": self.action.value}
        if self.params:
            out["params"] = self.params
        return out


@dataclass(frozen=True)
class PolicyRule:
    """A named condition with the actions it proposes; a lower ``priority`` runs first.

    Example::

        >>> PolicyRule("abort", CostExceeded(5.0), [PolicyActionData(PolicyAction.ABORT_PHASE)],
        ...            priority=10).priority
        10
    """

    name: str
    condition: PolicyCondition
    actions: list[PolicyActionData]
    priority: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(
                f"PolicyRule {self.name!r}: priority must be an int, got {self.priority!r}"
            )
        if not isinstance(self.condition, PolicyCondition):
            raise TypeError(
                f"PolicyRule {self.name!r}: condition must be a PolicyCondition, "
                f"got {self.condition!r}"
            )


class PolicyEngine:
    """Evaluates a fixed set of rules in priority order.

    Every matching rule contributes all its actions (no short-circuit), so two
    rules that both match both get a say; the caller resolves conflicts.

    Example::

        >>> notify = [PolicyActionData(PolicyAction.NOTIFY)]
        >>> abort = [PolicyActionData(PolicyAction.ABORT_PHASE)]
        >>> engine = PolicyEngine([
        ...     PolicyRule("late", TimedOut(10), notify, 90),
        ...     PolicyRule("over", CostExceeded(1.0), abort, 1),
        ... ])
        >>> [r.name for r in engine.rules]
        ['over', 'late']
    """

    def __init__(self, rules: Iterable[PolicyRule]) -> None:
        checked: list[PolicyRule] = []
        for index, rule in enumerate(rules):
            # A non-rule would otherwise fail much later, deep inside evaluate().
            if not isinstance(rule, PolicyRule):
                raise TypeError(
                    f"PolicyEngine rules must be PolicyRule instances; "
                    f"item {index} is {type(rule).__name__}: {rule!r}"
                )
            checked.append(rule)
        # sorted() is stable, so rules of equal priority keep the caller's order.
        self._rules: tuple[PolicyRule, ...] = tuple(sorted(checked, key=lambda r: r.priority))

    @property
    def rules(self) -> list[PolicyRule]:
        """A copy of the rules in evaluation order; mutating it does not affect the engine."""
        return list(self._rules)

    def evaluate(self, ctx: PhaseContext) -> list[PolicyActionData]:
        """Return the actions of every matching rule, in rule order then action order."""
        actions: list[PolicyActionData] = []
        for rule in self._rules:
            if rule.condition.matches(ctx):
                actions.extend(rule.actions)
        return actions
