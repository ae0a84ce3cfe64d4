"""The probe rule: a model's first call under an enforced budget runs alone.

When nothing says what a call of a model costs (no usage up front, no learned
cost, no ``call_estimate_usd``, no request the client guard could read), the
ledger admits one call of that model as a *probe* and holds the others until
it settles (then they reserve the learned cost) or fails (then the next one
probes). Each wait is bounded by the ledger's ``probe_wait_s``; after that the
call runs unreserved, as when nothing was known before.

Waits never block an event loop: a thread waits on a ``threading.Event`` with
a timeout, a coroutine awaits an ``asyncio`` future that the probe's end sets
from whatever thread settles it (``call_soon_threadsafe``).

Example::

    probe = Probe("gpt-4o-mini")
    # another thread: probe.wait(5.0)  /  a coroutine: await probe.await_end(5.0)
    probe.end()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

__all__ = ["DEFAULT_PROBE_WAIT_S", "Probe"]

#: How long a call waits for its model's probe before running unreserved.
DEFAULT_PROBE_WAIT_S = 30.0


class Probe:
    """One model's first call in flight; others of that model wait for its end."""

    __slots__ = ("_done", "_lock", "_waiters", "model", "owner", "started")

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = time.monotonic()
        #: The thread or asyncio task that made the call: it never waits for it.
        self.owner = strand()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def ended(self) -> bool:
        """True once the probe settled or failed."""
        return self._done.is_set()

    def lost(self, after_s: float) -> bool:
        """True when the probe is still open ``after_s`` after it started: its call was
        abandoned (a stream never read to its end) or hangs. Every waiter has given up
        by then, so the next call probes anew instead of waiting for it too."""
        return not self.ended and time.monotonic() - self.started >= after_s

    def end(self) -> None:
        """The probe settled or failed: wake every waiter (threads and coroutines)."""
        with self._lock:
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self, timeout: float) -> bool:
        """Block this thread until the probe ends or ``timeout`` passes; True if it ended."""
        return self._done.wait(max(0.0, timeout))

    async def await_end(self, timeout: float) -> bool:
        """Await the probe's end without blocking the loop; True if it ended in time."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return True
            self._waiters.append((loop, future))
        # asyncio.wait, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the future completes (a session closed, its probe ended,
        # and the waiting task cancelled in one step): the task went on to send its
        # request. asyncio.wait lets the cancellation through.
        try:
            done, _ = await asyncio.wait((future,), timeout=max(0.0, timeout))
        finally:
            future.cancel()  # (a no-op once resolved; else end() has nothing to wake)
        return bool(done) or self._done.is_set()


_running_loop = asyncio._get_running_loop


def strand() -> object:
    """The thread or asyncio task running now: overlapping spans of one request share
    it, and a probe's own strand never waits for it."""
    # Asked on every library span: outside a running loop, current_task() raises,
    # and raising costs ~15x the plain check for a loop.
    task = asyncio.current_task() if _running_loop() is not None else None
    return task if task is not None else threading.get_ident()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ProbeWait(Exception):
    """Raised by an admission that must wait for ``probe`` (nothing was counted)."""

    def __init__(self, probe: Probe, timeout: float) -> None:
        super().__init__(f"waiting for the first call of {probe.model!r} to settle")
        self.probe = probe
        self.timeout = timeout
