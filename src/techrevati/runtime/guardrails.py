"""Guardrails: pluggable checks that run before and after a tool call.

A guardrail is any object with a ``name`` and ``check_pre``/``check_post`` methods
returning a :class:`GuardrailOutcome`. The first disallowing outcome stops the run.

The helpers hand each guardrail the tool name in its
:func:`~techrevati.runtime.permissions.normalize_tool_name` form (NFKC,
case-folded, stripped), the same form the permission checks compare, so a
guardrail written as ``tool == "shell"`` also catches ``"SHELL"``,
``" shell "`` and full-width ``"ｓｈｅｌｌ"``. The error keeps the name as given.

Example::

    >>> from dataclasses import dataclass
    >>> from techrevati.runtime.guardrails import (
    ...     Guardrail, GuardrailOutcome, GuardrailViolatedError, run_pre_checks)
    >>> @dataclass
    ... class NoShell(Guardrail):
    ...     name: str = "no_shell"
    ...     def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
    ...         return GuardrailOutcome(tool != "shell", "shell is off-limits")
    ...     def check_post(self, value, *, role: str, tool: str) -> GuardrailOutcome:
    ...         return GuardrailOutcome(True)
    >>> try:
    ...     run_pre_checks([NoShell()], role="coder", tool="Shell ")
    ... except GuardrailViolatedError as exc:
    ...     print(exc)
    pre guardrail 'no_shell' blocked tool 'Shell ' for role 'coder': shell is off-limits
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from .permissions import normalize_tool_name
from .policy_engine import is_flag

__all__ = [
    "AllowAllGuardrail",
    "Guardrail",
    "GuardrailOutcome",
    "GuardrailStage",
    "GuardrailViolatedError",
    "run_post_checks",
    "run_pre_checks",
]

GuardrailStage: TypeAlias = Literal["pre", "post"]
"""Which side of the tool call a guardrail check ran on."""


@dataclass(frozen=True)
class GuardrailOutcome:
    """The verdict of one check.

    Example::

        >>> GuardrailOutcome(allowed=False, reason="pii detected").allowed
        False
    """

    allowed: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        # "no" is truthy: a guardrail answering allowed="no" would let the tool run.
        if not is_flag(self.allowed):
            raise TypeError(f"GuardrailOutcome allowed must be True or False, got {self.allowed!r}")
        object.__setattr__(self, "allowed", bool(self.allowed))  # (a NumPy boolean)
        if self.reason is not None and not isinstance(self.reason, str):
            raise TypeError(f"GuardrailOutcome reason must be a str or None, got {self.reason!r}")


@runtime_checkable
class Guardrail(Protocol):
    """Structural interface for guardrails; subclass it or just match its shape.

    It is deliberately not a dataclass, so ``@dataclass`` subclasses may declare
    required fields before ``name: str = "..."``.

    Example::

        >>> isinstance(AllowAllGuardrail(), Guardrail)
        True
    """

    if TYPE_CHECKING:
        # Read-only for type checkers so frozen dataclasses such as
        # AllowAllGuardrail conform; at runtime it stays a plain annotation, which
        # subclasses can override with a dataclass field.
        @property
        def name(self) -> str: ...

    else:
        name: str

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        """Decide whether ``role`` may call ``tool``."""
        ...

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        """Decide whether the tool's result ``value`` may be returned."""
        ...


