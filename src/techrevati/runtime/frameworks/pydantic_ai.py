"""pydantic-ai's tools: function tools (``@agent.tool``, ``@agent.tool_plain``), and any toolset's.

An agent runs every tool call through its tool manager, which hands it to the
toolset that has the tool (``ToolManager._raw_execute``), under the name the
model called it by: a prefixed or renamed toolset's tool is checked by that
name, as the model and pydantic-ai's own spans name it. The door wraps that
step: a refused call never reaches the toolset, and the run ends with our
error (pydantic-ai lets a tool's exception through, except ``ModelRetry``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from .door import athrough, bound

MODULE = "pydantic_ai.tool_manager"
_EXECUTE = "_raw_execute"


def _execute(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def execute(self: Any, validated: Any, *args: Any, **kwargs: Any) -> Any:
        body = bound(method, self)
        if getattr(getattr(validated.tool, "tool_def", None), "kind", None) == "output":
            # The agent's own output tool (its structured answer): no tool of the user's.
            return await body(validated, *args, **kwargs)
        call = validated.call
        return await athrough(
            str(call.tool_name),
            lambda: validated.validated_args,
            body,
            (validated, *args),
            kwargs,
        )

    return execute


def targets() -> list[tuple[object, str, Callable[[Any], Any]]]:
    """(owner, attribute, patch) where pydantic-ai runs a tool; [] if not found."""
    manager = getattr(sys.modules.get(MODULE), "ToolManager", None)
    if not isinstance(manager, type) or _EXECUTE not in manager.__dict__:
        return []
    return [(manager, _EXECUTE, _execute)]
