"""Sessions opened in threads that a session started: a pool task's is its child.

A new thread begins with an empty context, so a sub-agent that opened its own
session in a ``ThreadPoolExecutor`` task, or on a ``threading.Thread``,
started inside a session opened a top-level session: its calls escaped the
limits of the session that started it, silently.

Once limits exist (``ensure_noted``, where the client guard is switched on),
``ThreadPoolExecutor.submit`` notes the open session with limits that
submitted each task (in a context variable of our own around the task), and
the task runs in that session (``_carry``): its calls count against the
session's limits, its spans are children of the session's span, and a
session opened in it is that session's child (``submitted_from``). The
submitter is known task by task, and a task ends with its work. Only the
session is carried, not the submitter's whole context (the rest of the
worker's context, a pool initializer's variables and decimal context
included, is left as it is), and only into a task where no session is
current already (``session.wrap``, OpenTelemetry's ``ThreadingInstrumentor``
or LangChain's context-copying executor carried one in). ``pool.map(ask,
questions)`` inside ``with agent_session(...)`` is the session's work, as an
``asyncio.gather`` of the same calls is; before, its calls escaped the
session's limits with only a warning.

A ``threading.Thread`` started with a ``target`` inside such a session is only
noted: a session opened on it warns once per starting session
(``warn_if_started_in``). It is not made a child, because a thread may be a
worker that serves later jobs of other sessions for its whole life. Threads
of known worker pools (``concurrent.futures``, ``multiprocessing.pool``, and
any ``Thread`` subclass that runs its own loop, anyio's among them) are not
noted. Outside every session the wrappers cost one context-variable read.

A pool worker's context also outlives each task: a session block a task
entered and did not exit (a handler that returned inside it, a generator
suspended inside it) stayed current on that worker, and every later task's
sessions opened under its limits. Each task ends, and begins, with no session
current on its worker (``_run_task``), warned once per role.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _pool_thread
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from ...caller import warn_aside, warn_user
from ..limits import membership

if TYPE_CHECKING:
    from .session import SessionScope

#: The session with limits that submitted the function running on this pool worker
#: (held while the task is queued or runs: a task ends with its work, and the walk to
#: an open ancestor needs the session even once it closed).
_SUBMITTED_IN: ContextVar[SessionScope | None] = ContextVar("techrevati_submitted_in", default=None)
#: The attribute a thread started inside a session with limits carries (a weak reference).
_STARTED_IN = "_techrevati_started_in"
#: Starting sessions already warned about.
_WARNED: weakref.WeakSet[SessionScope] = weakref.WeakSet()
#: Marks our wrappers, so a second install is a no-op.
_MARK = "__techrevati_noted__"
_lock = threading.Lock()


def _starter() -> SessionScope | None:
    """The session starting work here, if open and with limits.

    The current one, else (in a pool task) the one that submitted the task: work a
    pool task hands to another pool is still the submitting session's.
    """
    scope = membership.open_parent() or submitted_from()
    if scope is None:
        return None
    ledger = scope.ledger
    if ledger.max_iterations is None and not ledger.enforced():
        return None
    return scope


def _one_job(thread: threading.Thread) -> bool:
    """Whether a thread runs one function of the user's (not a pool's worker loop)."""
    target = getattr(thread, "_target", None)
    if target is None or target is _pool_thread._worker:
        return False  # a subclass's own run (anyio's workers), or an executor's worker
    return getattr(target, "__module__", None) != "multiprocessing.pool"


def _wrap_start(start: Any) -> Any:
    @functools.wraps(start)
    def noted_start(self: threading.Thread) -> None:
        # A pool's worker serves whoever submits next: an executor's submissions are
        # noted one by one (``submit`` below), not by the session that started it.
        if _one_job(self):
            starter = _starter()
            if starter is not None:
                # Weakly: a thread may outlive its session by far.
                setattr(self, _STARTED_IN, weakref.ref(starter))
        # Bound, not start(self): another wrapper installed before ours (wrapt's, as
        # OpenTelemetry's ThreadingInstrumentor uses) reads its instance from the binding.
        start.__get__(self, type(self))()

    setattr(noted_start, _MARK, True)
    return noted_start


#: Context variables a pool task leaves on its worker as it found them, with their
#: defaults, once it left a session current there (``task_scoped``).
_TASK_SCOPED: list[tuple[ContextVar[Any], Any]] = []


def task_scoped(variable: ContextVar[Any], default: object) -> None:
    """Reset ``variable`` with the session's own when a pool task leaves one current."""
    _TASK_SCOPED.append((variable, default))


