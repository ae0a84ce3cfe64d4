"""``@agent_turn``, ``@tool_call`` and ``agent_session``: the decorator front door.

Decorate your own functions instead of wrapping calls in lambdas::

    from techrevati.runtime import agent_session, agent_turn, tool_call

    @agent_turn("gpt-4o-mini")
    def ask(prompt: str) -> dict:
        return client.chat.completions.create(model="gpt-4o-mini", messages=[...])

    @tool_call()
    def lookup(term: str) -> str:
        return glossary[term]

    with agent_session("writer", budget_usd=0.50, enforce_budget=True) as session:
        answer = ask("what is RAG?")         # span "chat gpt-4o-mini", priced
        lookup("RAG")                        # span "execute_tool lookup", permission-checked
    print(session.summary())

Everything goes through the same core as ``Orchestrator`` sessions
(``telemetry.calls.instrument`` plus the session's own steps), so a decorated turn
inside ``agent_session`` is indistinguishable, in spans, metrics, ledger and
limits, from ``session.run_turn``. Outside any session the decorators still
produce priced spans and metrics.

The package holds the decorators (here) and the stream wrappers that book a
streamed turn when its stream ends (:mod:`.streams`). A front door like the
Orchestrator, it may import anything in the package.

How the wrappers are built, and why:

* A plain function or coroutine function is wrapped by a closure
  (``functools.wraps``: name, docstring, signature, ``__wrapped__``), which
  binds as a method like the function it replaces; generators, async
  generators and classmethod / staticmethod objects by ``wrapt.FunctionWrapper``,
  which keeps their kind visible to ``inspect`` and binds descriptors. The
  wrapper body is picked once at decoration time by the function's kind.
* A generator or async generator turn holds its span open until the stream is
  exhausted, fails, is cancelled, closed early (``break``, ``close()``,
  ``aclose()``) or garbage-collected. The wrapped generator runs every step
  inside a private ``contextvars.Context`` in which the turn span is current,
  so the span is the parent of whatever the generator does, context changes
  made by the generator persist across its own steps, and nothing leaks into
  the caller between steps.
* Admission (iteration cap, budget, open breaker, permissions) happens before
  the function is called; for generators before the first step, so a refused
  turn never starts the underlying generator.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import inspect
import weakref
from asyncio import CancelledError
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import replace
from types import TracebackType
from typing import Any, NoReturn, TypeVar, cast, overload

import wrapt
from opentelemetry import context as otel_context

from ..orchestrator import (
    AsyncOrchestrationSession,
    OrchestrationSession,
    Orchestrator,
    _SessionBase,
    _SessionContext,
)
from ..telemetry.calls import instrument as core
from ..telemetry.calls.content import capture_content
from ..telemetry.limits.loops import Bound
from ..telemetry.limits.membership import CURRENT as _CURRENT
from ..telemetry.readings.usage_extract import (
    Extracted,
    StreamReader,
    extract,
    extract_text,
    usage_of,
)
from ..usage_tracking import BudgetExceededError, UsageSnapshot
from .streams import (
    SYNC_STREAM,
    AsyncTurnStream,
    TurnStream,
    adrive,
    alazy,
    drive,
    lazy,
    stream_kind,
)

__all__ = ["UsageSource", "agent_session", "agent_turn", "current_agent_session", "tool_call"]

#: The ``agent_session`` blocks open in this context, innermost last. One
#: variable for every agent_session object: a variable per object would stay in
#: each thread's context for good (about 255 bytes per session, forever).
_OPEN_BLOCKS: ContextVar[tuple[tuple[agent_session, _SessionContext[Any]], ...]] = ContextVar(
    "techrevati_agent_session_blocks", default=()
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: What ``agent_turn(usage=...)`` accepts: a fixed snapshot, or a function of the
#: result (of each chunk, for streams) returning a snapshot, a provider usage
#: block, a whole response, or None for "read it from the result".
UsageSource = UsageSnapshot | Callable[[Any], object]

_FUNCTION, _COROUTINE, _GENERATOR, _ASYNC_GENERATOR = range(4)


def _target(fn: object) -> Any:
    return fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn


def _kind(fn: object) -> int:
    target = _target(fn)
    if inspect.isasyncgenfunction(target):
        return _ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return _GENERATOR
    if inspect.iscoroutinefunction(target):
        return _COROUTINE
    return _FUNCTION


def _positional_names(fn: object) -> tuple[str, ...]:
    """Positional parameter names, read once at decoration time for content capture."""
    try:
        code = getattr(inspect.unwrap(_target(fn)), "__code__", None)
    except ValueError:  # a __wrapped__ cycle
        code = None
    if code is None:
        return ()
    return tuple(code.co_varnames[: code.co_argcount])


def _arguments(
    names: tuple[str, ...], instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by name (only built when content capture is on).

    wrapt passes bound calls without ``self`` / ``cls`` (``instance`` is then
    set), so the first declared name is skipped for them. A method wrapped by
    ``_wrap``'s closure gets its ``self`` / ``cls`` in ``args``, named so by
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


def _self_of(names: tuple[str, ...], args: tuple[Any, ...]) -> object:
    """The ``self`` / ``cls`` of a method wrapped by ``_wrap``'s closure (in ``args``)."""
    if args and names and names[0] in ("self", "cls"):
        return args[0]
    return None


