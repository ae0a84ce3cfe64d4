"""Stream drivers: how a generator, async generator or SDK stream carries one call.

A decorated generator (or an SDK stream returned by a decorated function)
holds its call open until the stream ends. The drivers here step the stream
inside a private ``contextvars.Context`` in which the call's span is current,
and report exactly one ending to the call: ``exhausted``, ``fail`` or
``closed`` (the consumer's ``close()`` / ``break``, or garbage collection).
They know nothing about turns or tools; ``decorators`` supplies the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import wrapt

T = TypeVar("T")


class Call(Protocol):
    """The bookkeeping of one decorated call, as the stream drivers see it.

    ``begin`` runs inside the stream's private context and makes the call's
    span current there; then ``item`` per yielded value, and exactly one of
    ``exhausted`` (may raise, e.g. budget), ``fail`` or ``closed`` (never raises).
    """

    def begin(self) -> None: ...
    def item(self, value: object) -> None: ...
    def exhausted(self, value: object) -> None: ...
    def fail(self, error: BaseException) -> None: ...
    def closed(self) -> None: ...


# --- stream drivers --------------------------------------------------------------------


#: What a stream driver starts from: the private context, the call and the stream.
Setup = Callable[[], tuple[contextvars.Context, Call, Any]]
#: The same, awaited (an async generator turn admits without blocking the loop).
AsyncSetup = Callable[[], Awaitable[tuple[contextvars.Context, Call, Any]]]


def lazy(make_call: Callable[[], Call], start: Callable[[], Any]) -> Setup:
    """Setup for a decorated generator function, run at its first step.

    Nothing happens before the first ``next()``: an unstarted, dropped
    generator makes no span, and admission happens before the user's
    generator even exists, so a refused turn never starts it.
    """

    def setup() -> tuple[contextvars.Context, Call, Any]:
        ctx = contextvars.copy_context()
        call = ctx.run(make_call)
        return ctx, call, _begin(ctx, call, start)

    return setup


def _begin(ctx: contextvars.Context, call: Call, start: Callable[[], Any]) -> Any:
    """Start the admitted call's span and the user's stream in ``ctx``; a failure ends the call."""
    try:
        ctx.run(call.begin)
        return ctx.run(start)
    except BaseException as exc:
        ctx.run(call.fail, exc)
        raise


def alazy(
    make_call: Callable[[], Coroutine[Any, Any, Call]], start: Callable[[], Any]
) -> AsyncSetup:
    """``lazy`` for async generators: the call is made (admitted) by awaiting ``make_call``.

    The coroutine runs in the stream's private context (a task bound to it), so
    the session it finds and the context it leaves are the same as ``lazy``'s,
    and a fleet admission or probe wait is awaited, not run on the loop.
    """

    async def setup() -> tuple[contextvars.Context, Call, Any]:
        ctx = contextvars.copy_context()
        call: Call = await asyncio.get_running_loop().create_task(make_call(), context=ctx)
        return ctx, call, _begin(ctx, call, start)

    return setup


def drive(setup: Setup) -> Generator[Any, Any, Any]:
    """Re-yield a stream, stepping it inside a private context and reporting to its call.

    Exactly one of exhausted / fail / closed is reported, whichever way the
    stream ends: exhaustion, an error (its own, a thrown one, or a guardrail
    on an item), the consumer's ``close()`` / ``break`` or garbage collection
    (both arrive as ``GeneratorExit`` at the ``yield``).
    """
    ctx, call, stream = setup()
    send: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            try:
                if thrown is None:
                    item = ctx.run(stream.send, send)
                else:
                    item = ctx.run(stream.throw, thrown)
            except StopIteration as stop:
                ctx.run(call.exhausted, stop.value)
                return stop.value
            ctx.run(call.item, item)
            try:
                send = yield item
                thrown = None
            except GeneratorExit:
                raise
            except BaseException as exc:  # gen.throw(): forward it to the stream
                send, thrown = None, exc
    except GeneratorExit:
        try:
            ctx.run(stream.close)
        except BaseException as exc:
            ctx.run(call.fail, exc)
            raise
        ctx.run(call.closed)
        raise
    except BaseException as exc:
        # The stream is already finished when the error is its own; closing
        # matters when ours (a guardrail on an item) interrupted it.
        with contextlib.suppress(Exception):
            ctx.run(stream.close)
        ctx.run(call.fail, exc)
        raise


class _InContext:
    """Await ``awaitable`` with each of its steps run inside ``ctx``.

    This is how an async generator gets a private context of its own, like a
    task has: the event loop still drives it, cancellation still reaches it.
    """

    __slots__ = ("_awaitable", "_ctx")

    def __init__(self, ctx: contextvars.Context, awaitable: Awaitable[T]) -> None:
        self._ctx = ctx
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        ctx = self._ctx
        steps = self._awaitable.__await__()
        send: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is None:
                    yielded = ctx.run(steps.send, send)
                else:
                    yielded = ctx.run(steps.throw, thrown)
            except StopIteration as stop:
                return stop.value
            try:
                send = yield yielded
                thrown = None
            except BaseException as exc:  # cancellation and friends go to the awaitable
                send, thrown = None, exc


async def adrive(setup: Setup | AsyncSetup) -> AsyncGenerator[Any, Any]:
    """The async twin of ``drive``."""
    found = setup()
    ctx, call, stream = await found if inspect.isawaitable(found) else found
    send: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            try:
                step = stream.asend(send) if thrown is None else stream.athrow(thrown)
                item = await _InContext(ctx, step)
            except StopAsyncIteration:
                ctx.run(call.exhausted, None)
                return
            ctx.run(call.item, item)
            try:
                send = yield item
                thrown = None
            except GeneratorExit:
                raise
            except BaseException as exc:  # agen.athrow(): forward it to the stream
                send, thrown = None, exc
    except GeneratorExit:
        # aclose(), break out of ``async for`` followed by aclose, loop shutdown or GC.
        try:
            await _InContext(ctx, stream.aclose())
        except BaseException as exc:
            ctx.run(call.fail, exc)
            raise
        ctx.run(call.closed)
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await _InContext(ctx, stream.aclose())
        ctx.run(call.fail, exc)
        raise


# --- provider stream objects returned by a plain turn ----------------------------------
# ``return client.chat.completions.create(..., stream=True)`` from a plain or async
# function hands back an SDK stream object, not a generator. Ending the turn on
# return would close the span before a single chunk arrived (and price nothing),
# so the turn is handed to a proxy that ends it when the stream does.

NOT_A_STREAM, SYNC_STREAM, ASYNC_STREAM = range(3)
_STREAM_KINDS: dict[type, int] = {}


def stream_kind(value: object) -> int:
    kind = type(value)
    found = _STREAM_KINDS.get(kind)
    if found is None:
        if hasattr(kind, "__anext__"):
            found = ASYNC_STREAM
        elif hasattr(kind, "__next__") and hasattr(kind, "__iter__"):
            found = SYNC_STREAM
        else:
            found = NOT_A_STREAM
        if len(_STREAM_KINDS) < 256:
            _STREAM_KINDS[kind] = found
    return found


if TYPE_CHECKING:  # wrapt 2 ships a generic stub; wrapt 1 is untyped and not subscriptable
    _ProxyBase = wrapt.ObjectProxy[Any]
else:
    _ProxyBase = wrapt.ObjectProxy


def _iterate(stream: Any) -> Generator[Any, Any, Any]:
    """Any iterator as a generator whose ``close()`` also closes the SDK stream."""
    try:
        return (yield from stream)
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()  # e.g. openai.Stream.close(): releases the HTTP response


async def _aiterate(stream: Any) -> AsyncGenerator[Any, Any]:
    """Any async iterator as an async generator whose ``aclose()`` closes the stream."""
    try:
        async for item in stream:
            yield item
    finally:
        close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        if callable(close):
            closing = close()
            if inspect.isawaitable(closing):  # openai.AsyncStream.close() is a coroutine
                await closing


def _close_unstarted(ctx: contextvars.Context, call: Call, close: object) -> None:
    """End the call of a stream closed before its first step, closing the SDK stream first.

    What ``drive`` reports when it is closed at a ``yield``: ``closed``, or
    ``fail`` when closing the stream raised.
    """
    try:
        if callable(close):
            ctx.run(close)
    except BaseException as exc:
        ctx.run(call.fail, exc)
        raise
    ctx.run(call.closed)


class TurnStream(_ProxyBase):
    """An SDK stream that keeps its turn open until it is consumed, closed or dropped.

    Everything but iteration and closing goes to the stream itself (and
    ``isinstance`` still sees the SDK type).
    """

    def __init__(self, stream: Any, ctx: contextvars.Context, call: Call) -> None:
        super().__init__(stream)
        self._self_ctx = ctx
        self._self_call = call
        self._self_steps = drive(lambda: (ctx, call, _iterate(stream)))
        self._self_started = False

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        self._self_started = True
        return next(self._self_steps)

    def close(self) -> None:
        if self._self_started:
            self._self_steps.close()
            return
        # Never stepped: the driver has not started, and closing a generator that never
        # started runs none of it, so the turn is ended here (with the SDK stream closed).
        self._self_started = True
        _close_unstarted(self._self_ctx, self._self_call, getattr(self.__wrapped__, "close", None))

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Never iterated: the driver never started, so only we can end the turn.
        if not self._self_started:
            self._self_ctx.run(self._self_call.closed)


class AsyncTurnStream(_ProxyBase):
    """The async twin of ``TurnStream`` (``openai.AsyncStream`` and the like)."""

    def __init__(self, stream: Any, ctx: contextvars.Context, call: Call) -> None:
        super().__init__(stream)
        self._self_ctx = ctx
        self._self_call = call
        self._self_steps = adrive(lambda: (ctx, call, _aiterate(stream)))
        self._self_started = False

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        self._self_started = True
        return await self._self_steps.__anext__()

    async def aclose(self) -> None:
        if self._self_started:
            await self._self_steps.aclose()
            return
        self._self_started = True  # never stepped: see TurnStream.close
        stream = self.__wrapped__
        close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        ctx, call = self._self_ctx, self._self_call
        try:
            closing = close() if callable(close) else None
            if inspect.isawaitable(closing):
                await _InContext(ctx, closing)
        except BaseException as exc:
            ctx.run(call.fail, exc)
            raise
        ctx.run(call.closed)

    async def close(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._self_started:
            self._self_ctx.run(self._self_call.closed)
