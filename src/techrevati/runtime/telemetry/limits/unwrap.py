"""Find our limit error inside whatever exception a framework raised instead.

Agent frameworks do not always let an exception from a model call reach their
caller as it is: smolagents wraps it in ``AgentGenerationError``, a task group
gathers it into an ``ExceptionGroup``, a retry helper re-raises its own error
from it. They keep ours as ``__cause__`` / ``__context__`` (or inside the
group), so :func:`limit_error` walks those links and returns the refusal.
"""

from __future__ import annotations

from ...usage_tracking import BudgetExceededError
from .errors import FleetUnavailableError, MaxIterationsExceededError

__all__ = ["LIMIT_ERRORS", "limit_error"]

#: The refusals our limits raise (``UnpricedModelError`` is a ``BudgetExceededError``).
LIMIT_ERRORS: tuple[type[Exception], ...] = (
    BudgetExceededError,
    MaxIterationsExceededError,
    FleetUnavailableError,
)

# Deep enough for any real chain of wrappers; bounds the walk on a pathological one.
_MAX_LINKS = 1000


def limit_error(exc: BaseException | None) -> Exception | None:
    """Our limit error (budget, iteration cap, fleet) in ``exc`` or what it wraps; else None.

    Looks at ``exc`` itself, then its ``__cause__`` and ``__context__`` chain
    and the members of exception groups, nearest first. Cycles are safe.

    Example::

        from techrevati.runtime import agent_session, limit_error

        try:
            with agent_session("researcher", max_iterations=25):
                agent.run("research")            # a framework that wraps errors
        except Exception as exc:
            refusal = limit_error(exc)
            if refusal is None:
                raise                            # not ours: let it through
            print("stopped by our limits:", refusal)
    """
    if exc is not None and not isinstance(exc, BaseException):
        raise TypeError(f"limit_error() takes an exception, got {type(exc).__name__}: {exc!r}")
    queue: list[BaseException] = [exc] if exc is not None else []
    seen: set[int] = set()
    while queue and len(seen) < _MAX_LINKS:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LIMIT_ERRORS):
            return current
        members = getattr(current, "exceptions", None)
        if isinstance(current, BaseExceptionGroup) and isinstance(members, tuple):
            queue.extend(m for m in members if isinstance(m, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                queue.append(linked)
    return None
