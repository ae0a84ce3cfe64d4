"""Keeping Redis off the event loop: a bounded pool of I/O threads, and probe waiters.

A coroutine never waits on Redis itself: its round trips run on a few shared
threads (``run_off_loop``), so a frozen Redis stalls the coroutines that need
it, never the loop or its other tasks (a heartbeat, a health check). A call
that waits for a model's first (probe) call to settle waits on
``ProbeWaiters``: woken as soon as a call of that model settles in this
process, or after a short poll interval when the probe runs elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: Round trips of coroutines in flight at once, per process; more wait their turn
#: (without blocking the loop) instead of opening more connections.
IO_THREADS = 16

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def on_event_loop() -> bool:
    """True when this thread is running an asyncio event loop right now."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _pool() -> ThreadPoolExecutor:
    global _executor
    found = _executor
    if found is None:
        with _executor_lock:
            found = _executor
            if found is None:
                found = _executor = ThreadPoolExecutor(
                    max_workers=IO_THREADS, thread_name_prefix="techrevati-fleet-io"
                )
    return found


async def run_off_loop(fn: Callable[[], T]) -> T:
    """Run the blocking ``fn`` (one bounded Redis round trip) on the I/O threads.

    Example::

        reply = await run_off_loop(lambda: store.peek(window_ms=0, lease_ms=1000))
    """
    return await asyncio.get_running_loop().run_in_executor(_pool(), fn)


def _reset_after_fork() -> None:
    # The child has none of the parent's threads: start a fresh pool on first use.
    global _executor
    _executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class ProbeWaiters:
    """Calls waiting for a model's probe to settle, woken when one of its calls finishes.

    Example::

        waiters = ProbeWaiters()
        waiters.wait("gpt-4o", 0.25)          # a thread: returns early on wake("gpt-4o")
        await waiters.await_("gpt-4o", 0.25)  # a coroutine: never blocks the loop
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}
        self._futures: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def wait(self, model: str, timeout_s: float) -> None:
        """Block this (non-loop) thread until ``model`` settles here or ``timeout_s`` passes."""
        with self._cond:
            seen = self._versions.get(model, 0)
            self._cond.wait_for(lambda: self._versions.get(model, 0) != seen, timeout_s)

    async def await_(self, model: str, timeout_s: float) -> None:
        """Await, without blocking the loop, until ``model`` settles here or time passes."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._cond:
            self._futures.setdefault(model, []).append(entry)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                waiting = self._futures.get(model)
                if waiting is not None:
                    if entry in waiting:
                        waiting.remove(entry)
                    if not waiting:
                        del self._futures[model]

    def wake(self, model: str) -> None:
        """A call of ``model`` finished (from any thread): wake everyone waiting on it."""
        with self._cond:
            if len(self._versions) > 4096 and model not in self._versions:
                self._versions.clear()  # bounded: only waiters in progress need a version
            self._versions[model] = self._versions.get(model, 0) + 1
            self._cond.notify_all()
            woken = self._futures.pop(model, ())
        for loop, future in woken:
            # A closed loop raises RuntimeError: nobody waits there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
