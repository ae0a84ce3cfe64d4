"""A session opened on a thread that another session started says it is not that one's child.

A new thread begins with an empty context. A sub-agent that opens its own
session in a ``ThreadPoolExecutor`` task, or on a ``threading.Thread``,
started inside a session opens a top-level session: its calls count against
its own limits only, not against those of the session that started it. The
session is not carried in by default: a long-lived worker thread (or a
long-running submitted loop) would then serve every later job under whichever
session happened to start it, refused by that session's limits after it
closed. It is carried where the user says so (``session.wrap``,
``ThreadingInstrumentor``), and said where it is not.

So, once limits exist (``ensure_noted``, where the client guard is switched
on), ``Thread.start`` and ``ThreadPoolExecutor.submit`` note which session
with limits was current when they started the work: a weak reference on the
thread, or in a context variable of our own around the submitted function
(nothing else in the thread's context changes, and nothing is kept alive).
A session that then opens there with no parent warns once per starting
session (``warn_if_started_in``). Outside every session the wrappers cost one
context-variable read.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _pool_thread
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ...caller import user_stacklevel
from ..limits import membership

if TYPE_CHECKING:
    from .session import SessionScope

#: The session with limits that submitted the function running on this pool worker.
_SUBMITTED_IN: ContextVar[weakref.ref[SessionScope] | None] = ContextVar(
    "techrevati_submitted_in", default=None
)
#: The attribute a thread started inside a session with limits carries (a weak reference).
_STARTED_IN = "_techrevati_started_in"
#: Starting sessions already warned about.
_WARNED: weakref.WeakSet[SessionScope] = weakref.WeakSet()
#: Marks our wrappers, so a second install is a no-op.
_MARK = "__techrevati_noted__"
_lock = threading.Lock()


def _starter() -> weakref.ref[SessionScope] | None:
    """The current session, if it is open and has limits (a weak reference)."""
    scope = membership.CURRENT.get()
    if scope is None or scope.closed:
        return None
    ledger = scope.ledger
    if ledger.max_iterations is None and not ledger.enforced():
        return None
    return weakref.ref(scope)


def _wrap_start(start: Any) -> Any:
    @functools.wraps(start)
    def noted_start(self: threading.Thread) -> None:
        # A pool's worker serves whoever submits next: its submissions are noted
        # one by one (``submit`` below), not by the session that started the thread.
        if getattr(self, "_target", None) is not _pool_thread._worker:
            starter = _starter()
            if starter is not None:
                setattr(self, _STARTED_IN, starter)
        # Bound, not start(self): another wrapper installed before ours (wrapt's, as
        # OpenTelemetry's ThreadingInstrumentor uses) reads its instance from the binding.
        start.__get__(self, type(self))()

    setattr(noted_start, _MARK, True)
    return noted_start


def _run_submitted(starter: weakref.ref[SessionScope], fn: Any, /, *args: Any, **kw: Any) -> Any:
    token = _SUBMITTED_IN.set(starter)
    try:
        return fn(*args, **kw)
    finally:
        _SUBMITTED_IN.reset(token)


def _wrap_submit(submit: Any) -> Any:
    @functools.wraps(submit)
    def noted_submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kw: Any) -> Future[Any]:
        starter = _starter()
        # (Only threads: an interpreter pool pickles what it runs.)
        bound = submit.__get__(self, type(self))  # (bound: as ``start`` above)
        if starter is not None and _threads_only(self):
            return bound(_run_submitted, starter, fn, *args, **kw)  # type: ignore[no-any-return]
        return bound(fn, *args, **kw)  # type: ignore[no-any-return]

    setattr(noted_submit, _MARK, True)
    return noted_submit


def _threads_only(executor: ThreadPoolExecutor) -> bool:
    return type(executor).__module__ != "concurrent.futures.interpreter"


def ensure_noted() -> None:
    """Note which session starts threads and pool work from now on, once.

    Called where limits come into being, with the client guard. Cheap after
    the first call.

    Example::

        ensure_noted()
    """
    if hasattr(threading.Thread.__dict__["start"], _MARK):
        return
    with _lock:
        for owner, name, wrap in (
            (threading.Thread, "start", _wrap_start),
            (ThreadPoolExecutor, "submit", _wrap_submit),
        ):
            method = owner.__dict__[name]
            if not hasattr(method, _MARK):
                setattr(owner, name, wrap(method))


def warn_if_started_in(role: str) -> None:
    """Warn once per starting session when a top-level session opens on a thread it started.

    Asked only for a session that opens with no parent (see ``open_session``).
    """
    starter_ref = _SUBMITTED_IN.get()
    how = "submitted a function to a ThreadPoolExecutor"
    if starter_ref is None:
        starter_ref = getattr(threading.current_thread(), _STARTED_IN, None)
        how = "started a threading.Thread"
    starter = starter_ref() if starter_ref is not None else None
    if starter is None or starter.closed or starter in _WARNED:
        return
    _WARNED.add(starter)
    warnings.warn(
        f"session {role!r} was opened on a thread where session {starter.role!r} (with "
        f"limits) {how}: a thread does not carry the session that started it, so "
        f"{role!r} is a top-level session and its calls are not counted against the "
        f"limits of {starter.role!r}. To make it a child of {starter.role!r}, run the "
        f"thread's work under that session's wrap(fn), or carry the OpenTelemetry "
        "context into threads (ThreadingInstrumentor from "
        "opentelemetry-instrumentation-threading)",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )


__all__ = ["ensure_noted", "warn_if_started_in"]
