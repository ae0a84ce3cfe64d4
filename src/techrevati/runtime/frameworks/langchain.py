"""LangChain's tools (``BaseTool``: ``@tool``, ``StructuredTool``, LangGraph's ``ToolNode``).

Every LangChain tool runs through ``BaseTool.run`` / ``BaseTool.arun``
(``invoke`` and ``ainvoke`` call them). The door sits outside them: a refused
call never starts the tool's callbacks (so no instrumentation's tool span), and
its error reaches the caller the way any exception of a tool does (LangGraph's
``ToolNode`` raises it, or with ``handle_tool_errors=True`` hands its text to
the model).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from .door import athrough, bound, through

MODULE = "langchain_core.tools.base"


def _arguments(tool: Any, tool_input: Any) -> object:
    """The call's arguments as the model gave them: what LangChain hands its callbacks.

    Arguments the framework injects (``InjectedState``, ``ToolRuntime``: the
    whole conversation) are left out: they are neither the call nor content to
    record, and they change with every turn, so the same call would never look
    the same twice to the loop guard.
    """
    drop = getattr(tool, "_filter_injected_args", None)
    if isinstance(tool_input, dict) and callable(drop):
        try:
            return drop(tool_input)
        except Exception:
            return tool_input
    return tool_input


def _content(result: Any) -> object:
    # Run by ToolNode (with a tool call id), a tool returns a ToolMessage whose id is
    # new every time: its content is the result the model reads.
    message = getattr(sys.modules.get(MODULE), "ToolMessage", None)
    if isinstance(message, type) and isinstance(result, message):
        return getattr(result, "content", result)
    return result


def _run(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        return through(
            str(self.name),
            functools.partial(_arguments, self, tool_input),
            bound(method, self),
            (tool_input, *args),
            kwargs,
            _content,
        )

    return run


def _arun(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def arun(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        return await athrough(
            str(self.name),
            functools.partial(_arguments, self, tool_input),
            bound(method, self),
            (tool_input, *args),
            kwargs,
            _content,
        )

    return arun


def targets() -> list[tuple[object, str, Callable[[Any], Any]]]:
    """(owner, attribute, patch) for each place a LangChain tool runs; [] if none is found."""
    base = getattr(sys.modules.get(MODULE), "BaseTool", None)
    if not isinstance(base, type) or not ("run" in base.__dict__ and "arun" in base.__dict__):
        return []
    return [(base, "run", _run), (base, "arun", _arun)]
