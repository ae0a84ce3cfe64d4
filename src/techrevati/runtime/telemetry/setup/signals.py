"""Opt-in SIGTERM handling: end open sessions, flush, print the report, then stop.

A library should not take signals by default, so this runs only when asked:
``configure(handle_sigterm=True)``. On SIGTERM (what ``docker stop``, systemd
and Kubernetes send) the handler ends every open session (their spans end as
``cancelled``), flushes the telemetry within ``shutdown_timeout`` and prints
the report, then hands the signal on: to the handler that was installed
before, or, with none, back to the default so the process still dies of
SIGTERM (exit status 143 / -15) as its supervisor expects.

Example::

    configure(handle_sigterm=True)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_logger = logging.getLogger(__name__)


def install_sigterm_handler(shutdown: Callable[[], object], timeout_s: float = 10.0) -> bool:
    """Install the handler; ``shutdown`` flushes and reports. False when it cannot be.

    Only the main thread may install signal handlers; a SIGTERM that was set to
    be ignored stays ignored. The handler waits at most ``timeout_s`` (plus a
    second) for the sessions to end and ``shutdown`` to return, then passes the
    signal on whatever happened.
    """
    if threading.current_thread() is not threading.main_thread():
        _logger.warning(
            "configure(handle_sigterm=True) must be called from the main thread; "
            "SIGTERM is not handled"
        )
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        _logger.info("SIGTERM is ignored in this process; leaving it so")
        return False

    def end_and_flush() -> None:
        try:
            from ..calls.instrument import close_all_open_sessions

            closed = close_all_open_sessions("SIGTERM")
            _logger.warning(
                "techrevati telemetry: SIGTERM: ended %d open session%s; flushing",
                closed,
                "" if closed == 1 else "s",
            )
            shutdown()
        except Exception:  # the signal must still be passed on
            _logger.debug("SIGTERM handling failed", exc_info=True)

    worker = _Worker(end_and_flush)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs in the main thread between two bytecodes, maybe
        # while that thread holds a lock the work needs (a ledger's, an
        # exporter's queue): done here, the work would wait on it forever. On
        # the worker it either finishes or, bounded, is given up on; the signal
        # is passed on either way.
        if not worker.run(timeout_s + 1.0):
            _logger.warning("techrevati telemetry: SIGTERM: flushing did not finish in time")
        _pass_on(previous, signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


class _Worker:
    """A daemon thread that does the SIGTERM work once asked; started with the handler.

    Started ahead of time so that the handler itself starts no thread: a thread
    started while the process is being stopped is one more thing that can
    stall (CPython 3.11 was seen to hang inside ``Thread.start`` there). After
    a fork, where threads do not survive, it is started again on first use.
    """

    def __init__(self, work: Callable[[], object]) -> None:
        self._work = work
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
            self._work()
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


__all__ = ["install_sigterm_handler"]