class GuardrailViolatedError(Exception):
    """Raised by the ``run_*_checks`` helpers when a guardrail disallows a call.

    Example::

        >>> err = GuardrailViolatedError(
        ...     GuardrailOutcome(False), guardrail="g", role="r", tool="t", stage="pre")
        >>> str(err)
        "pre guardrail 'g' blocked tool 't' for role 'r': no reason provided"
        >>> late = GuardrailViolatedError(
        ...     GuardrailOutcome(False, "an API key"), guardrail="g", role="r", tool="t",
        ...     stage="post")
        >>> print(late)  # doctest: +NORMALIZE_WHITESPACE
        post guardrail 'g' blocked tool 't' for role 'r': an API key; the tool already ran
        and its result was withheld
    """

    def __init__(
        self,
        outcome: GuardrailOutcome,
        *,
        guardrail: str,
        role: str,
        tool: str,
        stage: GuardrailStage,
    ) -> None:
        self.outcome = outcome
        self.guardrail = guardrail
        self.role = role
        self.tool = tool
        self.stage = stage
        reason = outcome.reason or "no reason provided"
        message = f"{stage} guardrail '{guardrail}' blocked tool '{tool}' for role '{role}'"
        message += f": {reason}"
        if stage == "post":
            # "blocked tool" alone reads as if the tool never ran; a post-check sees its
            # result, so whatever the tool did has happened. (The contract pins the text
            # above; words added must not read as a failure to classify_exception.)
            message += "; the tool already ran and its result was withheld"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: the default pickling would replay only the message.
        return (
            _rebuild_violation,
            (type(self), self.outcome, self.guardrail, self.role, self.tool, self.stage),
            self.__dict__,
        )


def _rebuild_violation(
    cls: type[GuardrailViolatedError],
    outcome: GuardrailOutcome,
    guardrail: str,
    role: str,
    tool: str,
    stage: GuardrailStage,
) -> GuardrailViolatedError:
    return cls(outcome, guardrail=guardrail, role=role, tool=tool, stage=stage)


def _label(guardrail: object) -> str:
    return str(getattr(guardrail, "name", type(guardrail).__name__))


def run_pre_checks(guardrails: Iterable[Guardrail], *, role: str, tool: str) -> None:
    """Run ``check_pre`` on each guardrail in order; raise on the first refusal.

    Each guardrail sees ``tool`` normalised; later ones are not consulted once
    one refuses.
    """
    key = normalize_tool_name(tool)
    for g in guardrails:
        try:
            answer = g.check_pre(role=role, tool=key)
        except Exception as error:
            # Raised as it is (the caller may catch its type), with a note naming whose.
            _note(
                error,
                f"raised by guardrail {_label(g)!r} in its pre-check of tool {tool!r} "
                f"(role {role!r}): the tool did not run",
            )
            raise
        outcome = _checked(g, "check_pre", answer)
        if not outcome.allowed:
            raise GuardrailViolatedError(
                outcome, guardrail=_label(g), role=role, tool=tool, stage="pre"
            )


def run_post_checks(guardrails: Iterable[Guardrail], value: Any, *, role: str, tool: str) -> None:
    """Run ``check_post`` on each guardrail in order (``tool`` normalised); raise on refusal."""
    key = normalize_tool_name(tool)
    for g in guardrails:
        try:
            answer = g.check_post(value, role=role, tool=key)
        except Exception as error:
            _note(
                error,
                f"raised by guardrail {_label(g)!r} in its post-check of tool {tool!r} "
                f"(role {role!r}): the tool ran, and its result was withheld",
            )
            raise
        outcome = _checked(g, "check_post", answer)
        if not outcome.allowed:
            raise GuardrailViolatedError(
                outcome, guardrail=_label(g), role=role, tool=tool, stage="post"
            )


def _note(error: BaseException, note: str) -> None:
    # Once: a guardrail that raises one error object again on every call (a cached one)
    # would otherwise carry a note per call.
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)


def _checked(guardrail: Guardrail, method: str, outcome: object) -> GuardrailOutcome:
    """A guardrail's answer, or a TypeError naming it (the tool then does not run)."""
    if not isinstance(outcome, GuardrailOutcome):
        raise TypeError(
            f"guardrail {_label(guardrail)!r}: {method} must return a GuardrailOutcome, "
            f"got {type(outcome).__name__}: {outcome!r}"
        )
    return outcome


_ALLOW = GuardrailOutcome(allowed=True)


@dataclass(frozen=True)
class AllowAllGuardrail:
    """A guardrail that allows everything; handy as a default or placeholder.

    Example::

        >>> AllowAllGuardrail().check_pre(role="r", tool="t")
        GuardrailOutcome(allowed=True, reason=None)
    """

    name: str = "allow_all"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        """Always allowed."""
        return _ALLOW

    def check_post(self, value: Any, *, role: str, tool: str) -> GuardrailOutcome:
        """Always allowed."""
        return _ALLOW
