"""Exceptions raised by sessions.

They live apart from ``orchestrator`` so the telemetry core (which raises the
limit errors from a span processor) does not import the Orchestrator. The
contract's home for them is ``techrevati.runtime.orchestrator``, which
re-exports them.
"""

from __future__ import annotations

from .permissions import PermissionOutcome


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

    def __init__(self, max_iterations: int) -> None:
        self.max_iterations = max_iterations
        super().__init__(
            f"session reached max_iterations={max_iterations}; raise the cap or shorten the loop"
        )