def _wrap(fn: F, kind: int, wrapper: Callable[..., Any]) -> F:
    """``fn`` with ``wrapper(wrapped, instance, args, kwargs)`` around every call.

    A plain function or coroutine function gets a closure: itself a function,
    it binds as a method natively, and a call costs one Python call more than
    the bare function. (wrapt's proxy looks ``__self__`` up on every unbound
    call, a failing attribute lookup that cost about a microsecond a turn.)
    Generators, async generators and classmethod / staticmethod objects keep
    wrapt, which keeps their kind visible to ``inspect`` and binds descriptors.
    """
    if kind in (_GENERATOR, _ASYNC_GENERATOR) or not inspect.isfunction(fn):
        return cast(F, wrapt.FunctionWrapper(fn, wrapper))
    if kind == _COROUTINE:

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await wrapper(fn, None, args, kwargs)

        return cast(F, call_async)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return wrapper(fn, None, args, kwargs)

    return cast(F, call)


def _session_of(scope: core.SessionScope | None) -> _SessionBase[Any] | None:
    owner = scope.owner if scope is not None else None
    return owner if isinstance(owner, _SessionBase) else None


def current_agent_session() -> OrchestrationSession | AsyncOrchestrationSession | None:
    """The session that decorated calls here belong to (any depth, thread or task), if any.

    Example::

        @agent_session("writer")
        def run() -> None:
            ask("hi")
            print(current_agent_session().tracker.total_cost())
    """
    session = _session_of(core.current_session())
    return cast("OrchestrationSession | AsyncOrchestrationSession | None", session)


# --- one call in flight ----------------------------------------------------------------


class _TurnSpec:
    """What ``agent_turn(...)`` was given, resolved once at decoration time."""

    __slots__ = ("fixed", "model", "names", "provider", "usage_fn")

    def __init__(
        self, model: str, provider: str | None, usage: UsageSource | None, names: tuple[str, ...]
    ) -> None:
        self.model = model
        self.provider = provider
        self.names = names
        #: ``usage=`` split by kind: a fixed snapshot (also reserved up front) or a function.
        self.fixed = usage if isinstance(usage, UsageSnapshot) else None
        self.usage_fn: Callable[[Any], object] | None = (
            None if isinstance(usage, UsageSnapshot) else usage
        )


