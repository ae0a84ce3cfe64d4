"""Run one call under a timeout and a circuit breaker, so that a timeout is a failure.

Python cannot stop a running synchronous call, so :func:`run_with_timeout` runs
it on a daemon thread and stops *waiting* when the timeout expires: the caller
gets ``TurnTimeoutError`` at once, the breaker records a failure (a timed-out
half-open probe re-opens it), and the thread, still running, is counted as
*hung* against the breaker until it returns. While ``breaker.max_hung_calls``
(default :data:`~techrevati.runtime.circuit_breaker.MAX_HUNG_CALLS`, 8) hung
calls are still running, the breaker refuses new calls with
``CircuitOpenError``; calls already admitted when the limit was reached may
still time out, so the bound is ``max_hung_calls`` plus the calls in flight at
that moment. A hung call's late error is discarded: its outcome was already
booked as the timeout. Its late result is handed to ``on_late`` when the caller
gave one (:func:`wait_in_thread`): a session books what the call used, since
the provider bills a call that answered after we stopped waiting.

:func:`arun_with_timeout` is the asyncio counterpart: the coroutine is cancelled
at the timeout (nothing is left running), and the timeout counts as a failure
in the same way.

A core that admits and books through its own ``BreakerPermit`` uses the parts
without the breaker bookkeeping: :func:`wait_in_thread` (thread, wait, hung-call
accounting) and :func:`await_with_timeout` (our expiry told apart from the
coroutine's own ``TimeoutError``); ``permit.failed(TurnTimeoutError)`` then books
the timeout as a failure.

Example::

    >>> from techrevati.runtime.circuit_breaker import CircuitBreaker
    >>> breaker = CircuitBreaker("model-api", failure_threshold=2)
    >>> run_with_timeout(lambda: "ok", 5.0, breaker)
    'ok'
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from ...circuit_breaker import AsyncCircuitBreaker, BreakerPermit, CircuitBreaker
from ..limits.errors import TurnTimeoutError

__all__ = [
    "arun_with_timeout",
    "await_with_timeout",
    "hung_calls",
    "run_with_timeout",
    "wait_in_thread",
]

T = TypeVar("T")
AnyBreaker = CircuitBreaker | AsyncCircuitBreaker

# Guards every breaker's hung-call count and each pending call's done/abandoned
# pair. One lock for all: the sections are a few attribute writes, and an
# AsyncCircuitBreaker's own lock cannot be taken from the worker thread.
_hung_lock = threading.Lock()
_hung_total = 0


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    # An infinite timeout is no timeout (Event.wait and asyncio reject inf).
    return float(timeout) if math.isfinite(timeout) else None


def _check_breaker(breaker: object) -> None:
    if breaker is not None and not isinstance(breaker, CircuitBreaker | AsyncCircuitBreaker):
        raise TypeError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")


#: Who timed out, for the message: the session's role and model ("" when not
#: known) and the name of the breaker that counts the timeout (None: none does).
_Whose = tuple[str, str, str | None]
_NOBODY: _Whose = ("", "", None)


def _timed_out(seconds: float, whose: _Whose, *, running: bool) -> TurnTimeoutError:
    """``TurnTimeoutError(seconds)`` with a note on what became of the call.

    Built only when a deadline expires. Its message is the one the contract
    pins; the note (shown with its traceback) names the session's role and
    model when known, says whether the call is still running (a thread cannot
    be stopped) or was cancelled, and which breaker counts it as a failure.
    """
    error = TurnTimeoutError(seconds)
    role, model, counted_by = whose
    named = ", ".join(
        part for part in (role and f"role {role!r}", model and f"model {model!r}") if part
    )
    note = f"a turn ({named})" if named else "the call"
    note += " keeps running in the background" if running else " was cancelled"
    if counted_by is not None:
        note += f"; circuit breaker {counted_by!r} counts it as a failure"
    error.add_note(note)
    return error


def hung_calls(breaker: AnyBreaker | None = None) -> int:
    """Timed-out calls still running: on ``breaker``, or in the whole process.

    Example::

        >>> hung_calls(CircuitBreaker("fresh"))
        0
    """
    if breaker is None:
        return _hung_total
    _check_breaker(breaker)
    return breaker._hung_calls


class _Pending:
    """One call on its worker thread; ``done``/``abandoned`` change under ``_hung_lock``."""

    __slots__ = ("abandoned", "breaker", "done", "error", "finished", "late", "result")

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.done = False
        self.abandoned = False
        self.breaker: AnyBreaker | None = None
        self.result: object = None
        self.error: BaseException | None = None
        #: Called with the result of a call that returned after its caller gave up.
        self.late: Callable[[object], None] | None = None


def _run(pending: _Pending, ctx: contextvars.Context, call: Callable[[], object]) -> None:
    global _hung_total
    try:
        pending.result = ctx.run(call)
    except BaseException as exc:  # handed to the waiting caller, or dropped if it gave up
        pending.error = exc
    late: object = _NOT_LATE
    with _hung_lock:
        pending.done = True
        if pending.abandoned:
            _hung_total -= 1
            breaker = pending.breaker
            if breaker is not None:
                breaker._hung_calls -= 1
            if pending.error is None:
                late = pending.result
            # Nobody will read these; do not keep the late result alive.
            pending.result = pending.error = None
    pending.finished.set()
    on_late, pending.late = pending.late, None
    if on_late is not None and late is not _NOT_LATE:
        try:
            on_late(late)
        except Exception:  # on the worker thread: nobody to raise to
            _log.exception("booking a timed-out call that finished later failed")


_NOT_LATE = object()
_log = logging.getLogger("techrevati.runtime.orchestrator")


def _abandon(pending: _Pending, breaker: AnyBreaker | None) -> bool:
    """Give up waiting; count the call as hung unless it finished meanwhile."""
    global _hung_total
    with _hung_lock:
        if pending.done:
            return False
        pending.abandoned = True
        pending.breaker = breaker
        _hung_total += 1
        if breaker is not None:
            breaker._hung_calls += 1
        return True


def _start_and_wait(
    call: Callable[[], object],
    seconds: float,
    breaker: AnyBreaker | None,
    on_late: Callable[[object], None] | None = None,
    whose: _Whose = _NOBODY,
) -> _Pending:
    """Run ``call`` on a daemon thread and wait; return the finished call.

    Raises ``TurnTimeoutError`` (the thread counted as hung) on expiry. A
    ``BaseException`` while starting or waiting (no thread left, or
    ``KeyboardInterrupt``) propagates, the thread, if started, counted as hung.
    """
    pending = _Pending()
    pending.late = on_late
    thread = threading.Thread(
        target=_run,
        args=(pending, contextvars.copy_context(), call),
        name="techrevati-turn",
        daemon=True,
    )
    try:
        thread.start()
        finished = pending.finished.wait(seconds)
    except BaseException:
        if thread.ident is not None:
            _abandon(pending, breaker)
        raise
    if not finished and _abandon(pending, breaker):
        error = _timed_out(seconds, whose, running=True)
        raise error from TimeoutError(f"no result within {seconds:g}s")
    # Finished in time (possibly just as the wait expired): done was set under
    # the lock, and the event follows at once.
    pending.finished.wait()
    return pending


def _outcome(pending: _Pending) -> object:
    error = pending.error
    if error is not None:
        pending.error = None  # break the frame -> error -> traceback cycle
        raise error
    return pending.result


def wait_in_thread(
    call: Callable[[], T],
    timeout: float,
    breaker: AnyBreaker | None = None,
    on_late: Callable[[T], None] | None = None,
    *,
    role: str = "",
    model: str = "",
    counted_by: str | None = None,
) -> T:
    """Run ``call()`` on a daemon thread, waiting at most ``timeout`` seconds.

    Only the waiting and the hung-call accounting: no admission and nothing
    booked on the breaker, for a caller that holds its own ``BreakerPermit``
    (admitted before, told ``failed(error)`` after; ``TurnTimeoutError`` is an
    ``Exception``, so the permit books the timeout as a failure). On expiry it
    raises ``TurnTimeoutError(timeout)`` and counts the thread as hung against
    ``breaker`` until it returns, so the breaker's admission refuses while
    ``max_hung_calls`` of them still run. The call's own result or exception is
    returned or raised as is. ``on_late(result)`` runs on the worker thread
    when a timed-out call returns after all (not when it raises). ``role``,
    ``model`` and ``counted_by`` (the breaker whose permit books the timeout)
    are named in the ``TurnTimeoutError``'s message.

    Example::

        permit = BreakerPermit(breaker)
        permit.admit()
        try:
            result = wait_in_thread(fn, 30.0, breaker, counted_by=permit.name)
        except BaseException as exc:
            permit.failed(exc)
            raise
        permit.succeeded()
    """
    if not callable(call):
        raise TypeError(f"call must be callable, got {call!r}")
    seconds = _check_timeout(timeout)
    _check_breaker(breaker)
    if seconds is None:
        return call()
    late = cast(Callable[[object], None] | None, on_late)
    whose = (role, model, counted_by)
    return cast(T, _outcome(_start_and_wait(call, seconds, breaker, late, whose)))


def run_with_timeout(
    call: Callable[[], T], timeout: float | None, breaker: AnyBreaker | None = None
) -> T:
    """Run ``call()`` admitted by ``breaker``; give up after ``timeout`` seconds.

    * The breaker admits first (raises ``CircuitOpenError`` when open, when its
      half-open probes are taken, or while ``max_hung_calls`` timed-out calls
      on it are still running); ``call`` then does not run.
    * ``timeout=None`` runs ``call`` inline, exactly like ``breaker.call(call)``.
    * Otherwise ``call`` runs on a daemon thread in a copy of the caller's
      context (the current span stays current). On expiry this raises
      ``TurnTimeoutError(timeout)`` (its ``__cause__`` a ``TimeoutError``),
      records a failure on the breaker and counts the thread as hung until it
      returns. A result or ``Exception`` in time is booked as success or
      failure, as ``breaker.call`` books it.
    * No thread to be had, or a ``BaseException`` in the caller while waiting
      (``KeyboardInterrupt``), frees a half-open probe, books no failure and
      propagates (a started thread counts as hung).

    Example::

        try:
            text = run_with_timeout(lambda: client.complete(prompt), 30.0, breaker)
        except TurnTimeoutError:
            ...  # the breaker has counted it; the call may still finish in the background
    """
    if not callable(call):
        raise TypeError(f"call must be callable, got {call!r}")
    seconds = _check_timeout(timeout)
    _check_breaker(breaker)
    permit = BreakerPermit(breaker) if breaker is not None else None
    if permit is not None:
        permit.admit()
    if seconds is None:
        try:
            result = call()
        except BaseException as exc:
            if permit is not None:
                permit.failed(exc)
            raise
        if permit is not None:
            permit.succeeded()
        return result
    try:
        whose = _NOBODY if permit is None else ("", "", permit.name)
        pending = _start_and_wait(call, seconds, breaker, None, whose)
    except TurnTimeoutError as timed_out:
        if permit is not None:
            permit.failed(timed_out)
        raise
    except BaseException:
        # Not the dependency's fault: free a probe without booking a failure.
        if permit is not None:
            permit.released()
        raise
    try:
        value = _outcome(pending)
    except BaseException as exc:
        if permit is not None:
            permit.failed(exc)
        raise
    if permit is not None:
        permit.succeeded()
    return cast(T, value)


async def await_with_timeout(
    factory: Callable[[], Awaitable[T]],
    timeout: float | None,
    *,
    role: str = "",
    model: str = "",
    counted_by: str | None = None,
) -> T:
    """Await ``factory()``, cancelling it after ``timeout`` seconds (``None``: no limit).

    Only the waiting: ``TurnTimeoutError(timeout)``, raised from the
    ``TimeoutError``, when *this* timeout expired; a ``TimeoutError`` the
    coroutine raises itself propagates unchanged. Runs in the current task
    (``asyncio.timeout``), so no extra task is created. ``role``, ``model``
    and ``counted_by`` are named in the message, as for :func:`wait_in_thread`.

    Example::

        result = await await_with_timeout(lambda: client.acomplete(prompt), 30.0)
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    seconds = _check_timeout(timeout)
    if seconds is None:
        return await factory()
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await factory()
    except TimeoutError as exc:
        if scope.expired():
            raise _timed_out(seconds, (role, model, counted_by), running=False) from exc
        raise


async def arun_with_timeout(
    factory: Callable[[], Awaitable[T]],
    timeout: float | None,
    breaker: AnyBreaker | None = None,
) -> T:
    """Await ``factory()`` admitted by ``breaker``, cancelling it after ``timeout`` seconds.

    Admission and booking as :func:`run_with_timeout`; the expired coroutine is
    cancelled (no thread is left behind), the breaker records a failure (a
    timed-out half-open probe re-opens it) and ``TurnTimeoutError(timeout)``
    is raised from the ``TimeoutError``. A ``TimeoutError`` raised by the
    coroutine itself is its own failure and propagates unchanged. Cancellation
    from outside frees a half-open probe and records nothing.

    Example::

        text = await arun_with_timeout(lambda: client.acomplete(prompt), 30.0, breaker)
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    _check_timeout(timeout)
    _check_breaker(breaker)
    permit = BreakerPermit(breaker) if breaker is not None else None
    if permit is not None:
        permit.admit()
    try:
        counted_by = None if permit is None else permit.name
        result = await await_with_timeout(factory, timeout, counted_by=counted_by)
    except BaseException as exc:
        if permit is not None:
            permit.failed(exc)
        raise
    if permit is not None:
        permit.succeeded()
    return result
