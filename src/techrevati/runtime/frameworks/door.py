"""The one door every framework's tool call passes: the core's tool call, or straight through.

A framework's tool runs as a tool call of the session (``ToolCall``, the path
``@tool_call`` and ``run_tool`` take) only in a session that has something to
check tools against: a permission policy or guardrails. Anywhere else, and
once ``configure(guard=False)`` turned the doors off, the framework's own code
runs as it would without us, and its tool spans are read by the limits
processor as before.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..telemetry.calls.content import capture_content
from ..telemetry.calls.session import SessionScope
from ..telemetry.calls.tool import DOOR_TOOL, NOT_WATCHED, DoorCall, ToolCall, tool_session

T = TypeVar("T")

#: Off: every door calls straight through. A door another instrumentation wrapped
#: after it cannot be taken out of the class; it stays there, switched off.
_on = [False]


def switch(on: bool) -> None:
    """Turn every installed door on or off (``ensure_tool_doors`` / ``uninstall_tool_doors``)."""
    _on[0] = on


def checked_session() -> SessionScope | None:
    """The session a tool call here is in (``tool_session``), if it has a permission
    policy or guardrails to check it against and the doors are on."""
    if not _on[0]:
        return None
    session = tool_session()
    if session is None or (session.authorize is None and not session.guardrails):
        return None
    return session


def _begin(session: SessionScope, name: str, arguments: object) -> ToolCall:
    # Arguments as @tool_call takes them: on the span only with content capture on;
    # fingerprinted for the session's loop guard (in memory, never exported).
    # NOT_WATCHED: a call whose arguments the framework does not say.
    known = arguments is not NOT_WATCHED
    return ToolCall.begin(
        session,
        name,
        arguments=arguments if known and capture_content() else None,
        loop_arguments=arguments if session.loops is not None else NOT_WATCHED,
    )


def through(
    name: str,
    arguments: Callable[[], object],
    body: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    output: Callable[[T], object] | None = None,
) -> T:
    """``body(*args, **kwargs)``, the framework running tool ``name``, through the door.

    Refused (permission, pre-guardrail, loop): raises before ``body`` runs.
    ``arguments()`` says what the call was made with (read only when checked);
    ``output`` picks the tool's result out of what ``body`` returns.
    """
    session = checked_session()
    running = DOOR_TOOL.get()
    if session is None or (running is not None and running.take(name, body=False)):
        return body(*args, **kwargs)
    tool = _begin(session, name, arguments())
    token = DOOR_TOOL.set(DoorCall(name, session))
    try:
        return tool.run(body, args, kwargs, output)
    finally:
        DOOR_TOOL.reset(token)


async def athrough(
    name: str,
    arguments: Callable[[], object],
    body: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    output: Callable[[T], object] | None = None,
    failure: Callable[[T], BaseException | None] | None = None,
) -> T:
    """``through`` for a framework that awaits its tools (``failure``: see ``ToolCall.run``)."""
    session = checked_session()
    running = DOOR_TOOL.get()
    if session is None or (running is not None and running.take(name, body=False)):
        return await body(*args, **kwargs)
    tool = _begin(session, name, arguments())
    token = DOOR_TOOL.set(DoorCall(name, session))
    try:
        return await tool.arun(body, args, kwargs, output, failure)
    finally:
        DOOR_TOOL.reset(token)


def unknown() -> object:
    """``arguments`` of a call whose arguments are not read: not fingerprinted, not recorded."""
    return NOT_WATCHED


def bound(method: Any, instance: object) -> Callable[..., Any]:
    """``method`` (what a class held before its door) bound to ``instance``.

    Through the descriptor protocol, as Python binds it: another
    instrumentation's wrapper there (``wrapt``'s) needs to know its instance.
    """
    binder = getattr(method, "__get__", None)
    if binder is None:
        return functools.partial(method, instance)
    return binder(instance, type(instance))  # type: ignore[no-any-return]


def parsed(arguments: object) -> object:
    """A tool call's arguments as the model sent them (JSON text) read as values.

    So that the same call is the same call for the loop guard however its
    keys are ordered; text that is not JSON stays text.
    """
    if isinstance(arguments, str | bytes):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
