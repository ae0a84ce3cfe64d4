"""smolagents' tools (``@tool``, ``Tool`` subclasses), from a tool-calling or a code agent.

Both kinds of agent call a tool object: ``Tool.__call__`` runs its
``forward``. The door wraps it: a refused call never runs ``forward``, and
smolagents reports our error to the model as the step's error (the agent goes
on; the session's limits still stop it).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from .door import bound, through

MODULE = "smolagents.tools"


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    # (The agent's own flag is no argument of the tool.)
    kwargs = {k: v for k, v in kwargs.items() if k != "sanitize_inputs_outputs"}
    if not args:
        return kwargs
    if len(args) == 1 and not kwargs and isinstance(args[0], dict):
        return args[0]  # the arguments as one dictionary, as smolagents allows
    return {"*args": list(args), **kwargs}


def _call(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = functools.partial(_arguments, args, kwargs)
        return through(str(self.name), arguments, bound(method, self), args, kwargs)

    return call


def targets() -> list[tuple[object, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
    """(owner, attribute, patch) where a smolagents tool runs; [] if not found."""
    tool = getattr(sys.modules.get(MODULE), "Tool", None)
    if not isinstance(tool, type) or not callable(tool.__dict__.get("__call__")):
        return []
    return [(tool, "__call__", _call)]
