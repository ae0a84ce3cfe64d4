"""Circuit breakers that stop calling a failing dependency until it has had time to recover.

States: CLOSED (calls flow), OPEN (calls are rejected with ``CircuitOpenError``) and
HALF_OPEN (after ``recovery_timeout_seconds``, up to ``half_open_max_probes`` trial calls
are let through; one success closes the circuit, one failure re-opens it).

Calls run with a timeout (``techrevati.runtime.telemetry.calls.timeouts``) count a timeout as a
failure and leave the timed-out call running on its thread; a breaker refuses
further calls with ``CircuitOpenError`` while ``max_hung_calls`` (default
:data:`MAX_HUNG_CALLS`, 8) of those are still running, whatever its state.

Example::

    >>> from techrevati.runtime.circuit_breaker import CircuitBreaker, CircuitOpenError
    >>> now = [0.0]
    >>> cb = CircuitBreaker("model-api", failure_threshold=1, recovery_timeout_seconds=30.0,
    ...                     clock=lambda: now[0])
    >>> cb.record_failure(); cb.state().value
    'open'
    >>> now[0] = 30.0
    >>> cb.call(lambda: "ok"), cb.state().value
    ('ok', 'closed')
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, ParamSpec, TypeVar

__all__ = [
    "MAX_HUNG_CALLS",
    "AsyncCircuitBreaker",
    "BreakerPermit",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Default bound on timed-out calls still running per breaker (``max_hung_calls``).
#: Each one pins a thread and whatever it holds (a socket, a request body); eight
#: rides out a few stragglers while keeping a hanging dependency from piling up
#: threads without end.
MAX_HUNG_CALLS: Final = 8


# (str, Enum) rather than StrEnum: the contract pins str(member) == "CircuitState.MEMBER".
class CircuitState(str, Enum):  # noqa: UP042
    """The three observable breaker states.

    Example::

        >>> CircuitState.HALF_OPEN.value
        'half_open'
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN


