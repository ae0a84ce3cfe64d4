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
import sys
import threading
import time

__all__ = ["DEFAULT_PROBE_WAIT_S", "Probe"]

#: How long a call waits for its model's probe before running unreserved.
DEFAULT_PROBE_WAIT_S = 30.0


class _Signal:
    """Set once, from any thread; waited for by threads (blocking) and coroutines (awaited)."""

    __slots__ = ("_event", "_lock", "_waiters")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self, timeout: float) -> bool:
        return self._event.wait(max(0.0, timeout))

    async def await_set(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._event.is_set():
                return True
            self._waiters.append((loop, future))
        # asyncio.wait, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the future completes (a session closed, its probe ended,
        # and the waiting task cancelled in one step): the task went on to send its
        # request. asyncio.wait lets the cancellation through.
        try:
            done, _ = await asyncio.wait((future,), timeout=max(0.0, timeout))
        finally:
            future.cancel()  # (a no-op once resolved; else set() has nothing to wake)
        return bool(done) or self._event.is_set()


class Probe:
    """One model's first call in flight; others of that model wait for its end."""

    __slots__ = ("_asked", "_done", "model", "owner", "started")

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = time.monotonic()
        #: The thread or asyncio task that made the call: it never waits for it.
        self.owner = strand()
        self._done = _Signal()
        #: Set once the call asked its fleet scopes (admitted or refused), or ended.
        self._asked = _Signal()

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
        self._done.set()
        self._asked.set()

    def wait(self, timeout: float) -> bool:
        """Block this thread until the probe ends or ``timeout`` passes; True if it ended."""
        return self._done.wait(timeout)

    async def await_end(self, timeout: float) -> bool:
        """Await the probe's end without blocking the loop; True if it ended in time."""
        return await self._done.await_set(timeout)

    @property
    def asked(self) -> bool:
        """True once the call asked its fleet scopes, or ended."""
        return self._asked.is_set()

    def fleet_asked(self) -> None:
        """The call asked its fleet scopes (admitted or refused there)."""
        self._asked.set()

    async def await_asked(self, timeout: float) -> bool:
        """Await ``fleet_asked`` (or the end) without blocking the loop."""
        return await self._asked.await_set(timeout)


_running_loop = asyncio._get_running_loop


def other_event_loop() -> bool:
    """Whether another library's event loop (trio's) runs on this thread: a wait here
    would stop it, and a probe's end is awaitable only on asyncio. Told by ``sniffio``,
    which the async clients' HTTP stack (``anyio``) imports when it is in use."""
    sniffio = sys.modules.get("sniffio")
    if sniffio is None:
        return False
    try:
        sniffio.current_async_library()
    except Exception:
        return False
    return True


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