def _run_task(starter: SessionScope | None, fn: Any, /, *args: Any, **kw: Any) -> Any:
    # A pool worker's context outlives each task: a session block the task entered and
    # did not exit would stay current there, and every later task's sessions would
    # open inside it (under its limits). What the task left current is undone here.
    # (Not a copy of the context per task: a task may keep its own state in the
    # worker's context for the next, a client cached per thread.)
    if membership.CURRENT.get() is not None:
        # A worker's own context holds no session: a task submitted before these
        # wrappers were installed (before the first session opened) left this one.
        _left_current(Context(), [default for _, default in _TASK_SCOPED])
    outer = otel_context.get_current()
    kept = [variable.get() for variable, _ in _TASK_SCOPED]
    token = _SUBMITTED_IN.set(starter) if starter is not None else None
    carried = _carry(starter) if starter is not None else None
    try:
        return fn(*args, **kw)
    finally:
        if token is not None:
            _SUBMITTED_IN.reset(token)
        if carried is not None and membership.CURRENT.get() is carried[0]:
            # The task left the session it was given as it found it: given back. (One it
            # left in another block's is undone below, with the leak warned about.)
            otel_context.detach(carried[2])
            membership.CURRENT.reset(carried[1])
            membership.CARRIED.reset(carried[3])
        if membership.CURRENT.get() is not None:
            _left_current(outer, kept)


def _carry(
    starter: SessionScope,
) -> (
    tuple[SessionScope, Token[SessionScope | None], Token[Context], Token[SessionScope | None]]
    | None
):
    """Run the task in the session that submitted it, unless one is current already.

    The session is made current as its own block makes it (our context variable,
    and its OpenTelemetry context: its span the parent, the session carried in
    it), so every door finds it: the processor, the client guard, the
    decorators. Not the submitter's whole context: a task submitted inside a
    running turn makes calls of its own, not the turn's request. A submitter
    that closed before the task began hands it to its nearest open ancestor, as
    a session the task opens would open under (``submitted_from``). One that
    closes while the task runs lets go of it the same way (``membership.CARRIED``):
    a task that lives on (a queue consumer a library submitted on first use)
    serves later requests, whose calls are not that session's.
    Returns (the session, the three tokens that give the worker its own back).
    """
    scope = membership.nearest_open(starter)
    if scope is None or membership.current_session() is not None:
        return None
    return (
        scope,
        membership.CURRENT.set(scope),
        otel_context.attach(scope.context),
        membership.CARRIED.set(scope),
    )


#: Roles already warned about by ``_left_current`` (bounded: role names are few).
_LEFT_WARNED: set[str] = set()


def _left_current(outer: Context, kept: list[Any]) -> None:
    left = membership.CURRENT.get()
    membership.CURRENT.set(None)
    membership.CARRIED.set(None)  # (else a closed session the task was given stays alive)
    otel_context.attach(outer)  # the worker's own context again (no token: for good)
    for (variable, _), value in zip(_TASK_SCOPED, kept, strict=True):
        variable.set(value)
    if left is None or left.closed or left.held_by:
        return  # (a generator's block goes on in the generator: found from its frame)
    if left.role in _LEFT_WARNED or len(_LEFT_WARNED) >= 256:
        return
    _LEFT_WARNED.add(left.role)
    message = (
        f"session {left.role!r} was entered in a thread-pool task and still open when the "
        "task returned (a function that returned inside its block, or a generator "
        "suspended inside it): the worker's next task starts outside it. Exit a session's "
        "block in the task that entered it"
    )
    warn_aside(left.site, message, RuntimeWarning)


def _wrap_submit(submit: Any) -> Any:
    @functools.wraps(submit)
    def noted_submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kw: Any) -> Future[Any]:
        # A pool task handing work on after its session closed: the closed session
        # still goes with it (``submitted_by``: its tools are checked against it).
        starter = _starter() or _SUBMITTED_IN.get()
        # (Only threads: an interpreter pool pickles what it runs.)
        bound = submit.__get__(self, type(self))  # (bound: as ``start`` above)
        if _threads_only(self):
            return bound(_run_task, starter, fn, *args, **kw)  # type: ignore[no-any-return]
        return bound(fn, *args, **kw)  # type: ignore[no-any-return]

    setattr(noted_submit, _MARK, True)
    return noted_submit


def _threads_only(executor: ThreadPoolExecutor) -> bool:
    interpreters = getattr(concurrent.futures, "InterpreterPoolExecutor", None)  # 3.14
    return interpreters is None or not isinstance(executor, interpreters)


def submitted_from() -> SessionScope | None:
    """The open session that submitted the pool task running here, if any.

    A session opened in the task opens under it (see ``open_session``).
    """
    # Closed before the task opened its session (fire and forget): its nearest open
    # ancestor, as for a session opened in a block that closed.
    return membership.nearest_open(_SUBMITTED_IN.get())


def submitted_by() -> SessionScope | None:
    """The session that submitted the pool task running here, open or closed (None: none).

    What a tool call in the task is checked against (``tool.tool_session``).
    """
    return _SUBMITTED_IN.get()


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
    starter_ref = getattr(threading.current_thread(), _STARTED_IN, None)
    starter = starter_ref() if starter_ref is not None else None
    if starter is None or starter.closed or starter in _WARNED:
        return
    _WARNED.add(starter)
    warn_user(
        f"session {role!r} was opened on a thread that session {starter.role!r} (with "
        f"limits) started: a thread does not carry the session that started it, so "
        f"{role!r} is a top-level session and its calls are not counted against the "
        f"limits of {starter.role!r}. To make it a child of {starter.role!r}, start the "
        f"thread with that session's wrap(fn), or submit the work to a ThreadPoolExecutor",
        RuntimeWarning,
    )


__all__ = ["ensure_noted", "submitted_by", "submitted_from", "warn_if_started_in"]
