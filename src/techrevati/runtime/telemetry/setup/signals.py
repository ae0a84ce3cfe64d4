"""SIGTERM: end open sessions, flush, print the report, then stop as the signal asks.

``docker stop``, Kubernetes and systemd stop a process with SIGTERM, whose
default action kills it at once: no ``atexit``, so the spans still queued, the
open session's span and the report are lost. So :func:`configure` takes SIGTERM
by default, but only where that loses nothing anyone else wanted:

* ``handle_sigterm=None`` (the default): taken when SIGTERM still has its
  default action (``SIG_DFL``) and ``configure()`` runs on the main thread (the
  only thread that may set signal handlers). A handler the application set
  before is left alone (it may want a graceful stop of its own, where ending
  every session at once would be wrong); ``handle_sigterm=True`` chains ours in
  front of it.
* ``handle_sigterm=True``: taken whatever was there; a handler installed
  before runs after ours. Off the main thread it warns and does nothing.
* ``handle_sigterm=False``: SIGTERM is never touched.

A handler installed after ``configure()`` replaces ours (Python keeps one
handler per signal); the usual ones (uvicorn, gunicorn workers, Celery) stop
the process through a normal exit, where the ``atexit`` flush runs.

On SIGTERM the handler ends every open session (their spans end
``cancelled``), shuts down every live handle that asked for it within its
``shutdown_timeout`` (flush and report), then hands the signal on: to the
handler installed before, or, with none, back to the default so the process
still dies of SIGTERM (exit status 143 / -15) as its supervisor expects.
One handler serves every ``configure()`` call of the process. A process that
cannot get that far (a thread stuck in C holding the GIL) is ended by a
last-resort deadline instead: every thread's stack on stderr, exit status 1.

Example::

    configure()                       # SIGTERM handled: SIG_DFL, main thread
    configure(handle_sigterm=False)   # leave SIGTERM alone
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

_logger = logging.getLogger(__name__)


class Flushable(Protocol):
    """What the handler shuts down: a :class:`~.handle.TelemetryHandle`."""

    @property
    def is_shut_down(self) -> bool: ...

    def shutdown(self, timeout_s: float | None = None) -> bool: ...


# Handles to shut down on SIGTERM, with their bounds. Weak: a handle the program
# dropped (and shut down) must not be kept alive by a signal it may never get.
_handles: weakref.WeakKeyDictionary[Flushable, float] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
# The handler function we installed last (to tell whether SIGTERM is still ours).
_ours: Callable[[int, FrameType | None], None] | None = None


def install_sigterm_handler(
    handle: Flushable, timeout_s: float = 10.0, *, explicit: bool = True
) -> bool:
    """Shut ``handle`` down on SIGTERM; True when SIGTERM is handled by us afterwards.

    ``explicit`` is ``handle_sigterm=True``: take SIGTERM whatever its handler
    (chaining an earlier one) and warn off the main thread. Without it (the
    default) SIGTERM is taken only while it has its default action. A SIGTERM
    that was set to be ignored stays ignored either way.
    """
    global _ours
    with _lock:
        current = signal.getsignal(signal.SIGTERM)
        if current is not None and current is _ours:
            _handles[handle] = timeout_s  # one handler serves every configure()
            return True
        if threading.current_thread() is not threading.main_thread():
            if explicit:
                _logger.warning(
                    "configure(handle_sigterm=True) must be called from the main thread; "
                    "SIGTERM is not handled"
                )
            else:
                _logger.debug("configure() off the main thread: SIGTERM left alone")
            return False
        if current is signal.SIG_IGN:
            _logger.info("SIGTERM is ignored in this process; leaving it so")
            return False
        if not explicit and current is not signal.SIG_DFL:
            # Never replace the application's handler unasked; say how to chain.
            _logger.info(
                "SIGTERM already has a handler (%r); leaving it. configure(handle_sigterm=True) "
                "ends sessions and flushes before it runs",
                current,
            )
            return False
        _handles[handle] = timeout_s
        _ours = _make_handler(current)
        signal.signal(signal.SIGTERM, _ours)
        return True


def _make_handler(previous: Any) -> Callable[[int, FrameType | None], None]:
    worker = _Worker(_end_and_flush)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # This runs on the main thread between two bytecodes of whatever that
        # thread was doing, which may hold a lock the work needs: a ledger's, an
        # exporter queue's, a log handler's, or sys.stderr's (a write that the
        # signal interrupts runs this handler with it held). Hence the order:
        #
        # 1. Arm a deadline that needs neither the GIL nor any Python lock
        #    (faulthandler's watchdog is a C thread). Every wait below is bounded
        #    in Python, but a thread stuck in C while holding the GIL would keep
        #    this thread from ever coming back from its wait. The watchdog ends
        #    such a process (exit status 1, every thread's stack on stderr)
        #    rather than leave it hanging until SIGKILL.
        # 2. Let the worker, started with the handler, do the work; wait for it
        #    at most the sum of the flush bounds. It logs nothing meanwhile:
        #    the interrupted code may hold a log handler's lock or sys.stderr's,
        #    and a worker logging would block there before flushing anything
        #    (on sys.stderr's, holding the handler's lock, on which our own
        #    line after the timeout would then wait forever).
        # 3. Say what happened: through logging once the worker is done (it
        #    holds no lock then), in one write to fd 2 when it is not.
        # 4. Disarm the deadline (an application handler is not ours to cut
        #    short, nor a process that goes on after an exception in the wait)
        #    and pass the signal on.
        bound = _bound_s()
        armed = _arm_deadline(bound + _DEADLINE_GRACE_S)
        try:
            finished = worker.run(bound)
            _say(worker.said, finished)
        finally:
            if armed:
                _disarm_deadline()
        _pass_on(previous, signum, frame)

    return on_sigterm


# How far past the flush bound the last-resort deadline lies: far more than
# saying what happened and passing the signal on take, so that it only ever
# ends a process that is stuck.
_DEADLINE_GRACE_S = 5.0

# Not sys.stderr: faulthandler flushes a file object it is given, and that flush
# would wait on the stream's lock, which the interrupted code may hold.
_STDERR_FD = 2


def _arm_deadline(seconds: float) -> bool:
    # Replaces a dump_traceback_later() timer the application armed (there is
    # one per process); the process is stopping.
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=_STDERR_FD)
    except Exception:  # never a reason not to flush and pass the signal on
        return False
    return True


def _disarm_deadline() -> None:
    with contextlib.suppress(Exception):  # the signal is passed on all the same
        faulthandler.cancel_dump_traceback_later()


class _Said:
    """What the SIGTERM work has to say, kept until the handler can say it safely."""

    def __init__(self) -> None:
        self.ended = ""  # e.g. "ended 1 open session; ", once sessions are ended
        self.failures: list[str] = []


def _say(said: _Said, finished: bool) -> None:
    outcome = "finished" if finished else "did not finish in time"
    line = f"techrevati telemetry: SIGTERM: {said.ended}flushing {outcome}"
    if not finished:
        # The worker may be stuck inside a log handler, holding its lock.
        with contextlib.suppress(OSError):
            os.write(_STDERR_FD, (line + "\n").encode("utf-8", "replace"))
        return
    try:
        _logger.warning("%s", line)
        for failure in said.failures:
            _logger.debug("SIGTERM: %s", failure)
    except Exception:  # e.g. a write to sys.stderr that the signal interrupted
        pass


def _live() -> list[tuple[Flushable, float]]:
    # No lock: the signal handler calls this on the main thread, which may be
    # inside install_sigterm_handler holding _lock. A registration racing on
    # another thread makes the copy fail; it is simply tried again.
    for _ in range(10):
        try:
            items = list(_handles.items())
        except RuntimeError:
            continue
        return [(handle, bound) for handle, bound in items if not handle.is_shut_down]
    return []


def _bound_s() -> float:
    # Each live handle is shut down within its own bound, one after another.
    return sum(bound for _, bound in _live()) + 1.0 + _fleet_bound_s()


def _fleet_bound_s() -> float:
    # Fleet settlements still waiting for Redis get their own bound (only when
    # the fleet is in use: its module is then loaded).
    outbox = sys.modules.get("techrevati.runtime.fleet.outbox")
    return float(getattr(outbox, "EXIT_FLUSH_S", 0.0)) if outbox is not None else 0.0


def _flush_fleet(said: _Said) -> None:
    limits = sys.modules.get("techrevati.runtime.fleet.limits")
    if limits is not None:
        # Calls still in flight will never report here: their holds are booked at what
        # they reserved, so they do not hold the scopes' budgets until their leases end.
        try:
            limits.settle_in_flight_at_exit()
        except Exception as error:
            said.failures.append(f"fleet holds in flight: {error!r}")
    outbox = sys.modules.get("techrevati.runtime.fleet.outbox")
    if outbox is not None:
        try:
            outbox.flush_all(outbox.EXIT_FLUSH_S)
        except Exception as error:
            said.failures.append(f"fleet flush failed: {error!r}")


def _end_and_flush(said: _Said) -> None:
    # Runs on the worker: everything it has to say goes into ``said`` (see on_sigterm).
    try:
        from ..calls.instrument import close_all_open_sessions

        closed = close_all_open_sessions("SIGTERM")
        said.ended = f"ended {closed} open session{'' if closed == 1 else 's'}; "
    except Exception as error:  # the signal must still be passed on
        said.failures.append(f"ending sessions failed: {error!r}")
    _flush_fleet(said)  # the sessions just ended may have settled fleet holds
    for handle, bound in _live():
        try:
            handle.shutdown(bound)
        except Exception as error:
            said.failures.append(f"shutdown failed: {error!r}")


class _Worker:
    """A daemon thread that does the SIGTERM work once asked; started with the handler.

    Started ahead of time so that the handler itself starts no thread: a thread
    started while the process is being stopped is one more thing that can
    stall (CPython 3.11 was seen to hang inside ``Thread.start`` there). After
    a fork, where threads do not survive, it is started again on first use.
    """

    def __init__(self, work: Callable[[_Said], object]) -> None:
        self._work = work
        self.said = _Said()
        self._go = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._wait_then_work, name="techrevati-sigterm", daemon=True
            )
            self._thread.start()

    def _wait_then_work(self) -> None:
        self._go.wait()
        try:
            self._work(self.said)
        finally:
            self._done.set()

    def run(self, timeout_s: float) -> bool:
        """Do the work (once; a second signal waits for the first) within ``timeout_s``."""
        if not self._go.is_set():
            self._ensure_started()
            self._go.set()
        return self._done.wait(timeout_s)


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(signum, frame)
        return
    # No handler before ours: die of the signal, as the process would have.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


__all__ = ["Flushable", "install_sigterm_handler"]
