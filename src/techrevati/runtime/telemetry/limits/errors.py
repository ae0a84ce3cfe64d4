"""Exceptions raised by sessions.

They live apart from ``orchestrator`` so the telemetry core (which raises the
limit errors from a span processor) does not import the Orchestrator. The
contract's home for them is ``techrevati.runtime.orchestrator``, which
re-exports them.
"""

from __future__ import annotations

from typing import Any

from ...permissions import PermissionOutcome
from ...usage_tracking import BudgetExceededError


class PermissionDeniedError(Exception):
    """A tool call refused by the permission policy; the tool body never ran.

    Example::

        try:
            session.run_tool("write_db", write)
        except PermissionDeniedError as err:
            print(err.outcome.reason)
    """

    def __init__(self, outcome: PermissionOutcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.reason or "permission denied")


class TurnTimeoutError(Exception):
    """A turn that did not finish within its ``timeout`` (sync and async alike).

    Example::

        try:
            session.run_turn(call_model, model="m", timeout=30.0)
        except TurnTimeoutError as err:
            print(err.timeout_seconds)
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        super().__init__(f"turn exceeded timeout of {timeout_seconds:.3f}s")


class MaxIterationsExceededError(Exception):
    """Raised instead of starting model call number ``max_iterations + 1``.

    Example::

        orch = Orchestrator(role="w", phase="p", max_iterations=3)
        # the 4th run_turn of a session raises MaxIterationsExceededError(3)
    """

    def __init__(self, max_iterations: int, *, scope: str | None = None) -> None:
        self.max_iterations = max_iterations
        #: The fleet scope that refused (``FleetLimits.scope``); None for a session's own cap.
        self.scope = scope
        where = f"fleet scope {scope!r}" if scope is not None else "session"
        super().__init__(
            f"{where} reached max_iterations={max_iterations}; raise the cap or shorten the loop"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_cap_error, (type(self), self.max_iterations, self.scope))


def _rebuild_cap_error(
    cls: type[MaxIterationsExceededError], cap: int, scope: str | None
) -> MaxIterationsExceededError:
    error = cls.__new__(cls)
    MaxIterationsExceededError.__init__(error, cap, scope=scope)
    return error


class UnpricedModelError(BudgetExceededError):
    """A call of a model with no known price, refused under an enforced budget.

    A subclass of ``BudgetExceededError``, so ``except BudgetExceededError``
    still catches it. Price the model (``register_pricing`` or
    ``load_pricing_from_file``) or open the session with ``allow_unpriced=True``
    to accept such calls at $0.

    Example::

        try:
            session.run_turn(call, model="my-finetune")
        except UnpricedModelError as err:
            print(err.model)
    """

    def __init__(self, model: str, budget_usd: float, current_cost_usd: float = 0.0) -> None:
        self.model = model
        BudgetExceededError.__init__(self, budget_usd, current_cost_usd)
        self.args = (
            f"model {model!r} has no known price, so an enforced budget of ${budget_usd:.4f} "
            "cannot hold; price it with register_pricing() or load_pricing_from_file(), "
            "or open the session with allow_unpriced=True to accept it at $0",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model, self.budget_usd, self.current_cost_usd))


class FleetUnavailableError(Exception):
    """The fleet store (Redis) could not be reached and the scope fails closed.

    Raised before the call starts when ``FleetLimits(on_store_error="refuse")``.

    Example::

        try:
            session.run_turn(call, model="gpt-4o-mini")
        except FleetUnavailableError as err:
            print(err.scope)
    """

    def __init__(self, scope: str, reason: str) -> None:
        self.scope = scope
        self.reason = reason
        super().__init__(f"fleet scope {scope!r} is unavailable ({reason}); call refused")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.scope, self.reason))


class LoopDetectedError(Exception):
    """A tool call refused because it would extend a loop; the tool body never ran.

    ``pattern`` is ``"repeat"`` (the same call again and again), ``"cycle"``
    (2-3 calls taking turns) or ``"interleaved"`` (the same call between other
    work); ``tool`` the tool refused; ``repeats`` how many identical calls with
    the same result made the loop (``LoopGuard.repeats``).

    Example::

        try:
            search("pricing page")
        except LoopDetectedError as err:
            print(err.pattern, err.tool)   # "repeat" "search"
    """

    def __init__(self, pattern: str, tool: str, repeats: int) -> None:
        self.pattern = pattern
        self.tool = tool
        self.repeats = repeats
        super().__init__(
            f"tool {tool!r} is looping ({pattern}): {repeats} identical calls returned the "
            "same result, so this call was refused before it ran; use the result, change "
            "the arguments, or finish with an answer"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.pattern, self.tool, self.repeats))