class CircuitOpenError(Exception):
    """Raised instead of calling the wrapped function while the circuit is open.

    ``reason`` says why when the refusal is not the plain OPEN state (all
    half-open probe slots taken, or too many timed-out calls still running).
    A breaker refusing in the OPEN state also tells how many consecutive
    ``failures`` opened it, the ``last_failure`` (its type, and its HTTP status
    when it has one: never its message, which may quote a key or the prompt;
    None when ``record_failure()`` told of it) and, in ``retry_in_seconds``, how
    soon it lets a trial call through: as attributes, and as a note on the
    error (shown with its traceback), after the message the contract pins.

    Example::

        >>> str(CircuitOpenError("model-api"))
        "Circuit breaker 'model-api' is OPEN"
        >>> str(CircuitOpenError("model-api", reason="8 timed-out calls are still running"))
        "Circuit breaker 'model-api' refused the call: 8 timed-out calls are still running"
        >>> err = CircuitOpenError("api", failures=5, last_failure="APITimeoutError",
        ...                        retry_in_seconds=12.5, recovery_timeout_seconds=30.0)
        >>> str(err)
        "Circuit breaker 'api' is OPEN"
        >>> print(err.__notes__[0])  # doctest: +NORMALIZE_WHITESPACE
        opened after 5 consecutive failures (last: APITimeoutError): this call was refused
        before it ran; a trial call is let through in 12.5s (recovery_timeout_seconds=30)
    """

    def __init__(
        self,
        name: str,
        *,
        reason: str | None = None,
        failures: int | None = None,
        last_failure: str | None = None,
        retry_in_seconds: float | None = None,
        recovery_timeout_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.reason = reason
        #: Consecutive failures counted when the call was refused (None: not told).
        self.failures = failures
        #: The last of them as ``"Type: message"``; None when not known.
        self.last_failure = last_failure
        #: Seconds until the breaker lets a trial call through (None: not told).
        self.retry_in_seconds = retry_in_seconds
        self.recovery_timeout_seconds = recovery_timeout_seconds
        if reason is not None:
            super().__init__(f"Circuit breaker '{name}' refused the call: {reason}")
            return
        # The contract pins the message; what the breaker knows is a note after it.
        super().__init__(f"Circuit breaker '{name}' is OPEN")
        if failures is not None:
            note = f"opened after {failures} consecutive failure{'' if failures == 1 else 's'}"
            if last_failure:
                note += f" (last: {last_failure})"
            note += ": this call was refused before it ran"
            if retry_in_seconds is not None:
                note += f"; a trial call is let through in {_seconds(retry_in_seconds)}"
                if recovery_timeout_seconds is not None:
                    note += f" (recovery_timeout_seconds={recovery_timeout_seconds:g})"
            self.add_note(note)

    def __reduce__(self) -> tuple[Any, ...]:
        # Notes travel as state (the application's too): __init__ makes only its own.
        notes = getattr(self, "__notes__", None)
        return (
            _rebuild_open_error,
            (
                type(self),
                self.name,
                self.reason,
                self.failures,
                self.last_failure,
                self.retry_in_seconds,
                self.recovery_timeout_seconds,
            ),
            {"__notes__": list(notes)} if notes else None,
        )


def _rebuild_open_error(
    cls: type[CircuitOpenError],
    name: str,
    reason: str | None,
    failures: int | None = None,
    last_failure: str | None = None,
    retry_in_seconds: float | None = None,
    recovery_timeout_seconds: float | None = None,
) -> CircuitOpenError:
    # The defaults read pickles made before the refusal said why the breaker opened.
    error = cls.__new__(cls)
    CircuitOpenError.__init__(
        error,
        name,
        reason=reason,
        failures=failures,
        last_failure=last_failure,
        retry_in_seconds=retry_in_seconds,
        recovery_timeout_seconds=recovery_timeout_seconds,
    )
    return error


def _seconds(value: float) -> str:
    # One decimal reads well for a window of seconds; a last sliver would print "0.0s".
    return f"{value:.1f}s" if value >= 0.1 else f"{value * 1000:.0f}ms"


#: How much of the last failure an open breaker's refusal quotes.
_FAILURE_SHOWN = 200


def _failure_text(error: BaseException) -> str:
    """How an open breaker's refusal names the failure that opened it: its type, and its
    HTTP status when it carries one (``status_code``, as the SDKs' errors do).

    Never its message: a provider's error text may quote a key, a signed URL or
    the prompt, and the refusal is repeated in every log line and span while the
    circuit is open. Built when a call fails, so the refusal need not keep the
    exception (and its traceback's frames) alive.
    """
    shown = getattr(error, "shown_as", None)
    if isinstance(shown, str):  # a failure known only by its name (another producer's span)
        return shown[:_FAILURE_SHOWN]
    text = type(error).__name__
    status = getattr(error, "status_code", None)
    if type(status) is int:
        text += f" (HTTP {status})"
    return text[:_FAILURE_SHOWN]


def _check_positive_int(field_name: str, value: object) -> None:
    # bool is an int subclass; True as a threshold is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field_name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{field_name} must be >= 1, got {value!r}")


@dataclass
class _BreakerCore:
    """State and transition rules shared by both breakers.

    Every ``*_locked`` method must be called with the subclass's ``_lock`` held; none
    of them awaits, so the async breaker can use them unchanged.
    """

    name: str
    failure_threshold: int = 5
    recovery_timeout_seconds: float = 60.0
    half_open_max_probes: int = 1
    clock: Callable[[], float] = time.monotonic
    _state: CircuitState = field(default=_CLOSED, init=False, repr=False, compare=False)
    _failure_count: int = field(default=0, init=False, repr=False, compare=False)
    _last_failure_time: float | None = field(default=None, init=False, repr=False, compare=False)
    _probe_in_flight: int = field(default=0, init=False, repr=False, compare=False)
    # Bumped on every OPEN -> HALF_OPEN switch so that a probe interrupted by a
    # BaseException releases its permit only within the half-open round it belongs to.
    _half_open_round: int = field(default=0, init=False, repr=False, compare=False)
    #: Refuse calls while this many timed-out calls are still running (set it
    #: after construction; not an init field, so the contract's signature stays).
    max_hung_calls: int = field(default=MAX_HUNG_CALLS, init=False, repr=False, compare=False)
    # Timed-out calls still running; changed only by techrevati.runtime.telemetry.calls.timeouts.
    _hung_calls: int = field(default=0, init=False, repr=False, compare=False)
    # The last failure as _failure_text() wrote it, for the OPEN refusal's message;
    # None when record_failure() told of it. Kept as text, never the exception.
    _last_failure: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        _check_positive_int("failure_threshold", self.failure_threshold)
        _check_positive_int("half_open_max_probes", self.half_open_max_probes)
        timeout = self.recovery_timeout_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"recovery_timeout_seconds must be a number, got {timeout!r}")
        if not math.isfinite(timeout) or timeout < 0:
            raise ValueError(
                f"recovery_timeout_seconds must be a finite number >= 0, got {timeout!r}"
            )
        if not callable(self.clock):
            raise TypeError(f"clock must be callable, got {self.clock!r}")

    def _window_elapsed_locked(self) -> bool:
        last = self._last_failure_time
        return last is not None and self.clock() - last >= self.recovery_timeout_seconds

    def _refuse_if_hung_locked(self) -> None:
        hung = self._hung_calls
        if hung >= self.max_hung_calls:
            raise CircuitOpenError(
                self.name,
                reason=(
                    "1 timed-out call is still running"
                    if hung == 1
                    else f"{hung} timed-out calls are still running"
                )
                + f" (max_hung_calls={self.max_hung_calls}); it admits again as "
                + ("that call finishes" if hung == 1 else "they finish"),
            )

    def _admit_locked(self) -> int:
        """Admit a call while not CLOSED; return the half-open round or raise."""
        if self._state is _OPEN:
            if not self._window_elapsed_locked():
                raise self._open_error_locked()
            self._state = _HALF_OPEN
            self._probe_in_flight = 1
            self._half_open_round += 1
            return self._half_open_round
        if self._probe_in_flight >= self.half_open_max_probes:
            probes = self.half_open_max_probes
            raise CircuitOpenError(
                self.name,
                reason=(
                    f"it is half-open and its {probes} probe "
                    f"{'call is' if probes == 1 else 'calls are'} still in flight; it admits "
                    "calls again once a probe succeeds"
                ),
            )
        self._probe_in_flight += 1
        return self._half_open_round

    def _open_error_locked(self) -> CircuitOpenError:
        """The refusal of a call while OPEN, saying why it opened and when it admits."""
        last = self._last_failure_time
        timeout = self.recovery_timeout_seconds
        return CircuitOpenError(
            self.name,
            failures=self._failure_count,
            last_failure=self._last_failure,
            retry_in_seconds=None if last is None else max(0.0, timeout - (self.clock() - last)),
            recovery_timeout_seconds=timeout,
        )

    def _release_probe_locked(self, round_: int) -> None:
        if (
            self._state is _HALF_OPEN
            and self._half_open_round == round_
            and self._probe_in_flight > 0
        ):
            self._probe_in_flight -= 1

    def _success_locked(self) -> None:
        self._failure_count = 0
        if self._state is _HALF_OPEN:
            self._state = _CLOSED
            self._probe_in_flight = 0

    def _failure_locked(self, failure: str | None = None) -> None:
        """Count a failure; ``failure`` is its ``_failure_text`` (None: not known)."""
        self._failure_count += 1
        self._last_failure_time = self.clock()
        self._last_failure = failure
        if self._state is _HALF_OPEN:
            self._state = _OPEN
            self._probe_in_flight = 0
        elif self._failure_count >= self.failure_threshold:
            self._state = _OPEN

    def _observed_state_locked(self) -> CircuitState:
        # Reporting HALF_OPEN for an elapsed window is read-only; the switch itself
        # happens on the next admitted call.
        if self._state is _OPEN and self._window_elapsed_locked():
            return _HALF_OPEN
        return self._state

    def _reset_locked(self) -> None:
        self._state = _CLOSED
        self._failure_count = 0
        self._last_failure_time = None
        self._last_failure = None
        self._probe_in_flight = 0


