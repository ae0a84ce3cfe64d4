"""Failure classification, recovery recipes and backoff helpers.

Recovery here is *bookkeeping*: :func:`attempt_recovery` decides whether a
scenario may still be retried and records what happened; it never sleeps,
switches providers or runs anything itself. The caller acts on the result.

Example::

    >>> from techrevati.runtime.retry_policy import (
    ...     RecoveryContext, attempt_recovery, classify_exception,
    ... )
    >>> ctx = RecoveryContext()
    >>> scenario = classify_exception(TimeoutError("slow model"))
    >>> scenario.value
    'llm_timeout'
    >>> [attempt_recovery(scenario, ctx).outcome for _ in range(3)]
    ['recovered', 'recovered', 'escalation_required']
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, TypeAlias

from .circuit_breaker import CircuitOpenError
from .policy_engine import is_real, is_whole

__all__ = [
    "EscalationPolicy",
    "FailureScenario",
    "JitterMode",
    "RecoveryContext",
    "RecoveryEvent",
    "RecoveryRecipe",
    "RecoveryResult",
    "RecoveryStep",
    "aattempt_recovery",
    "attempt_recovery",
    "backoff_delay",
    "classify_exception",
    "next_provider",
    "recipe_for",
    "smaller_context_budget",
]

logger = logging.getLogger("techrevati.runtime.retry")
logger.addHandler(logging.NullHandler())

JitterMode: TypeAlias = Literal["none", "full", "equal", "decorrelated"]
"""Backoff jitter strategy accepted by :func:`backoff_delay`."""

RecoveryOutcome: TypeAlias = Literal["recovered", "partial_recovery", "escalation_required"]

# The enums below use (str, Enum) rather than StrEnum because the contract pins
# str(member) == "ClassName.MEMBER" while member == "value" stays true.


class FailureScenario(str, Enum):  # noqa: UP042
    """What kind of failure a recovery recipe addresses.

    Example::

        classify_exception(TimeoutError()) is FailureScenario.LLM_TIMEOUT   # True
    """

    LLM_TIMEOUT = "llm_timeout"
    LLM_ERROR = "llm_error"
    TOOL_EXECUTION_ERROR = "tool_execution_error"
    CONTEXT_OVERFLOW = "context_overflow"
    DEPENDENCY_TIMEOUT = "dependency_timeout"
    MEMORY_CORRUPTION = "memory_corruption"
    PROVIDER_FAILURE = "provider_failure"


class RecoveryStep(str, Enum):  # noqa: UP042
    """One step of a recovery recipe (advisory; the caller performs it).

    Example::

        recipe_for(FailureScenario.LLM_ERROR).steps[0] is RecoveryStep.RETRY_WITH_BACKOFF
    """

    RETRY_WITH_BACKOFF = "retry_with_backoff"
    RETRY_WITH_SMALLER_CONTEXT = "retry_with_smaller_context"
    SWITCH_PROVIDER = "switch_provider"
    RESTART_AGENT = "restart_agent"
    CLEAR_MEMORY_CACHE = "clear_memory_cache"
    REDUCE_TOOL_SET = "reduce_tool_set"
    ESCALATE_TO_HUMAN = "escalate_to_human"


class EscalationPolicy(str, Enum):  # noqa: UP042
    """What should happen once a recipe's attempts are exhausted.

    Example::

        recipe_for(FailureScenario.MEMORY_CORRUPTION).escalation_policy  # EscalationPolicy.ABORT
    """

    ALERT_HUMAN = "alert_human"
    LOG_AND_CONTINUE = "log_and_continue"
    ABORT = "abort"


@dataclass(frozen=True)
class RecoveryRecipe:
    """The ordered steps and attempt budget for one failure scenario.

    Example::

        >>> recipe_for(FailureScenario.LLM_ERROR).max_attempts
        2
    """

    scenario: FailureScenario
    steps: list[RecoveryStep]
    max_attempts: int
    escalation_policy: EscalationPolicy


@dataclass
class RecoveryResult:
    """Outcome of one :func:`attempt_recovery` call.

    Example::

        >>> RecoveryResult("recovered", 1, ["retry_with_backoff"]).to_dict()["steps_taken"]
        1
    """

    outcome: RecoveryOutcome
    steps_taken: int = 0
    recovered_steps: list[str] = field(default_factory=list)
    remaining_steps: list[str] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the five fields as a JSON-friendly dict (lists are copied)."""
        return {
            "outcome": self.outcome,
            "steps_taken": self.steps_taken,
            "recovered_steps": list(self.recovered_steps),
            "remaining_steps": list(self.remaining_steps),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RecoveryEvent:
    """A record of one recovery attempt: ``event_type`` is succeeded, failed or escalated.

    Example::

        >>> ctx = RecoveryContext()
        >>> _ = attempt_recovery(FailureScenario.LLM_ERROR, ctx)
        >>> ctx.events[0].to_dict()["event_type"]
        'succeeded'
    """

    event_type: str
    scenario: str
    recipe_steps: list[str]
    result: dict[str, Any]
    timestamp: str

    def to_dict(self) -> dict[str, Any]:
        """Return the five fields as a JSON-friendly dict."""
        return {
            "event_type": self.event_type,
            "scenario": self.scenario,
            "recipe_steps": list(self.recipe_steps),
            "result": dict(self.result),
            "timestamp": self.timestamp,
        }


# User-editable at start-up (documented), so recipe_for() reads it on every call.
_RECIPES: dict[FailureScenario, RecoveryRecipe] = {
    FailureScenario.LLM_TIMEOUT: RecoveryRecipe(
        FailureScenario.LLM_TIMEOUT,
        [RecoveryStep.RETRY_WITH_BACKOFF],
        2,
        EscalationPolicy.ALERT_HUMAN,
    ),
    FailureScenario.LLM_ERROR: RecoveryRecipe(
        FailureScenario.LLM_ERROR,
        [RecoveryStep.RETRY_WITH_BACKOFF, RecoveryStep.SWITCH_PROVIDER],
        2,
        EscalationPolicy.ALERT_HUMAN,
    ),
    FailureScenario.TOOL_EXECUTION_ERROR: RecoveryRecipe(
        FailureScenario.TOOL_EXECUTION_ERROR,
        [RecoveryStep.RESTART_AGENT],
        1,
        EscalationPolicy.LOG_AND_CONTINUE,
    ),
    FailureScenario.CONTEXT_OVERFLOW: RecoveryRecipe(
        FailureScenario.CONTEXT_OVERFLOW,
        [RecoveryStep.RETRY_WITH_SMALLER_CONTEXT, RecoveryStep.REDUCE_TOOL_SET],
        1,
        EscalationPolicy.ALERT_HUMAN,
    ),
    FailureScenario.DEPENDENCY_TIMEOUT: RecoveryRecipe(
        FailureScenario.DEPENDENCY_TIMEOUT,
        [RecoveryStep.RETRY_WITH_BACKOFF],
        1,
        EscalationPolicy.ALERT_HUMAN,
    ),
    FailureScenario.MEMORY_CORRUPTION: RecoveryRecipe(
        FailureScenario.MEMORY_CORRUPTION,
        [RecoveryStep.CLEAR_MEMORY_CACHE, RecoveryStep.RESTART_AGENT],
        1,
        EscalationPolicy.ABORT,
    ),
    FailureScenario.PROVIDER_FAILURE: RecoveryRecipe(
        FailureScenario.PROVIDER_FAILURE,
        [RecoveryStep.SWITCH_PROVIDER, RecoveryStep.RETRY_WITH_BACKOFF],
        2,
        EscalationPolicy.ABORT,
    ),
}


def recipe_for(scenario: FailureScenario) -> RecoveryRecipe:
    """Return the current recipe for ``scenario``; an unknown key raises ``KeyError``.

    Example::

        >>> [s.value for s in recipe_for(FailureScenario.PROVIDER_FAILURE).steps]
        ['switch_provider', 'retry_with_backoff']
    """
    return _RECIPES[scenario]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


class RecoveryContext:
    """Per-task attempt counters and the history of recovery events.

    Subclasses may override :meth:`_fail_at_step` to simulate a step failing.

    Example::

        >>> ctx = RecoveryContext()
        >>> ctx.attempt_count(FailureScenario.LLM_TIMEOUT)
        0
    """

    def __init__(self) -> None:
        self._attempts: dict[FailureScenario, int] = {}
        self._events: list[RecoveryEvent] = []

    def attempt_count(self, scenario: FailureScenario) -> int:
        """How many non-escalated attempts were made for ``scenario``."""
        return self._attempts.get(scenario, 0)

    @property
    def events(self) -> list[RecoveryEvent]:
        """A copy of the recorded events, oldest first."""
        return list(self._events)

    def _fail_at_step(self) -> int | None:
        """Test hook: the step index at which this attempt fails, or ``None``."""
        return None

    def _emit(
        self,
        event_type: str,
        scenario: FailureScenario,
        recipe: RecoveryRecipe,
        result: RecoveryResult,
    ) -> None:
        self._events.append(
            RecoveryEvent(
                event_type=event_type,
                scenario=scenario.value,
                recipe_steps=[step.value for step in recipe.steps],
                result=result.to_dict(),
                timestamp=_utc_now(),
            )
        )


def attempt_recovery(scenario: FailureScenario, ctx: RecoveryContext) -> RecoveryResult:
    """Record one recovery attempt for ``scenario`` and report its outcome.

    Once ``max_attempts`` attempts were recorded, further calls return
    ``"escalation_required"`` without incrementing the counter.

    Example::

        >>> ctx = RecoveryContext()
        >>> attempt_recovery(FailureScenario.TOOL_EXECUTION_ERROR, ctx).outcome
        'recovered'
        >>> attempt_recovery(FailureScenario.TOOL_EXECUTION_ERROR, ctx).reason
        'max attempts (1) exhausted for tool_execution_error'
    """
    # Accept the plain value string too; (str, Enum) makes it a valid lookup key anyway.
    scenario = FailureScenario(scenario)
    recipe = recipe_for(scenario)
    attempts = ctx.attempt_count(scenario)

    if attempts >= recipe.max_attempts:
        result = RecoveryResult(
            outcome="escalation_required",
            reason=f"max attempts ({recipe.max_attempts}) exhausted for {scenario.value}",
        )
        ctx._emit("escalated", scenario, recipe, result)
        return result

    ctx._attempts[scenario] = attempts + 1
    fail_at = ctx._fail_at_step()
    step_values = [step.value for step in recipe.steps]

    for index in range(len(step_values)):
        if fail_at is not None and index >= fail_at:
            recovered = step_values[:index]
            result = RecoveryResult(
                outcome="partial_recovery",
                steps_taken=len(recovered),
                recovered_steps=recovered,
                remaining_steps=step_values[index:],
            )
            ctx._emit("failed", scenario, recipe, result)
            return result

    result = RecoveryResult(
        outcome="recovered",
        steps_taken=len(step_values),
        recovered_steps=step_values,
    )
    ctx._emit("succeeded", scenario, recipe, result)
    return result


async def aattempt_recovery(
    scenario: FailureScenario,
    ctx: RecoveryContext,
    *,
    sleeper: Callable[[float], Awaitable[None]] | None = None,
) -> RecoveryResult:
    """Async twin of :func:`attempt_recovery`, with identical outcomes and counters.

    ``sleeper`` (default :func:`asyncio.sleep`) is accepted for forward
    compatibility but is not called: steps are bookkeeping only.

    Example::

        >>> import asyncio
        >>> ctx = RecoveryContext()
        >>> asyncio.run(aattempt_recovery(FailureScenario.LLM_ERROR, ctx)).outcome
        'recovered'
    """
    # Nothing awaits: 0.1.0 callers rely on recovery never delaying the event loop.
    del sleeper
    return attempt_recovery(scenario, ctx)


def _check_seconds(name: str, value: object, *, positive: bool) -> None:
    if not is_real(value):
        raise TypeError(f"backoff_delay {name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"backoff_delay {name} must be {need}, got {value!r}")


def backoff_delay(
    attempt: int,
    base: float = 2.0,
    jitter: bool | JitterMode = "decorrelated",
    cap: float = 60.0,
    prev_delay: float = 0.0,
) -> float:
    """Return a retry delay in seconds.

    With ``e = min(cap, base ** attempt)``: ``"none"`` gives ``e``; ``"full"``
    a uniform value in ``[0, e]``; ``"equal"`` one in ``[e/2, e]``;
    ``"decorrelated"`` ignores ``attempt`` and draws from
    ``[base, 3 * (prev_delay or base)]``, capped. ``True`` means ``"full"`` and
    ``False`` means ``"none"``.

    Example::

        >>> backoff_delay(3, jitter=False)
        8.0
        >>> 4.0 <= backoff_delay(3, jitter="equal") <= 8.0
        True
    """
    if not is_whole(attempt):
        raise TypeError(f"backoff_delay attempt must be an int, got {attempt!r}")
    if attempt < 0:
        raise ValueError(f"backoff_delay attempt must be >= 0, got {attempt!r}")
    # A negative or NaN delay would make the caller's sleep() raise, or not wait at all.
    _check_seconds("base", base, positive=True)
    _check_seconds("cap", cap, positive=False)
    _check_seconds("prev_delay", prev_delay, positive=False)
    # bool first: True/False are ints, and the contract maps them to named modes.
    if isinstance(jitter, bool):
        mode: str = "full" if jitter else "none"
    else:
        mode = jitter

    if mode == "decorrelated":
        anchor = prev_delay if prev_delay > 0 else base
        return min(cap, random.uniform(base, anchor * 3))

    if mode not in ("none", "full", "equal"):
        raise ValueError(f"unknown jitter mode: {jitter!r}")

    try:
        exp = min(cap, base**attempt)
    except OverflowError:
        # A float power overflows long before any realistic cap is reached.
        exp = cap
    if mode == "none":
        return float(exp)
    if mode == "full":
        return random.uniform(0.0, exp)
    half = exp / 2
    return half + random.uniform(0.0, half)


def next_provider(available_providers: list[str], current_provider: str) -> str | None:
    """Return the first provider that is not ``current_provider``, or ``None``.

    Example::

        >>> next_provider(["a", "b", "c"], "a")
        'b'
        >>> next_provider(["a"], "a") is None
        True
    """
    for provider in available_providers:
        if provider != current_provider:
            return provider
    return None


def smaller_context_budget(current_chars: int, reduction: float = 0.75) -> int:
    """Return ``int(current_chars * reduction)`` (truncated).

    ``current_chars`` is an int >= 0 and ``reduction`` a number in ``(0, 1]``: a
    larger one would grow the context it is meant to shrink.

    Example::

        >>> smaller_context_budget(10_000)
        7500
    """
    if not is_whole(current_chars):
        raise TypeError(
            f"smaller_context_budget current_chars must be an int, got {current_chars!r}"
        )
    if current_chars < 0:
        raise ValueError(
            f"smaller_context_budget current_chars must be >= 0, got {current_chars!r}"
        )
    if not is_real(reduction):
        raise TypeError(f"smaller_context_budget reduction must be a number, got {reduction!r}")
    if not 0 < reduction <= 1:  # NaN fails this too
        raise ValueError(f"smaller_context_budget reduction must be in (0, 1], got {reduction!r}")
    return int(current_chars * reduction)


_CONTEXT_MARKERS = (
    "context length",
    "token limit",
    "maximum context",
    "too many tokens",
    "context_length_exceeded",
)
_PROVIDER_MARKERS = (
    "connection refused",
    "connection reset",
    "503",
    "502",
    "service unavailable",
    "bad gateway",
)
_AUTH_MARKERS = ("401", "unauthorized", "authentication")
_DEPENDENCY_MARKERS = ("dependency", "downstream", "upstream", "external service", "dependent")


def _has_any(message: str, markers: tuple[str, ...]) -> bool:
    return any(marker in message for marker in markers)


#: The runtime's refusals, by class name (this module sits below the ones that define
#: them): a subclass is one too.
_REFUSALS = frozenset(
    {
        "BudgetExceededError",
        "GuardrailViolatedError",
        "MaxIterationsExceededError",
        "PermissionDeniedError",
    }
)


def _is_refusal(error: BaseException) -> bool:
    return any(
        kind.__name__ in _REFUSALS and kind.__module__.startswith("techrevati.")
        for kind in type(error).__mro__
    )


def classify_exception(error: BaseException) -> FailureScenario:
    """Map an exception to a :class:`FailureScenario`; the first matching rule wins.

    Matching is by substring of ``str(error).lower()``, so rule order matters:
    ``"connection timed out"`` is a timeout, not a provider failure.

    Example::

        >>> classify_exception(Exception("HTTP 429 Too Many Requests")).value
        'llm_error'
        >>> classify_exception(ConnectionRefusedError()).value
        'provider_failure'
    """
    if isinstance(error, CircuitOpenError) or _is_refusal(error):
        # The runtime's refusals are LLM_ERROR, as the contract has it, by their type:
        # their messages name tools and failures ("tool 'set_timeout'", a breaker's last
        # "ReadTimeout") that the substring rules below would read as something else.
        return FailureScenario.LLM_ERROR
    try:
        message = str(error).lower()
    except Exception:
        message = ""  # a message that cannot be read: classified by its type alone
    if isinstance(error, TimeoutError):
        return FailureScenario.LLM_TIMEOUT
    if "timeout" in message or "timed out" in message:
        return FailureScenario.LLM_TIMEOUT
    # Rate limits deliberately map to LLM_ERROR (the retry recipe), as in 0.1.0.
    if _has_any(message, ("rate limit", "429", "too many requests")):
        return FailureScenario.LLM_ERROR
    if _has_any(message, _CONTEXT_MARKERS):
        return FailureScenario.CONTEXT_OVERFLOW
    if isinstance(error, json.JSONDecodeError):
        return FailureScenario.MEMORY_CORRUPTION
    if "corrupt" in message or "malformed" in message:
        return FailureScenario.MEMORY_CORRUPTION
    if isinstance(error, ConnectionError):
        return FailureScenario.PROVIDER_FAILURE
    if _has_any(message, _PROVIDER_MARKERS):
        return FailureScenario.PROVIDER_FAILURE
    if _has_any(message, _AUTH_MARKERS):
        return FailureScenario.PROVIDER_FAILURE
    if "tool" in message and ("error" in message or "failed" in message):
        return FailureScenario.TOOL_EXECUTION_ERROR
    if _has_any(message, _DEPENDENCY_MARKERS):
        return FailureScenario.DEPENDENCY_TIMEOUT
    return FailureScenario.LLM_ERROR
