"""Threads and thread pools started inside a session carry it, by default.

A new thread begins with an empty context. Without this, the calls a thread
started inside a session made belonged to no session (warned about, not
counted), and a sub-agent that opened its own session in a pool worker opened
a new top-level one: its calls escaped the budget of the session that started
it, silently. Once limits exist (``ensure_carried``, where the client guard is
switched on), ``threading.Thread.start`` and ``ThreadPoolExecutor.submit``
are wrapped: started or submitted while a session is current, the thread's
``run`` (or the submitted function) runs in a copy of the starter's context,
as ``session.wrap`` does by hand and ``asyncio.to_thread`` does for its own
threads. Outside every session nothing changes, and the wrappers cost one
context-variable read.

A pool's own worker threads are not given the context of whichever
submission happened to start them: each submitted function carries its own,
so a pool made at import time and used by many sessions attributes each call
to the session that submitted it. ``configure(carry_threads=False)`` opts out.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _pool_thread
from typing import Any

from ..limits import membership

#: Marks our wrappers, so a second install is a no-op and uninstall finds the original.
_MARK = "__techrevati_carried__"
_lock = threading.Lock()
#: ``configure(carry_threads=False)`` was asked: not installed by default.
_disabled = False
#: The names of the package's own threads.
_OURS = "techrevati-"


def _in_session() -> bool:
    scope = membership.CURRENT.get()
    return scope is not None and not scope.closed


def _wrap_start(start: Any) -> Any:
    @functools.wraps(start)
    def carried_start(self: threading.Thread) -> None:
        # A pool's worker serves every later submission, whoever submits it: an
        # executor's carry their own context (``submit`` below), not the first
        # submitter's; a ``multiprocessing.pool.ThreadPool``'s carry none. Our
        # own helpers (named ``techrevati-*``: the fleet flusher, the SIGTERM worker,
        # exports) live past the session that was current when they started, and
        # must not keep it alive.
        if _in_session() and not self.name.startswith(_OURS) and not _pool_worker(self):
            self.run = functools.partial(  # type: ignore[method-assign]
                _run_in, contextvars.copy_context(), self, self.run
            )
        start(self)

    setattr(carried_start, _MARK, start)
    return carried_start


def _pool_worker(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None)
    return target is _pool_thread._worker or (
        getattr(target, "__module__", None) == "multiprocessing.pool"
    )


def _run_in(context: contextvars.Context, thread: threading.Thread, run: Any) -> None:
    try:
        context.run(run)
    finally:
        # The thread object may outlive its run: it does not keep the session alive.
        thread.__dict__.pop("run", None)


def _wrap_submit(submit: Any) -> Any:
    @functools.wraps(submit)
    def carried_submit(
        self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        if _in_session():
            return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)  # type: ignore[no-any-return]
        return submit(self, fn, *args, **kwargs)  # type: ignore[no-any-return]

    setattr(carried_submit, _MARK, submit)
    return carried_submit


def ensure_carried() -> None:
    """Carry the current session into threads and pools started inside it, once.

    Called where limits come into being, with the client guard. Cheap after
    the first call; nothing after ``configure(carry_threads=False)``.

    Example::

        ensure_carried()
        with agent_session("planner", budget_usd=1.0, enforce_budget=True):
            pool.submit(sub_agent, "topic")   # its calls count against 'planner'
    """
    if _disabled or hasattr(threading.Thread.__dict__["start"], _MARK):
        return
    with _lock:
        if _disabled:
            return
        for owner, name, wrap in _TARGETS:
            method = owner.__dict__[name]
            if not hasattr(method, _MARK):
                setattr(owner, name, wrap(method))


def uncarry() -> None:
    """Undo ``ensure_carried`` (for tests, and ``configure(carry_threads=False)``)."""
    with _lock:
        for owner, name, _ in _TARGETS:
            original = getattr(owner.__dict__[name], _MARK, None)
            if original is not None:
                setattr(owner, name, original)


def set_carry(on: bool) -> None:
    """``configure(carry_threads=...)``: False removes the wrappers and keeps them off."""
    global _disabled
    _disabled = not on
    if not on:
        uncarry()


_TARGETS = (
    (threading.Thread, "start", _wrap_start),
    (ThreadPoolExecutor, "submit", _wrap_submit),
)

__all__ = ["ensure_carried", "set_carry", "uncarry"]