@dataclass
class CircuitBreaker(_BreakerCore):
    """Thread-safe breaker; ``fn`` runs outside the lock.

    Raises ``ValueError`` at construction for ``failure_threshold < 1``,
    ``half_open_max_probes < 1`` or a negative/non-finite ``recovery_timeout_seconds``.

    Example::

        >>> cb = CircuitBreaker("model-api", failure_threshold=3, recovery_timeout_seconds=30.0)
        >>> cb.call(len, "abc")
        3
        >>> cb.is_open()
        False
    """

    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` if the breaker admits it, recording the outcome.

        Raises ``CircuitOpenError`` without calling ``fn`` when the circuit is open or
        all half-open probe slots are taken. Exceptions from ``fn`` are re-raised.
        """
        lock = self._lock
        with lock:
            if self._hung_calls:
                self._refuse_if_hung_locked()
            probe_round = None if self._state is _CLOSED else self._admit_locked()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            failure = _failure_text(exc)  # outside the lock: str() runs the caller's code
            with lock:
                self._failure_locked(failure)
            raise
        except BaseException:
            # KeyboardInterrupt and friends say nothing about the dependency, but a
            # permit held forever would wedge the breaker in HALF_OPEN.
            if probe_round is not None:
                with lock:
                    self._release_probe_locked(probe_round)
            raise
        # _success_locked() inlined: this is the hot path of every model call.
        with lock:
            self._failure_count = 0
            if self._state is _HALF_OPEN:
                self._state = _CLOSED
                self._probe_in_flight = 0
        return result

    def record_success(self) -> None:
        """Reset the consecutive-failure count; close the circuit if half-open."""
        with self._lock:
            self._success_locked()

    def record_failure(self) -> None:
        """Count a failure; open the circuit at the threshold or on a failed probe."""
        with self._lock:
            self._failure_locked()

    def state(self) -> CircuitState:
        """Current state; an OPEN circuit whose window has elapsed reports HALF_OPEN."""
        with self._lock:
            return self._observed_state_locked()

    def is_open(self) -> bool:
        """True while calls would be rejected outright (``state() == OPEN``)."""
        return self.state() is _OPEN

    def reset(self) -> None:
        """Return to CLOSED and forget all failures and probes.

        Timed-out calls still running stay counted against ``max_hung_calls``.
        """
        with self._lock:
            self._reset_locked()


@dataclass
class AsyncCircuitBreaker(_BreakerCore):
    """asyncio flavour of :class:`CircuitBreaker`; safe across tasks of one event loop.

    Its state is independent of any sync breaker. Cancellation of an admitted probe
    gives its permit back rather than counting as a failure.

    Example::

        >>> import asyncio
        >>> async def ping() -> str:
        ...     return "pong"
        >>> acb = AsyncCircuitBreaker("model-api")
        >>> asyncio.run(acb.call(ping))
        'pong'
    """

    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False, compare=False)

    async def call(
        self, coro_factory: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``coro_factory(*args, **kwargs)`` if admitted, recording the outcome."""
        async with self._lock:
            if self._hung_calls:
                self._refuse_if_hung_locked()
            probe_round = None if self._state is _CLOSED else self._admit_locked()
        try:
            result = await coro_factory(*args, **kwargs)
        except Exception as exc:
            failure = _failure_text(exc)
            async with self._lock:
                self._failure_locked(failure)
            raise
        except BaseException:
            if probe_round is not None:
                # No await here on purpose: a cancelled task must not be suspended
                # again, and critical sections never await, so nothing can interleave.
                self._release_probe_locked(probe_round)
            raise
        async with self._lock:
            self._success_locked()
        return result

    async def record_success(self) -> None:
        """Reset the consecutive-failure count; close the circuit if half-open."""
        async with self._lock:
            self._success_locked()

    async def record_failure(self) -> None:
        """Count a failure; open the circuit at the threshold or on a failed probe."""
        async with self._lock:
            self._failure_locked()

    async def state(self) -> CircuitState:
        """Current state; an OPEN circuit whose window has elapsed reports HALF_OPEN."""
        async with self._lock:
            return self._observed_state_locked()

    async def is_open(self) -> bool:
        """True while calls would be rejected outright (``state() == OPEN``)."""
        return await self.state() is _OPEN

    async def reset(self) -> None:
        """Return to CLOSED and forget all failures and probes."""
        async with self._lock:
            self._reset_locked()


# --- breaker admission held across steps ---------------------------------------


class BreakerPermit:
    """One admission by a circuit breaker, held across a call that is not one callable.

    ``CircuitBreaker.call`` wraps a single callable. A streaming turn (the call
    lasts until the generator is exhausted) or a sync turn under an async
    breaker has no such callable, so the permit replays ``call``'s bookkeeping
    step by step with the breaker's own transition rules: ``admit`` (raising
    ``CircuitOpenError`` when refused), then ``succeeded``, ``failed`` or
    ``released`` exactly once (later calls, and any after a refusal, are ignored).

    The async breaker is driven without its ``asyncio.Lock``: its critical
    sections never await, so on the event-loop thread none can be in progress
    while this runs (the argument ``AsyncCircuitBreaker.call`` itself relies on
    when it releases a cancelled probe).

    Example::

        permit = BreakerPermit(breaker)
        permit.admit()                       # may raise CircuitOpenError
        try:
            for chunk in stream: ...
        except BaseException as exc:
            permit.failed(exc)
            raise
        permit.succeeded()
    """

    __slots__ = ("_done", "_lock", "_round", "breaker")

    def __init__(self, breaker: CircuitBreaker | AsyncCircuitBreaker) -> None:
        self.breaker = breaker
        self._lock: contextlib.AbstractContextManager[object] = (
            breaker._lock if isinstance(breaker, CircuitBreaker) else contextlib.nullcontext()
        )
        self._done = False
        self._round: int | None = None

    def admit(self) -> None:
        """Take the admission now, as ``call`` does before running; raises when refused."""
        breaker = self.breaker
        with self._lock:
            try:
                if breaker._hung_calls:
                    breaker._refuse_if_hung_locked()
                if breaker._state is CircuitState.CLOSED:
                    return
                self._round = breaker._admit_locked()
            except CircuitOpenError:
                self._done = True  # refused: nothing to report back to the breaker
                raise

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.breaker.name

    @property
    def running(self) -> bool:
        """True while admitted and its outcome not told yet."""
        return not self._done

    @property
    def probing(self) -> bool:
        """True while this admission holds a half-open probe slot."""
        return self._round is not None and not self._done

    def free_probe(self) -> None:
        """Give back the half-open probe slot now; the outcome is still told later.

        For an admission whose answer nothing may see for a long time (a stream
        seen only by its span): the slot would refuse every other call meanwhile.
        """
        if self._round is not None and not self._done:
            with self._lock:
                self.breaker._release_probe_locked(self._round)
            self._round = None

    def succeeded(self) -> None:
        """The call worked: reset the failure count, close a half-open circuit."""
        if not self._done:
            self._done = True
            with self._lock:
                self.breaker._success_locked()

    def failed(self, error: BaseException) -> None:
        """The call failed: an ``Exception`` counts; anything else only frees the probe."""
        if self._done:
            return
        self._done = True
        failure = _failure_text(error) if isinstance(error, Exception) else None
        with self._lock:
            if isinstance(error, Exception):
                self.breaker._failure_locked(failure)
            elif self._round is not None:
                self.breaker._release_probe_locked(self._round)

    def released(self) -> None:
        """The caller stopped early: neither success nor failure, free the probe."""
        if not self._done:
            self._done = True
            if self._round is not None:
                with self._lock:
                    self.breaker._release_probe_locked(self._round)

    def state(self) -> CircuitState:
        """The breaker's state now, as ``breaker.state()`` reports it."""
        with self._lock:
            return self.breaker._observed_state_locked()
