"""``@agent_turn``: each call of the decorated function is one model turn.

A plain function or coroutine drives the core's turn directly (``_begin_turn``,
``_finish_turn``); a generator, or a function that returns an SDK stream, hands a
``_TurnCall`` to the stream drivers (:mod:`.streams`), and the turn lasts as long
as the stream. Admission (iteration cap, budget, open breaker) happens before
the function is called; for generators before the first step, so a refused
turn never starts the underlying generator.
"""

from __future__ import annotations

import contextvars
import inspect
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, NoReturn, overload

from opentelemetry import context as otel_context

from ..telemetry.calls import instrument as core
from ..telemetry.calls.content import capture_content
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
from .wrapping import (
    COROUTINE,
    FUNCTION,
    GENERATOR,
    F,
    arguments_of,
    check_decorated,
    kind_of,
    positional_names,
    wrap,
)

#: What ``agent_turn(usage=...)`` accepts: a fixed snapshot, or a function of the
#: result (of each chunk, for streams) returning a snapshot, a provider usage
#: block, a whole response, or None for "read it from the result".
UsageSource = UsageSnapshot | Callable[[Any], object]


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


def _session_here() -> core.SessionScope | None:
    # The context variable first (the usual case: one read); the full answer where it
    # is unset, closed, or has a generator's session block below it.
    scope = _CURRENT.get()
    if scope is None or scope.closed or scope.held_below:
        return core.current_session()
    return scope


def _begin_turn(
    spec: _TurnSpec, capture: bool, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> core.TurnCall:
    """Admit and start a decorated turn in the current session, if any."""
    return core.TurnCall.begin(
        _session_here(),
        spec.model,
        provider=spec.provider,
        usage=spec.fixed,
        prompt=arguments_of(spec.names, instance, args, kwargs) if capture else None,
    )


async def _abegin_turn(
    spec: _TurnSpec, capture: bool, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> core.TurnCall:
    """``_begin_turn`` for coroutines: fleet scopes are awaited, never waited on in the loop."""
    return await core.TurnCall.abegin(
        _session_here(),
        spec.model,
        provider=spec.provider,
        usage=spec.fixed,
        prompt=arguments_of(spec.names, instance, args, kwargs) if capture else None,
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
    if kind == FUNCTION:

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

    if kind == COROUTINE:

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

    if kind == GENERATOR:

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
        check_decorated("agent_turn", fn)
        spec = _TurnSpec(model or "", provider, usage, positional_names(fn))
        kind = kind_of(fn)
        return wrap(fn, kind, _turn_wrapper(kind, spec))

    return decorate
