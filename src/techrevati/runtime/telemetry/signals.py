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
            from .instrument import close_all_open_sessions

            closed = close_all_open_sessions("SIGTERM")
            _logger.warning(
                "techrevati telemetry: SIGTERM: ended %d open session%s; flushing",
                closed,
                "" if closed == 1 else "s",
            )
            shutdown()
        except Exception:  # the signal must still be passed on
            _logger.debug("SIGTERM handling failed", exc_info=True)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs in the main thread between two bytecodes, maybe
        # while that thread holds a lock the work needs (a ledger's, an
        # exporter's queue): done here, the work would wait on it forever. On
        # its own thread it either finishes or, bounded, is given up on; the
        # signal is passed on either way.
        worker = threading.Thread(target=end_and_flush, name="techrevati-sigterm", daemon=True)
        worker.start()
        worker.join(timeout_s + 1.0)
        if worker.is_alive():
            _logger.warning("techrevati telemetry: SIGTERM: flushing did not finish in time")
        _pass_on(previous, signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(signum, frame)
        return
    # No handler before ours: die of the signal, as the process would have.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


__all__ = ["install_sigterm_handler"]
