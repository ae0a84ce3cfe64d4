"""The OpenAI Agents SDK's tools: function tools, and the tools it runs locally.

The runner invokes every function tool (``@function_tool``, ``FunctionTool``)
through one function of its tool execution module, which awaits the tool's
``on_invoke_tool``; the local tools it runs itself (``LocalShellTool``,
``ShellTool``, ``ComputerTool``, ``ApplyPatchTool``, ``CustomTool``) each
through an ``*Action.execute`` of its tool actions module. The door wraps
both: a refused call never invokes the tool, and the run ends with the SDK's
``UserError``, ours its ``__cause__``. A function tool whose own exception the
SDK caught and handed to the model as text ended failed: its span says so.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from .door import athrough, parsed, unknown

MODULE = "agents.run_internal.tool_execution"
ACTIONS = "agents.run_internal.tool_actions"
_INVOKE = "_invoke_function_tool_with_metadata"
#: The local tools' actions, and the field of their run that holds the tool.
_LOCAL = {
    "ComputerAction": "computer_tool",
    "LocalShellAction": "local_shell_tool",
    "ShellAction": "shell_tool",
    "ApplyPatchAction": "apply_patch_tool",
    "CustomToolAction": "custom_tool",
}


class ToolFailedError(Exception):
    """A function tool raised, and the SDK handed its error to the model as the result."""


def _output(invocation: Any) -> object:
    # The SDK returns its tool's output with a note of whether the SDK made it up.
    return getattr(invocation, "output", invocation)


def _failure(invocation: Any) -> BaseException | None:
    if getattr(invocation, "is_sdk_generated_error", False):
        return ToolFailedError(str(_output(invocation))[:200])
    return None


def _invoke(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    async def invoke(*, function_tool: Any, arguments: Any, **kwargs: Any) -> Any:
        return await athrough(
            str(function_tool.name),
            functools.partial(parsed, arguments),
            function,
            (),
            {"function_tool": function_tool, "arguments": arguments, **kwargs},
            _output,
            _failure,
        )

    return invoke


def _item_output(item: Any) -> object:
    return getattr(item, "output", item)


def _execute(field: str) -> Callable[[Any], Any]:
    def patch(method: Any) -> Any:
        # (Bound through the descriptor at each call, not by its __func__: a wrapper
        # another instrumentation put there first stays in the path.)
        @functools.wraps(getattr(method, "__func__", method))
        async def execute(cls: Any, **kwargs: Any) -> Any:
            run = kwargs.get("call", kwargs.get("action"))
            name = getattr(getattr(run, field, None), "name", None) or field
            # (Its call's arguments are not read: not fingerprinted, not recorded.)
            body = method.__get__(None, cls)
            return await athrough(str(name), unknown, body, (), kwargs, _item_output)

        return classmethod(execute)  # type: ignore[arg-type]

    return patch


def targets() -> list[tuple[object, str, Callable[[Any], Any]]]:
    """(owner, attribute, patch) where the SDK invokes a function tool; [] if not found."""
    module = sys.modules.get(MODULE)
    if module is None or not callable(getattr(module, _INVOKE, None)):
        return []
    return [(module, _INVOKE, _invoke)]


def local_targets() -> list[tuple[object, str, Callable[[Any], Any]]]:
    """(owner, attribute, patch) where the SDK runs each local tool; [] if none is found.

    A module of its own (``ACTIONS``): it is still being imported when the
    function-tool module's import ends.
    """
    actions = sys.modules.get(ACTIONS)
    found: list[tuple[object, str, Callable[[Any], Any]]] = []
    for name, field in _LOCAL.items():
        action = getattr(actions, name, None)
        if isinstance(action, type) and isinstance(action.__dict__.get("execute"), classmethod):
            found.append((action, "execute", _execute(field)))
    return found
