"""``@tool_call``: each call of the decorated function is one tool call.

Inside a session the call goes through the session's permission check,
pre-guardrails and loop guard first, and its result through the
post-guardrails, exactly like ``session.run_tool``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

from opentelemetry import context as otel_context

from ..telemetry.calls import instrument as core
from ..telemetry.calls.content import capture_content
from ..telemetry.limits.loops import Bound
from .streams import adrive, drive, lazy
from .wrapping import (
    COROUTINE,
    FUNCTION,
    GENERATOR,
    F,
    arguments_of,
    check_decorated,
    kind_of,
    positional_names,
    self_of,
    unbound,
    wrap,
)


class _ToolCall:
    """A decorated tool call: the core's tool state machine, driven per function kind."""

    __slots__ = ("tool",)

    def __init__(
        self,
        name: str,
        names: tuple[str, ...],
        instance: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        session = core.tool_session()
        capture = capture_content()
        watched = session is not None and session.loops is not None
        # Arguments by name: for the span only with content capture on; for the
        # session's loop guard always (fingerprinted in memory, never exported).
        arguments = arguments_of(names, instance, args, kwargs) if capture or watched else None
        loop_arguments: object = core.NOT_WATCHED
        if watched:
            loop_arguments = arguments
            # A method's object is part of its call (not recorded as content).
            bound = instance if instance is not None else self_of(names, args)
            if bound is not None:
                loop_arguments = {**(arguments or {}), "self": Bound(bound)}
        # Denied / blocked / looping: the span is ended and the error raised here.
        self.tool = core.ToolCall.begin(
            session,
            name,
            arguments=arguments if capture else None,
            loop_arguments=loop_arguments,
        )

    def fail(self, error: BaseException) -> None:
        self.tool.fail(error)

    def begin(self) -> None:
        otel_context.attach(self.tool.context)

    def item(self, value: object) -> None:
        self.tool.check(value)  # a streamed tool result is post-checked piece by piece

    def exhausted(self, value: object) -> None:
        # A streamed tool's output is its items, not this return value.
        self.tool.finish(value, whole=False)

    def closed(self) -> None:
        self.tool.finish(whole=False)


def _tool_wrapper(kind: int, name: str, names: tuple[str, ...]) -> Callable[..., Any]:
    if kind == FUNCTION:

        def tool_function(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            running = core.DOOR_TOOL.get()
            if running is not None and running.take(name, body=True):
                # A framework's tool whose body is this function: the framework's door
                # made the call one tool call already (checked, a span, counted once).
                return wrapped(*args, **kwargs)
            return _ToolCall(name, names, instance, args, kwargs).tool.run(wrapped, args, kwargs)

        return tool_function

    if kind == COROUTINE:

        async def tool_coroutine(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            running = core.DOOR_TOOL.get()
            if running is not None and running.take(name, body=True):
                return await wrapped(*args, **kwargs)  # (as tool_function)
            call = _ToolCall(name, names, instance, args, kwargs)
            return await call.tool.arun(wrapped, args, kwargs)

        return tool_coroutine

    if kind == GENERATOR:

        def tool_generator(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            return drive(
                lazy(
                    lambda: _ToolCall(name, names, instance, args, kwargs),
                    lambda: wrapped(*args, **kwargs),
                )
            )

        return tool_generator

    def tool_async_generator(
        wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
    ) -> Any:
        return adrive(
            lazy(
                lambda: _ToolCall(name, names, instance, args, kwargs),
                lambda: wrapped(*args, **kwargs),
            )
        )

    return tool_async_generator


@overload
def tool_call(name: F, /) -> F: ...
@overload
def tool_call(name: str | None = None) -> Callable[[F], F]: ...
def tool_call(name: str | F | None = None) -> F | Callable[[F], F]:
    """Make each call of the decorated function one tool call (``execute_tool {name}``).

    ``name`` defaults to the function's name. Inside a session the call goes
    through the session's permission check and pre-guardrails first (a denied
    call raises ``PermissionDeniedError`` and the function never runs) and its
    result through the post-guardrails, exactly like ``session.run_tool``; a
    generator tool has each yielded item post-checked. Outside a session it is
    still a span with tool-call metrics. Arguments and results are recorded
    only when content capture is on.

    Example::

        @tool_call()
        def lookup_term(term: str) -> str:
            return GLOSSARY[term]

        @tool_call("db.write")
        async def write_row(row: dict) -> None: ...
    """
    if callable(name):  # bare @tool_call
        return tool_call()(name)
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"tool_call name must be a non-empty string, got {name!r}")

    def decorate(fn: F) -> F:
        check_decorated("tool_call", fn)
        tool_name = name or getattr(unbound(fn), "__name__", None) or "tool"
        kind = kind_of(fn)
        return wrap(fn, kind, _tool_wrapper(kind, tool_name, positional_names(fn)))

    return decorate


# --- agent_session ---------------------------------------------------------------------
