"""How a decorator wraps a function of each kind, and what it reads of the call.

The wrapper body is picked once, at decoration time, by the function's kind
(``kind_of``): a plain function or coroutine function gets a closure
(``functools.wraps``: name, docstring, signature, ``__wrapped__``), which binds
as a method like the function it replaces; generators, async generators and
classmethod / staticmethod objects get ``wrapt.FunctionWrapper``, which keeps
their kind visible to ``inspect`` and binds descriptors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

import wrapt

F = TypeVar("F", bound=Callable[..., Any])

FUNCTION, COROUTINE, GENERATOR, ASYNC_GENERATOR = range(4)


def unbound(fn: object) -> Any:
    return fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn


def kind_of(fn: object) -> int:
    target = unbound(fn)
    if inspect.isasyncgenfunction(target):
        return ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return GENERATOR
    if inspect.iscoroutinefunction(target):
        return COROUTINE
    return FUNCTION


def positional_names(fn: object) -> tuple[str, ...]:
    """Positional parameter names, read once at decoration time for content capture."""
    try:
        code = getattr(inspect.unwrap(unbound(fn)), "__code__", None)
    except ValueError:  # a __wrapped__ cycle
        code = None
    if code is None:
        return ()
    return tuple(code.co_varnames[: code.co_argcount])


def arguments_of(
    names: tuple[str, ...], instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by name (only built when content capture is on).

    wrapt passes bound calls without ``self`` / ``cls`` (``instance`` is then
    set), so the first declared name is skipped for them. A method wrapped by
    ``wrap``'s closure gets its ``self`` / ``cls`` in ``args``, named so by
    convention: left out too.
    """
    named = names[1:] if instance is not None and names else names
    bound: dict[str, Any] = dict(zip(named, args, strict=False))
    if len(args) > len(named):
        bound["*args"] = list(args[len(named) :])
    if instance is None and named and named[0] in ("self", "cls"):
        bound.pop(named[0], None)
    bound.update(kwargs)
    return bound


def self_of(names: tuple[str, ...], args: tuple[Any, ...]) -> object:
    """The ``self`` / ``cls`` of a method wrapped by ``wrap``'s closure (in ``args``)."""
    if args and names and names[0] in ("self", "cls"):
        return args[0]
    return None


def wrap(fn: F, kind: int, wrapper: Callable[..., Any]) -> F:
    """``fn`` with ``wrapper(wrapped, instance, args, kwargs)`` around every call.

    A plain function or coroutine function gets a closure: itself a function,
    it binds as a method natively, and a call costs one Python call more than
    the bare function. (wrapt's proxy looks ``__self__`` up on every unbound
    call, a failing attribute lookup that cost about a microsecond a turn.)
    Generators, async generators and classmethod / staticmethod objects keep
    wrapt, which keeps their kind visible to ``inspect`` and binds descriptors.
    """
    if kind in (GENERATOR, ASYNC_GENERATOR) or not inspect.isfunction(fn):
        return cast(F, wrapt.FunctionWrapper(fn, wrapper))
    if kind == COROUTINE:

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await wrapper(fn, None, args, kwargs)

        return cast(F, call_async)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return wrapper(fn, None, args, kwargs)

    return cast(F, call)


def check_decorated(decorator: str, fn: object) -> None:
    """A decorator applied to what cannot be called fails where it is applied."""
    if not callable(fn) and not isinstance(fn, classmethod | staticmethod):
        raise TypeError(
            f"@{decorator} decorates a function or method, got {type(fn).__name__}: {fn!r}"
        )