def _begin_turn(
    spec: _TurnSpec, capture: bool, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> core.TurnCall:
    """Admit and start a decorated turn in the current session, if any."""
    return core.TurnCall.begin(
        _CURRENT.get() or core.current_session(),  # the context variable first: the usual case
        spec.model,
        provider=spec.provider,
        usage=spec.fixed,
        prompt=_arguments(spec.names, instance, args, kwargs) if capture else None,
    )


async def _abegin_turn(
    spec: _TurnSpec, capture: bool, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> core.TurnCall:
    """``_begin_turn`` for coroutines: fleet scopes are awaited, never waited on in the loop."""
    return await core.TurnCall.abegin(
        _CURRENT.get() or core.current_session(),
        spec.model,
        provider=spec.provider,
        usage=spec.fixed,
        prompt=_arguments(spec.names, instance, args, kwargs) if capture else None,
    )


def _finish_turn(spec: _TurnSpec, turn: core.TurnCall, capture: bool, result: object) -> None:
    """A decorated function returned ``result``: read its usage and end the turn."""
    found = extract(result)
    usage = found.usage
    explicit = False
    if spec.fixed is not None:
        usage, explicit = spec.fixed, True
    elif spec.usage_fn is not None:
        try:
            given = _given_usage(spec.usage_fn, result)
        except _NoUsageGiven as unread:
            _book_unread(turn, found, capture, result, unread.given)  # books, then raises
        if given is not None:
            usage, explicit = given, True
    turn.finish(
        usage,
        explicit=explicit,
        response_model=found.model,
        reasoning_tokens=found.reasoning_tokens,
        output=(extract_text(result) or result) if capture else None,
    )


class _NoUsageGiven(Exception):
    """The ``usage=`` function returned ``given``, from which no usage could be read."""

    def __init__(self, given: object) -> None:
        super().__init__(given)
        self.given = given


def _says_none(given: object) -> bool:
    """Whether a ``usage=`` function's return says "no usage here" (read the result).

    None, or an empty block: ``lambda r: r.get("usage", {})`` on a response, or a
    stream's chunk, that carries none.
    """
    return given is None or (type(given) is dict and not given)


def _given_usage(source: Callable[[Any], object], value: object) -> UsageSnapshot | None:
    """What the user's ``usage=`` function says about ``value`` (None: read the result).

    Raises ``_NoUsageGiven`` when it returned something else: the caller books
    the call (the provider was called, and bills it) before the user hears of it.
    """
    given = source(value)  # the user's function; its errors fail the turn
    if _says_none(given):
        return None
    read = usage_of(given)
    if read is None:
        raise _NoUsageGiven(given)
    core.check_usage(read, "agent_turn usage()")
    return read


def _unread_error(given: object, booked: str) -> TypeError:
    return TypeError(
        f"agent_turn(usage=...) returned {type(given).__name__}: {given!r:.200}, which "
        "holds no token usage: it must return a UsageSnapshot, a provider usage block or "
        "response with token counts (prompt_tokens / completion_tokens, or input_tokens / "
        "output_tokens), or None to read the usage from the result. The call itself ran "
        f"and was billed, so it was booked {booked}"
    )


def _book_unread(
    turn: core.TurnCall, found: Extracted, capture: bool, result: object, given: object
) -> NoReturn:
    """End a turn whose ``usage=`` function gave no usage, then raise the user's error.

    Booked as if ``usage=`` had said "read the result": at the usage the result
    reports, else as a call without usage (at the session's estimate for one).
    """
    if found.usage is not None:
        booked = "at the usage its result reports"
    else:
        booked = "as a call without usage (at the session's estimate for one, if it has one)"
        turn.usage_unread()
    error = _unread_error(given, booked)
    try:
        turn.finish(
            found.usage,
            response_model=found.model,
            reasoning_tokens=found.reasoning_tokens,
            output=(extract_text(result) or result) if capture else None,
        )
    except BudgetExceededError as over:  # booked all the same; the caller's bug comes first
        raise error from over
    raise error from None  # not "during handling of _NoUsageGiven": that is ours


class _TurnCall:
    """A decorated turn that lasts as long as a stream: the core's turn plus the stream's reader.

    Plain functions and coroutines drive the core's turn directly (``_begin_turn``,
    ``_finish_turn``); generators, and functions that return an SDK stream, hand
    one of these to the stream drivers in ``_streams``.
    """

    __slots__ = ("capture", "reader", "spec", "turn", "unread")

    def __init__(self, spec: _TurnSpec, turn: core.TurnCall, capture: bool) -> None:
        self.spec = spec
        self.turn = turn
        self.capture = capture
        self.reader: StreamReader | None = None
        #: The first value ``usage=`` returned that held no usage (None: none yet).
        self.unread: object = None

    @classmethod
    def start(
        cls, spec: _TurnSpec, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _TurnCall:
        """Begin the turn; raises the refusal (breaker, cap, budget, unpriced, fleet)."""
        capture = capture_content()  # read once per call; arguments named only when on
        turn = _begin_turn(spec, capture, instance, args, kwargs)
        return cls(spec, turn, capture)

    @classmethod
    async def astart(
        cls, spec: _TurnSpec, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _TurnCall:
        """``start`` for async generators: fleet scopes are awaited, off the loop."""
        capture = capture_content()
        turn = await _abegin_turn(spec, capture, instance, args, kwargs)
        return cls(spec, turn, capture)

    def fail(self, error: BaseException) -> None:
        self.turn.fail(error)

    # -- streams -------------------------------------------------------------------

    def begin(self) -> None:
        otel_context.attach(self.turn.context)  # the stream's private context: never detached
        self.reader = StreamReader(collect_text=self.capture)
        self.turn.streams()  # every streamed turn, and only those, starts here

    def item(self, value: object) -> None:
        reader = self.reader
        assert reader is not None
        reader.add(value)
        if self.spec.usage_fn is not None:
            given = self.spec.usage_fn(value)
            if not _says_none(given):
                read = usage_of(given)
                if read is not None:
                    reader.usage = read
                elif self.unread is None:
                    # Said at the end, and only if no chunk gave usage: a stream's
                    # other chunks may well carry none.
                    self.unread = given

    def exhausted(self, value: object) -> None:
        usage, model, reasoning, text = self._seen(value)
        if usage is None and self.unread is not None:
            self.turn.usage_unread()
            error = _unread_error(
                self.unread, "as a call without usage (at the session's estimate for one, if any)"
            )
            try:
                self.turn.finish(usage, response_model=model, output=text)
            except BudgetExceededError as over:
                raise error from over
            raise error
        try:
            self.turn.finish(
                usage,
                explicit=self.spec.fixed is not None,
                response_model=model,
                reasoning_tokens=reasoning,
                output=text,
            )
        except BudgetExceededError as crossed:
            # Raised after the last item: the caller has them all, so "its result is
            # discarded" would be false.
            site = crossed.site
            if site is not None and site.ran:
                crossed.at(replace(site, streamed=True))
            raise

    def closed(self) -> None:
        """Stopped early: book what was seen; the caller chose to stop, so never raise."""
        if self.turn.ended:
            return
        usage, model, _, text = self._seen(None)
        self.turn.stop(usage, response_model=model, output=text)

    def _seen(self, returned: object) -> tuple[UsageSnapshot | None, str | None, int, str | None]:
        reader = self.reader
        assert reader is not None
        usage, model, reasoning = reader.usage, reader.model, reader.reasoning_tokens
        if returned is not None and usage is None:
            found = extract(returned)  # a generator may return the final message
            usage, model, reasoning = found.usage, model or found.model, found.reasoning_tokens
        if self.spec.fixed is not None:
            usage = self.spec.fixed
        return usage, model, reasoning, reader.text


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
        session = core.current_session()
        capture = capture_content()
        watched = session is not None and session.loops is not None
        # Arguments by name: for the span only with content capture on; for the
        # session's loop guard always (fingerprinted in memory, never exported).
        arguments = _arguments(names, instance, args, kwargs) if capture or watched else None
        loop_arguments: object = core.NOT_WATCHED
        if watched:
            loop_arguments = arguments
            # A method's object is part of its call (not recorded as content).
            bound = instance if instance is not None else _self_of(names, args)
            if bound is not None:
                loop_arguments = {**(arguments or {}), "self": Bound(bound)}
        # Denied / blocked / looping: the span is ended and the error raised here.
        self.tool = core.ToolCall.begin(
            session,
            name,
            arguments=arguments if capture else None,
            loop_arguments=loop_arguments,
        )

    def returned(self, result: object) -> None:
        self.tool.check(result)
        self.tool.finish(result)

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


class _SessionCall:
    """A generator decorated with ``agent_session``: the session lasts as long as it."""

    __slots__ = ("_cm", "_open")

    def __init__(self, cm: _SessionContext[Any]) -> None:
        self._cm = cm
        self._open = False

    def begin(self) -> None:
        self._cm._enter()  # activates the session in the stream's private context
        self._open = True

    def item(self, value: object) -> None:
        return None

    def _close(self, error: BaseException | None) -> None:
        if self._open:
            self._open = False
            self._cm._exit(error, cancelled=isinstance(error, CancelledError))

    def exhausted(self, value: object) -> None:
        self._close(None)

    def fail(self, error: BaseException) -> None:
        self._close(error)

    def closed(self) -> None:
        self._close(None)


def _turn_raised(
    turn: core.TurnCall,
    error: BaseException,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """End a turn whose function raised: failed, or never run (arguments it does not take)."""
    if core.arguments_refused(wrapped, args, kwargs, error):
        turn.not_run(error)  # no call was made: uncounted, no breaker or recovery
    else:
        turn.fail(error)


def _never_awaited(turn: core.TurnCall) -> None:
    if not turn.ended:
        turn.not_run(RuntimeError("the coroutine the turn returned was never awaited"))


async def _awaited(
    spec: _TurnSpec, turn: core.TurnCall, capture: bool, pending: Awaitable[Any]
) -> Any:
    """The turn of a sync function that returned a coroutine: it runs when awaited."""
    try:
        token = otel_context.attach(turn.context)
        try:
            result = await pending
        finally:
            otel_context.detach(token)
        kind_of_result = stream_kind(result)
        if kind_of_result:
            return _hand_over(_TurnCall(spec, turn, capture), result, kind_of_result)
        _finish_turn(spec, turn, capture, result)
    except BaseException as exc:
        turn.fail(exc)
        raise
    return result


def _hand_over(call: _TurnCall, result: object, kind: int) -> object:
    """Let a returned provider stream carry the turn until it ends."""
    ctx = contextvars.copy_context()
    ctx.run(call.begin)
    if kind == SYNC_STREAM:
        return TurnStream(result, ctx, call)
    return AsyncTurnStream(result, ctx, call)


# --- @agent_turn -----------------------------------------------------------------------


def _turn_wrapper(kind: int, spec: _TurnSpec) -> Callable[..., Any]:
    if kind == _FUNCTION:

        def turn_function(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            capture = capture_content()  # read once per call
            turn = _begin_turn(spec, capture, instance, args, kwargs)
            try:
                token = otel_context.attach(turn.context)
                try:
                    result = wrapped(*args, **kwargs)
                finally:
                    otel_context.detach(token)
                if inspect.iscoroutine(result):
                    # A sync def returning an async client's call: the turn is that
                    # awaitable, and ends when the caller awaits it.
                    awaitable = _awaited(spec, turn, capture, result)
                    # Dropped unawaited, it never ran: nothing was sent.
                    weakref.finalize(awaitable, _never_awaited, turn)
                    return awaitable
                kind_of_result = stream_kind(result)
                if kind_of_result:  # an SDK stream object: the turn ends when it does
                    return _hand_over(_TurnCall(spec, turn, capture), result, kind_of_result)
                _finish_turn(spec, turn, capture, result)
            except BaseException as exc:
                _turn_raised(turn, exc, wrapped, args, kwargs)
                raise
            return result

        return turn_function

    if kind == _COROUTINE:

        async def turn_coroutine(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            capture = capture_content()  # read once per call
            turn = await _abegin_turn(spec, capture, instance, args, kwargs)
            try:
                token = otel_context.attach(turn.context)
                try:
                    result = await wrapped(*args, **kwargs)
                finally:
                    otel_context.detach(token)
                kind_of_result = stream_kind(result)
                if kind_of_result:  # an SDK stream object: the turn ends when it does
                    return _hand_over(_TurnCall(spec, turn, capture), result, kind_of_result)
                _finish_turn(spec, turn, capture, result)
            except BaseException as exc:
                _turn_raised(turn, exc, wrapped, args, kwargs)
                raise
            return result

        return turn_coroutine

    if kind == _GENERATOR:

        def turn_generator(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            return drive(
                lazy(
                    lambda: _TurnCall.start(spec, instance, args, kwargs),
                    lambda: wrapped(*args, **kwargs),
                )
            )

        return turn_generator

    def turn_async_generator(
        wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
    ) -> Any:
        return adrive(
            alazy(
                lambda: _TurnCall.astart(spec, instance, args, kwargs),
                lambda: wrapped(*args, **kwargs),
            )
        )

    return turn_async_generator


@overload
def agent_turn(model: F, /) -> F: ...
@overload
def agent_turn(
    model: str | None = None,
    *,
    provider: str | None = None,
    usage: UsageSource | None = None,
) -> Callable[[F], F]: ...
def agent_turn(
    model: str | F | None = None,
    *,
    provider: str | None = None,
    usage: UsageSource | None = None,
) -> F | Callable[[F], F]:
    """Make each call of the decorated function one model turn (a ``chat {model}`` span).

    ``model`` names the requested model; without it the model is read from the
    result (``result.model`` / ``result["model"]``) and the span, price and
    metric labels use that. ``provider`` fills ``gen_ai.provider.name``
    (default: the session's). Token usage comes from ``usage``: a fixed
    ``UsageSnapshot``, or a function of the result returning a snapshot (or a
    provider usage block), or None to read the result; anything else is a
    ``TypeError``, raised once the call is booked (for a stream, at its end and
    only if no chunk gave usage). By default usage is read from the result: OpenAI chat
    completions and responses (cached and reasoning tokens included),
    Anthropic messages (cache reads and writes), dicts of those shapes, a
    ``UsageSnapshot``.

    Works on functions, coroutines, generators and async generators, and on
    methods, class methods and static methods. A generator turn is one turn
    for the whole stream: usage comes from the chunk that carries it (OpenAI's
    ``include_usage`` final chunk, Anthropic's ``message_start`` and
    ``message_delta``), and ``usage=`` is applied to each chunk. A plain or
    async function may also just return the SDK's stream object (``stream=True``):
    the caller gets it back (same type, wrapped) and the turn lasts until it
    is consumed, closed or dropped.

    Inside ``agent_session`` (or an Orchestrator session) the turn is admitted
    by the session's iteration cap, budget and breaker before the function
    runs, and booked in its ledger, exactly like ``session.run_turn``.

    Example::

        @agent_turn("gpt-4o-mini", provider="openai")
        def ask(prompt: str) -> ChatCompletion:
            return client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])

        @agent_turn(provider="anthropic")
        async def stream(prompt: str):
            async with client.messages.stream(...) as events:
                async for event in events:
                    yield event
    """
    if callable(model):  # bare @agent_turn
        return agent_turn()(model)
    if model is not None and not isinstance(model, str):
        raise TypeError(f"agent_turn model must be a string, got {type(model).__name__}: {model!r}")
    if provider is not None and not isinstance(provider, str):
        raise TypeError(f"agent_turn provider must be a string, got {provider!r}")
    if usage is not None and not (isinstance(usage, UsageSnapshot) or callable(usage)):
        raise TypeError(
            "agent_turn usage must be a UsageSnapshot or a function of the result, "
            f"got {type(usage).__name__}: {usage!r}"
        )
    if isinstance(usage, UsageSnapshot):
        core.check_usage(usage, "agent_turn usage")

    def decorate(fn: F) -> F:
        _check_decorated("agent_turn", fn)
        spec = _TurnSpec(model or "", provider, usage, _positional_names(fn))
        kind = _kind(fn)
        return _wrap(fn, kind, _turn_wrapper(kind, spec))

    return decorate


def _check_decorated(decorator: str, fn: object) -> None:
    """A decorator applied to what cannot be called fails where it is applied."""
    if not callable(fn) and not isinstance(fn, classmethod | staticmethod):
        raise TypeError(
            f"@{decorator} decorates a function or method, got {type(fn).__name__}: {fn!r}"
        )


# --- @tool_call ------------------------------------------------------------------------


def _tool_wrapper(kind: int, name: str, names: tuple[str, ...]) -> Callable[..., Any]:
    if kind == _FUNCTION:

        def tool_function(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            call = _ToolCall(name, names, instance, args, kwargs)
            try:
                token = otel_context.attach(call.tool.context)
                try:
                    result = wrapped(*args, **kwargs)
                finally:
                    otel_context.detach(token)
                call.returned(result)
            except BaseException as exc:
                call.fail(exc)
                raise
            return result

        return tool_function

    if kind == _COROUTINE:

        async def tool_coroutine(
            wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
        ) -> Any:
            call = _ToolCall(name, names, instance, args, kwargs)
            try:
                token = otel_context.attach(call.tool.context)
                try:
                    result = await wrapped(*args, **kwargs)
                finally:
                    otel_context.detach(token)
                call.returned(result)
            except BaseException as exc:
                call.fail(exc)
                raise
            return result

        return tool_coroutine

    if kind == _GENERATOR:

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
        _check_decorated("tool_call", fn)
        tool_name = name or getattr(_target(fn), "__name__", None) or "tool"
        kind = _kind(fn)
        return _wrap(fn, kind, _tool_wrapper(kind, tool_name, _positional_names(fn)))

    return decorate


# --- agent_session ---------------------------------------------------------------------


#: The options agent_session passes on to Orchestrator (its fields, but role).
_ORCHESTRATOR_OPTIONS = frozenset(
    f.name for f in dataclasses.fields(Orchestrator) if f.init and f.name != "role"
)


class agent_session:  # lower-case: used like a function, as contextlib's helpers are
    """Open one agent session, as ``Orchestrator(role=..., ...).session()`` would.

    ``orchestrator_options`` are ``Orchestrator``'s fields (``phase`` defaults
    to ``"default"``): budget, iteration cap, breakers, permissions,
    guardrails, sinks, providers. Use it as ``with`` (yields an
    ``OrchestrationSession``), ``async with`` (yields an
    ``AsyncOrchestrationSession``) or as a decorator, where each call of the
    function runs in a new session of the same orchestrator. Decorated turns
    and tools called anywhere under it, at any depth, in threads started with
    context propagation (``contextvars.copy_context().run``, and
    ``asyncio.to_thread``) and in asyncio tasks, belong to that session.

    Example::

        with agent_session("writer", budget_usd=0.5, enforce_budget=True,
                           max_iterations=5) as session:
            ask("draft the intro")
        print(session.summary())

        @agent_session("researcher", permissions=perms)
        async def research(topic: str) -> str:
            return await ask_async(topic)
    """

    def __init__(self, role: str, **orchestrator_options: Any) -> None:
        unknown = orchestrator_options.keys() - _ORCHESTRATOR_OPTIONS
        if unknown:
            # Else Orchestrator.__init__ names itself, a class the caller never wrote.
            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, _ORCHESTRATOR_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"agent_session() got an unexpected keyword argument {name!r}{hint}")
        #: The orchestrator every session of this object is opened from.
        self.orchestrator = Orchestrator(role=role, **orchestrator_options)
        # Blocks entered here and not yet exited, oldest first: the fallback
        # for an exit from another task (lifespan hooks, fixtures).
        self._entered: list[_SessionContext[Any]] = []

    def _push(self, cm: _SessionContext[Any]) -> None:
        _OPEN_BLOCKS.set((*_OPEN_BLOCKS.get(), (self, cm)))
        self._entered.append(cm)

    def _pop(self) -> _SessionContext[Any]:
        # One object may be entered by several threads or tasks at once; each
        # exits the innermost block it entered itself, found in its context.
        stack = _OPEN_BLOCKS.get()
        for index in range(len(stack) - 1, -1, -1):
            owner, cm = stack[index]
            if owner is self:
                _OPEN_BLOCKS.set(stack[:index] + stack[index + 1 :])
                self._entered.remove(cm)
                return cm
        if not self._entered:
            raise RuntimeError("agent_session exited without a matching enter")
        return self._entered.pop()

    def __enter__(self) -> OrchestrationSession:
        cm = self.orchestrator.session()
        session = cm.__enter__()
        self._push(cm)
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pop().__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> AsyncOrchestrationSession:
        cm = self.orchestrator.asession()
        session = await cm.__aenter__()
        self._push(cm)
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pop().__aexit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: every call runs in a fresh session of this orchestrator."""
        kind = _kind(fn)
        orch = self.orchestrator

        if kind == _FUNCTION:

            def session_function(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                with orch.session():
                    return wrapped(*args, **kwargs)

            wrapper: Callable[..., Any] = session_function
        elif kind == _COROUTINE:

            async def session_coroutine(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                async with orch.asession():
                    return await wrapped(*args, **kwargs)

            wrapper = session_coroutine
        elif kind == _GENERATOR:

            def session_generator(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                return drive(
                    lazy(lambda: _SessionCall(orch.session()), lambda: wrapped(*args, **kwargs))
                )

            wrapper = session_generator
        else:

            def session_async_generator(
                wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any
            ) -> Any:
                return adrive(
                    lazy(lambda: _SessionCall(orch.asession()), lambda: wrapped(*args, **kwargs))
                )

            wrapper = session_async_generator
        return cast(F, wrapt.FunctionWrapper(fn, wrapper))
