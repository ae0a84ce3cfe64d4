"""Which session, and which model call, a span belongs to: decided here only.

Three facts place a span, in this order:

1. its parent span is open and known (``OPEN``, keyed by trace id and span id,
   so spans of several providers never collide);
2. the OpenTelemetry context it starts in carries our turn (``CALL_KEY``): a
   library span under our turn belongs to that turn even when a span from a
   provider we never saw sits between them;
3. the session active in this thread or task (``CURRENT``, the one context
   variable that means "the current session"), else the process root (set by
   ``configure(fleet=...)``, so every call in the process counts).

The client guard asks which call a client request is: a model span of that
request open on this strand (the library span started last here,
``strand_request``, else the one current here, ``request_span``), else a call
the guard admits itself (``admit_request``), placed like a library span; a
library span of the same request that starts later on the strand is that call
(``_guard_call_here``), as is one known as a model call only at its end
(``guard_call_during``).

Our own turns and tools ask ``current_session`` the same question: the context
variable, else the session owning the current OpenTelemetry span (a thread
that attached the session's OTel context), else none. A call that finds none
while a session with limits is open on another thread warns once per session
(``note_outside``).

A model span is then either a new call (admitted against the ledger chain) or
the same call as an enclosing one: the first library model span inside our
turn is the request that turn makes; a library model span inside another
library model span describes the same request. Our own turns are always new
calls, however deeply nested.

Our core admits its own turns before starting their spans (``enclosing_context``
then ``admit_call``), so the same rule holds whether or not a processor ever
sees the span (SDK disabled, a no-op provider, a sampler that drops it); the
limits processor places every other instrumentation's spans through
``enclosing`` and the same ``admit_call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import TYPE_CHECKING, ClassVar

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext

# The key the OTel API stores the current span under (``set_span_in_context``
# writes it); read here to build a turn's context in one step.
from opentelemetry.trace.propagation import _SPAN_KEY

from ...caller import UserSite, app_site, warn_at, warn_site
from ...usage_tracking import UsageTracker, usd_text
from .. import semconv as sc
from ..readings.recognise import CALLBACK_SCOPES, is_same_call, same_model
from ..readings.sdk_attributes import write_known
from . import remote
from .ledger import (
    BREAKERS_HELD,
    Claim,
    FleetLevel,
    Ledger,
    breaker_abandoned,
    breaker_admit_call,
    breaker_held,
)
from .probe import _ProbeWait
from .probe import strand as current_strand

_log = logging.getLogger("techrevati.runtime.limits")

if TYPE_CHECKING:
    from ..calls.session import SessionScope

#: The OTel context key under which our turn's entry travels with its context.
CALL_KEY = otel_context.create_key("techrevati-call")
#: The OTel context key under which a session's entry travels with every context
#: derived from the session's own: spans started under it may end before a thread
#: that captured the context runs, so the span ancestry alone can lose the session.
SESSION_KEY = otel_context.create_key("techrevati-session")

SpanKey = tuple[int, int]


@dataclass(eq=False, slots=True)
class SpanEntry:
    """What we know about one open span: its session's ledger and its model call."""

    ledger: Ledger
    #: The model call this span is, or is inside (None: not inside any call).
    call: Claim | None = None
    #: True when the span is itself a model-call span.
    model_span: bool = False
    #: True when the span describes the same request as its enclosing call.
    same_call: bool = False
    key: SpanKey | None = None
    #: True for a library model span and the spans inside it (same request).
    in_library: bool = False
    #: The last library model span started directly under this span, and on
    #: which thread or task (see ``_open_sibling``).
    sibling: tuple[SpanEntry, object] | None = None
    #: True for a tool-call span and the spans inside it: a tool span in there
    #: describes the same call (two instrumentations), not a new one.
    in_tool: bool = False
    #: True for another instrumentation's tool-call span that loop detection counts.
    tool_call: bool = False
    #: The tool-call span this span is inside (None: none, or this span is one, when
    #: ``in_tool``): the model calls made in there are that tool call's turns.
    tool_entry: SpanEntry | None = None
    #: On a tool-call span's entry: the serial of the last model call made inside it (0:
    #: none); the tool calls made inside it count repetition in those turns (a sub-agent
    #: run as a tool; ``limits/loops.step_of``).
    turn: int = 0
    #: The other instrumentation's tool-call span this span is inside (None: none, or
    #: this span is one): a tool call of ours started in there is that same call.
    outer_tool: SpanEntry | None = None
    #: True when one of our tool calls ran inside this span: if it is another
    #: instrumentation's tool span, it describes that call, counted by ours already.
    counted_inside: bool = False
    #: The client request (its idempotency key) the guard matched to this call.
    request: object = None
    #: The instrumentation scope of a library model span ("" for ours and the guard's).
    producer: str = ""
    #: True for a call the client guard itself admitted (no span announced it).
    by_guard: ClassVar[bool] = False


@dataclass(eq=False, slots=True)
class GuardEntry(SpanEntry):
    """A call the client guard admitted itself: no span announced its request."""

    by_guard: ClassVar[bool] = True
    #: When the guard admitted it (``time.time_ns``, comparable with span start times).
    since: int = 0


#: Open spans inside sessions. Plain dict operations are atomic in CPython.
OPEN: dict[SpanKey, SpanEntry] = {}

#: Model spans still in flight when their session closed: kept (bounded) so
#: their usage, when it arrives, is booked into the ledger chain exactly once.
LATE: dict[SpanKey, SpanEntry] = {}
LATE_LIMIT = 4096
#: Calls pushed out of a full LATE table (booked at an estimate then).
LATE_EVICTED = 0

#: Serials of model calls made inside tool calls (``SpanEntry.turn``).
_TOOL_TURNS = itertools.count(1)

#: The session active in this thread or task.
CURRENT: ContextVar[SessionScope | None] = ContextVar("techrevati_session", default=None)

#: The last library model call started on this thread or task (the guard's view
#: of "a model span of this request is open on this strand").
#: The session a thread-pool task was given when it began (``threads._carry``), as
#: opposed to one entered there: once it closed, the task's later calls are not its
#: (a long-lived task, a queue consumer started on first use, serves later requests),
#: but its nearest open ancestor's, else no session's (``_given_up``).
CARRIED: ContextVar[SessionScope | None] = ContextVar("techrevati_carried", default=None)
STRAND: ContextVar[SpanEntry | None] = ContextVar("techrevati_strand_call", default=None)

_running_loop = asyncio._get_running_loop

#: Set when ``configure(fleet=...)`` makes every model call in the process count.
_process_root: list[Ledger] = []

#: Library calls admitted lately are kept per ledger (``Ledger.recent``: wall-clock ns,
#: claim); a span known as a model call only at its end looks there for the call it
#: describes (``late_same_call``). Enough for every call in flight in one session at
#: once; older ones have ended.
RECENT_LIMIT = 64


def call_context(span: Span, entry: SpanEntry, parent: Context | None) -> Context:
    """The context a turn runs in: its span current, and its entry under ``CALL_KEY``.

    The same as ``set_value(CALL_KEY, entry, set_span_in_context(span, parent))``
    in one copy of the parent context instead of two: this runs on every turn.
    """
    base = parent if parent is not None else otel_context.get_current()
    return Context({**base, _SPAN_KEY: span, CALL_KEY: entry})


def key_of(context: SpanContext | None) -> SpanKey | None:
    """The table key of a span context, or None for an invalid (all-zero) one."""
    # The API's SpanContext is a tuple (trace_id, span_id, ...): indexed here and in
    # the per-span functions below, which skips two property calls per lookup.
    if context is None or not context[1]:
        return None
    return (context[0], context[1])


#: Session blocks a sync generator's frame holds (``with`` blocks inside the generator),
#: by the frame's id: (the frame's code, its blocks' sessions weakly, innermost last). A
#: generator resumed in another context (Starlette runs each ``next()`` of a streamed
#: response in a fresh copy of the request's context, on a worker thread) has lost its
#: blocks' sessions from its context after its first ``yield``; its frame, on the stack
#: of the code it runs, still says them. Read only where no context says a session, or
#: where the one it says is closed or has such a block below it
#: (``SessionScope.held_below``). The frame itself is not kept: a generator left with a
#: block entered by hand keeps its locals (the session) as long as its frame lives.
GENERATOR_BLOCKS: dict[int, tuple[CodeType, list[weakref.ref[SessionScope]]]] = {}
#: How far up the stack a generator holding a block is looked for.
GENERATOR_DEPTH = 256


def hold_in_generator(scope: SessionScope, frame: FrameType) -> tuple[SessionScope, ...]:
    """Note that the ``with`` block of ``scope`` is in the sync generator ``frame``.

    Returns the ancestors whose ``held_below`` it raised (``release_held`` lowers them).
    """
    held = GENERATOR_BLOCKS.get(id(frame))
    if held is None or held[0] is not frame.f_code:
        held = GENERATOR_BLOCKS[id(frame)] = (frame.f_code, [])
    held[1].append(weakref.ref(scope))
    scope.held_by = id(frame)
    above: list[SessionScope] = []
    parent = scope.parent
    while parent is not None:
        parent.held_below += 1
        above.append(parent)
        parent = parent.parent
    return tuple(above)


def release_held(key: int, above: tuple[SessionScope, ...]) -> None:
    """A block held in a generator ended, or its session was collected while open."""
    held = GENERATOR_BLOCKS.get(key)
    if held is not None:
        held[1][:] = [ref for ref in held[1] if (found := ref()) is not None and not found.closed]
        if not held[1]:
            GENERATOR_BLOCKS.pop(key, None)
    for parent in above:
        parent.held_below -= 1


def in_generator_block() -> SessionScope | None:
    """The innermost open session whose block a sync generator on this stack holds."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(GENERATOR_DEPTH):
        if frame is None:
            return None
        held = GENERATOR_BLOCKS.get(id(frame))
        if held is not None and held[0] is frame.f_code:
            for ref in reversed(held[1]):
                scope = ref()
                if scope is not None and not scope.closed:
                    return scope
        frame = frame.f_back
    return None


def _held_inside(scope: SessionScope) -> SessionScope | None:
    """An open session a generator on this stack holds a block of, if it replaces ``scope``:
    one below it, or any once ``scope`` is closed (a context copied before it closed)."""
    held = in_generator_block()
    if held is None or held is scope:
        return None
    if scope.closed:
        return held
    above = held.parent
    while above is not None:
        if above is scope:
            return held
        above = above.parent
    return None


def held_below(entry: SpanEntry) -> SpanEntry:
    """``entry``, or the session entry a generator on this stack holds a block of below it."""
    scope: SessionScope | None = entry.ledger.session()
    if scope is not None and (scope.held_below or scope.closed):
        held = _held_inside(scope)
        if held is not None:
            return held.entry
    return entry


def current_session() -> SessionScope | None:
    """Which session a call made here is in: the one answer every door uses.

    1. our context variable (the session block entered in this thread or task,
       or copied into it by ``asyncio``, ``to_thread``, ``anyio``,
       ``session.wrap``);
    2. else the session that owns the current OpenTelemetry span, at any depth
       we know (a thread that attached the session's OTel context with
       ``context.attach`` or OpenTelemetry's ``ThreadingInstrumentor``);
    3. else None: the call counts against the process root, if any.

    A session may already be closed here and still be current: a stream that
    began inside its block and is read after it, or a block exited from
    another task. Calls made then still count against its ledger chain.

    Example::

        with agent_session("writer", max_iterations=2):
            ctx = otel_context.get_current()
            def worker():
                token = otel_context.attach(ctx)   # what ThreadingInstrumentor does
                assert current_session() is not None
                otel_context.detach(token)
    """
    scope = CURRENT.get()
    if scope is None:
        scope = session_in(otel_context.get_current())
        if scope is None:
            return in_generator_block() if GENERATOR_BLOCKS else None
    elif scope.closed and CARRIED.get() is scope:
        return _given_up(scope)
    if scope.held_below or (scope.closed and GENERATOR_BLOCKS):
        # A generator's block below it, or since it closed, may be the one running here.
        return _held_inside(scope) or scope
    return scope


def session_in(context: Context) -> SessionScope | None:
    """The session that owns the span current in ``context`` (or the turn it carries)."""
    span: Span | None = context.get(_SPAN_KEY)  # type: ignore[assignment]
    if span is not None:
        known = span.get_span_context()
        entry = OPEN.get((known.trace_id, known.span_id)) if known.span_id else None
        if entry is None:
            # A span of a provider our processor does not see: its parent may be ours.
            parent = getattr(span, "parent", None)
            if isinstance(parent, SpanContext) and parent.span_id:
                entry = OPEN.get((parent.trace_id, parent.span_id))
        if entry is not None:
            owner: SessionScope | None = entry.ledger.session()
            return owner
    carried = context.get(CALL_KEY)
    if not isinstance(carried, SpanEntry):
        carried = context.get(SESSION_KEY)
    if isinstance(carried, SpanEntry):
        found: SessionScope | None = carried.ledger.session()
        return found
    return None


def nearest_open(scope: SessionScope | None) -> SessionScope | None:
    """``scope`` if still open, else its nearest open ancestor (None: none)."""
    while scope is not None and scope.closed:
        scope = scope.parent
    return scope


def given_up_here() -> SessionScope | None:
    """The session this pool task was given, if it has closed since (else None)."""
    scope = CURRENT.get()
    if scope is not None and scope.closed and CARRIED.get() is scope:
        return scope
    return None


def _given_up(scope: SessionScope) -> SessionScope | None:
    """Where a pool task's calls go once the session it was given closed: that
    session's nearest open ancestor, else none (the process root, if any)."""
    return nearest_open(scope.parent)


def parent_for(session: SessionScope) -> Context | None:
    """The context a span of ``session`` starts in: None (the current one) when the
    session is the one here, else the session's own context (a call made for a
    session from a thread or task that is not in it, e.g. ``session.run_turn``).
    """
    current = CURRENT.get()
    if current is session:
        return None
    if current is None and session_in(otel_context.get_current()) is session:
        return None
    return session.context


# -- calls that escape every session ------------------------------------------

#: Ledgers of open sessions with enforced limits (a cap or an enforced budget).
_LIMITED: weakref.WeakSet[Ledger] = weakref.WeakSet()


def watch_escapes(ledger: Ledger) -> None:
    """Remember an open session with limits, to warn about calls that escape it."""
    if ledger.max_iterations is not None or ledger.enforced():
        ledger.opened_on = threading.get_ident()
        _LIMITED.add(ledger)


#: The lines of user code already warned about by ``note_outside`` (bounded).
_OUTSIDE_WARNED: set[tuple[str, int]] = set()


def note_outside(what: str = "a model call") -> None:
    """A call found no session while limited sessions are open on other threads: warn
    once per line of user code that makes such calls.

    Cheap when nothing with limits is open (one truth test). Which open session
    the call was meant for cannot be known (in a service, another request's
    session may be open meanwhile): the message names the open ones as
    candidates, and the remedies.
    """
    if not _LIMITED:
        return
    here = threading.get_ident()
    roles = sorted({ledger.role or "?" for ledger in list(_LIMITED) if ledger.opened_on != here})
    if not roles:
        return
    # The application's line, past a framework's (LangChain's model call is made in
    # langchain_openai, whatever line of the application runs the agent).
    site = app_site()
    key = (site.filename, site.lineno) if site is not None else ("", 0)
    if key in _OUTSIDE_WARNED:
        return
    if len(_OUTSIDE_WARNED) >= 1024:
        _OUTSIDE_WARNED.clear()  # bounded: a line then warns once more
    _OUTSIDE_WARNED.add(key)
    if len(roles) == 1:
        which = f"session {roles[0]!r} (with enforced limits) is open on another thread"
        its = "that session's limits"
    else:
        named = ", ".join(repr(role) for role in roles[:3])
        more = f" and {len(roles) - 3} more" if len(roles) > 3 else ""
        which = f"sessions {named}{more} (with enforced limits) are open on other threads"
        its = "the limits of the one it belongs to"
    message = (
        f"{what} ran on thread {threading.current_thread().name!r} outside any session "
        f"while {which}: if it is part of one, it is not counted against {its}. Run the "
        "function with session.wrap(fn), or carry the OpenTelemetry context into threads "
        "(ThreadingInstrumentor from opentelemetry-instrumentation-threading); a session "
        "opened in a web framework's sync dependency (FastAPI's Depends with yield) is "
        "not current in the endpoint: open it in an async dependency or in the endpoint"
    )
    warn_site(site, message, RuntimeWarning)


def open_parent() -> SessionScope | None:
    """The session a new session opens under: the innermost one still open."""
    scope = nearest_open(CURRENT.get())
    if GENERATOR_BLOCKS:
        if scope is None:
            return in_generator_block()  # a block a generator on this stack holds
        if scope.held_below:
            return _held_inside(scope) or scope
    return scope


def process_root() -> Ledger | None:
    """The process-wide ledger ``configure(fleet=...)`` installed, if any."""
    return _process_root[0] if _process_root else None


def set_process_root(ledger: Ledger | None) -> None:
    """Install (or remove, with None) the process-wide ledger."""
    _process_root.clear()
    if ledger is not None:
        _process_root.append(ledger)


def root_for_context(context: Context) -> Ledger | None:
    """The ledger a call outside any local session counts against.

    The remote shared session ``context``'s baggage names (``configure(session_store=...)``),
    else the process root of ``configure(fleet=...)``, else none.
    """
    root = process_root()
    return remote.remote_root(context, root) or root


def install_fleet(fleet: tuple[FleetLevel, ...]) -> None:
    """Make every model call in the process count against ``fleet`` (``configure(fleet=...)``).

    Sessions opened afterwards with no parent session hang under this root,
    and calls outside any session are admitted against it directly.
    """
    if not fleet:
        set_process_root(None)
        return
    set_process_root(Ledger(UsageTracker(retain_turns=0), fleet=fleet))


def enclosing(
    parent: SpanContext | None, context: Context | None, walk: bool = True
) -> SpanEntry | None:
    """The entry a new span starts under (rules 1-3 of the module docstring).

    ``walk=False``: where nothing says a session, no generator is looked for on the
    stack (the limits processor asks only for spans it knows are model calls).
    """
    if parent is not None and parent[1]:  # (trace_id, span_id, ...): see key_of
        found = OPEN.get((parent[0], parent[1]))
        if found is not None:
            return held_below(found) if walk and GENERATOR_BLOCKS else found
    return _carried(context if context is not None else otel_context.get_current(), walk)


def _open_span_entry(context: Context) -> SpanEntry | None:
    """The entry of the span current in ``context``, if it is one of ours still open."""
    span: Span | None = context.get(_SPAN_KEY)  # type: ignore[assignment]
    if span is None:
        return None
    current = span.get_span_context()
    if not current[1]:  # (trace_id, span_id, ...): see key_of
        return None
    return OPEN.get((current[0], current[1]))


def enclosing_context(context: Context | None) -> SpanEntry | None:
    """The entry a span started in ``context`` (the current one when None) starts under."""
    values = context if context is not None else otel_context.get_current()
    found = _open_span_entry(values)
    if found is not None:
        return held_below(found) if GENERATOR_BLOCKS else found
    return _carried(values)


def owner_in_context(context: Context) -> SpanEntry | None:
    """The session or call whose span is current in ``context``, or that it carries.

    Never the process root or a remote session (``enclosing_context`` falls back
    to those): a lookup of this process's tables only, no store round trip.
    """
    found = _open_span_entry(context)
    if found is not None:
        return found
    for key in (CALL_KEY, SESSION_KEY):
        carried = context.get(key)
        if isinstance(carried, SpanEntry):
            return carried
    return None


def _carried(context: Context, walk: bool = True) -> SpanEntry | None:
    # Rules 2 and 3: the turn the context carries, else the current session or root.
    carried = context.get(CALL_KEY)
    if isinstance(carried, SpanEntry):
        return held_below(carried) if walk and GENERATOR_BLOCKS else carried
    scope = CURRENT.get()
    if scope is not None:
        if scope.closed and CARRIED.get() is scope:
            above = _given_up(scope)
            if above is not None:
                return above.entry
            root = root_for_context(context)
            return SpanEntry(root) if root is not None else None
        if walk and (scope.held_below or (scope.closed and GENERATOR_BLOCKS)):
            held = _held_inside(scope)
            if held is not None:
                return held.entry
        return scope.entry
    session = context.get(SESSION_KEY)
    if isinstance(session, SpanEntry):
        return held_below(session) if walk and GENERATOR_BLOCKS else session
    if walk and GENERATOR_BLOCKS:
        found = in_generator_block()
        if found is not None:
            return found.entry
    root = root_for_context(context)
    return SpanEntry(root) if root is not None else None


def admit_call(
    under: SpanEntry,
    model: str,
    expected: float,
    ours: bool,
    priced: bool = True,
    force: bool = False,
    defer_fleet: bool = False,
    probe: bool = False,
    by_guard: bool = False,
    producer: str = "",
    lead: bool = False,
) -> SpanEntry:
    """Place a model span under ``under``: the same call, or a new admitted one.

    May raise the refusal (cap, budget, unpriced, fleet); nothing is counted
    then. ``force`` counts a call that can no longer be refused (a span known
    to be a model call only when it ended). ``defer_fleet`` admits at the
    local levels only; the caller then awaits ``Ledger.areserve_fleet``.
    ``by_guard``: the client guard's own request, not a span; a new call's
    entry is then a ``GuardEntry`` (see ``admit_request``). ``producer``: the
    instrumentation scope of a library span (see ``_open_sibling``).
    """
    outer = under.call
    if not ours:
        # Each helper below is asked only when its cheap first condition holds (the
        # guard's own call on this strand; a sibling span still open): on every
        # library model call, usually neither does.
        found = STRAND.get()
        if found is not None and found.by_guard:
            guarded = _guard_call_here(model)
            if guarded is not None and guarded.call is not None:
                # The guard admitted this request before its library span started.
                return _library_entry(under, guarded.call, True, producer)
        elif WAITING and found is not None and found.call is None:
            follower = _follow(found, model, producer)
            if follower is not None:
                return follower
        # The nesting rule (one place: recognise.is_same_call). Inside a library
        # model span the enclosing call is that library call, even when it is
        # the one our turn absorbed.
        enclosing_ours = None if outer is None else outer.ours and not under.in_library
        last = under.sibling
        sibling = (
            _open_sibling(under, model, producer)
            if last is not None and last[0].key in OPEN
            else None
        )
        if sibling is not None and (outer is None or enclosing_ours):
            # Overlapping a library span of the same request on this strand.
            return _library_entry(under, sibling, True, producer)
        if (
            outer is not None
            and outer.open  # a context carried past its call's end: a call of its own
            and is_same_call(
                ours=False, enclosing_ours=enclosing_ours, enclosing_taken=outer.absorbed
            )
        ):
            outer.absorbed = True
            return _library_entry(under, outer, True, producer)
    ledger = under.ledger
    if not priced and model and ledger.has_budget() and not ledger.enforced():
        ledger.warn_unpriced(model)
    # Positional (ours, priced, force, defer_fleet, probe), here and at the other calls
    # made for every model call: passing keywords costs ~90 ns more a call. A call
    # inside a running call never waits for a probe: the probe may be the very call
    # it runs in.
    if ledger.breaker is not None and not ours and not force and (outer is None or not outer.open):
        # A new call of a session with a breaker, by another door than our turns (whose
        # permit the turn holds; a call inside a running turn, or inside any running
        # call, is that call's): the breaker admits it first, as it does a turn
        # (``ledger.breaker_admit_call``). A call whose context outlived the call it was
        # made in (a thread or task started by a turn that has ended) is a new call.
        claim = _admit_through_breaker(
            ledger, model, expected, priced, defer_fleet, probe, by_guard, lead and outer is None
        )
    else:
        # (``lead``: a first call of its model that may wait for its lead, see Ledger.admit;
        # as for a probe, never a call inside a running call: that may be the one waited for.)
        top = outer is None
        claim = ledger.admit(
            model, expected, ours, priced, force, defer_fleet, probe and top, lead and top
        )
    if not under.in_tool:
        # A new model turn: the tool calls after it are its reply's. (A model call a tool
        # makes is part of that tool call, not a turn of the agent's.) Unlocked: a lost
        # increment still changes the count, which is all a turn is compared by.
        ledger.turns += 1
    else:
        # A turn of the tool calls made inside that tool call (a sub-agent run as a
        # tool): a serial no other turn gets.
        (under.tool_entry or under).turn = next(_TOOL_TURNS)
    if outer is not None:
        outer.inner = True
    if ours:
        return SpanEntry(ledger, claim, True, False)
    if not force:
        # Noted for the late spans that match admitted calls (``late_same_call``).
        recent = ledger.recent
        if recent is None:
            recent = _new_recent(ledger)
        recent.append((time.time_ns(), claim))
    if by_guard:
        # Made as the guard's entry at once (not a span entry replaced right after).
        return _sibling(
            under, GuardEntry(ledger, claim, True, False, in_library=True, since=time.time_ns())
        )
    return _library_entry(under, claim, False, producer)


def _admit_through_breaker(
    ledger: Ledger,
    model: str,
    expected: float,
    priced: bool,
    defer_fleet: bool,
    probe: bool,
    by_guard: bool,
    lead: bool,
) -> Claim:
    """``Ledger.admit`` of a call the session's breaker admitted first (raises its refusal
    before anything is counted); the permit travels with the call (``Claim.permit``).

    A call made while a call holding a permit of the same breaker runs here (our
    turn, with a tool or a sub-session sharing the breaker in between) is that
    call's: no permit of its own, or it would count the turn's failure twice and,
    half-open, be refused as a second probe while the turn is the first.
    """
    if breaker_held(otel_context.get_current().get(BREAKERS_HELD), ledger.breaker):  # type: ignore[arg-type]
        return ledger.admit(model, expected, False, priced, False, defer_fleet, probe)
    permit = breaker_admit_call(ledger, model)
    if permit is not None and permit.probing and not by_guard and not _guard_sees():
        # Only this call's span will say how it ended, and nothing sees a stream begin
        # before that span ends (which a stream kept unread puts off indefinitely): a
        # half-open probe slot held that long would refuse every call sharing the
        # breaker. The slot is given back; the span's end still tells the outcome.
        permit.free_probe()
    try:
        claim = ledger.admit(model, expected, False, priced, False, defer_fleet, probe, lead)
    except BaseException:
        if permit is not None:
            permit.released()  # refused by a limit (or waiting for a probe): no outcome
        raise
    claim.permit = permit
    return claim


#: The client packages whose request path the client guard wraps right now (filled
#: and emptied by ``guard.install_guard`` / ``uninstall_guard``).
GUARDED_CLIENTS: set[str] = set()


def _guard_sees() -> bool:
    """True when the client guard may see the request of a span admitted now: it
    wraps a client, so the request of any span over that client, a framework's
    (LangChain, pydantic-ai) as much as the client instrumentation's, reaches it, and
    it tells the breaker as soon as the call is answered, a stream as soon as it begins
    (``door.answered``). Judged by the producer's name, a framework's span gave its
    half-open probe slot back, and every concurrent call went out as a probe."""
    return bool(GUARDED_CLIENTS)


def _new_recent(ledger: Ledger) -> deque[tuple[int, Claim]]:
    """The ledger's window of recently admitted library calls, made on its first call."""
    with ledger._lock:  # once per ledger: two threads' first calls share one deque
        recent = ledger.recent
        if recent is None:
            recent = ledger.recent = deque(maxlen=RECENT_LIMIT)
    return recent


def late_same_call(
    ledger: Ledger, start_ns: int, end_ns: int, model: str, failed: bool = False
) -> Claim | None:
    """The call a span known as a model call only at its end describes, if another door saw it.

    LangChain instrumentations (OpenInference's) learn that a span is a model
    call when it ends, and start it on a callback thread or task of their own,
    not making it current: neither parentage nor the strand ties it to the
    request. What does: the request was admitted (by a client instrumentation's
    span or the client guard) in the same session while this span was open.
    The first such call not yet taken by another late span, of the same model
    when both name one, is the same call; None means no other door saw it.
    ``failed``: the span failed with no usage. It describes a call that ended
    without usage (failed too), not one still in flight or booked with usage:
    under concurrency such a call overlaps the failed span in time (a sibling
    run's request while this run's was refused), and taking it would leave the
    span that does describe it unmatched, counted a second time.
    """
    recent = ledger.recent
    if not recent:
        return None
    for item in list(recent):
        admitted, claim = item
        if admitted < start_ns or admitted > end_ns:
            continue
        if model and claim.model and not same_model(model, claim.model):
            continue
        if failed and (claim.open or claim.booked_usage):
            continue
        try:
            recent.remove(item)
        except ValueError:
            continue  # another thread took it first
        return claim
    return None


def take_recent(ledger: Ledger, claim: Claim) -> None:
    """A late span matched ``claim`` another way: no other late span may take it."""
    recent = ledger.recent
    if recent:
        for item in list(recent):
            if item[1] is claim:
                with contextlib.suppress(ValueError):  # another thread took it first
                    recent.remove(item)
                return


def _library_entry(under: SpanEntry, call: Claim, same: bool, producer: str) -> SpanEntry:
    """The entry of a library model span; it becomes the sibling later spans compare with."""
    # Positional (model_span, same_call, key, in_library): built for every library call.
    entry = SpanEntry(under.ledger, call, True, same, None, True)
    entry.producer = producer
    return _sibling(under, entry)


@dataclass(eq=False, slots=True)
class Waiting:
    """A library model span started on an event loop, not admitted yet (``WAITING``)."""

    under: SpanEntry
    model: str
    priced: bool
    producer: str
    #: The first call of its model in flight, whose end it waits for.
    wait: _ProbeWait
    #: Its span, to say its session iteration once admitted.
    span: Span | None
    #: Spans of other instrumentations describing the same request (``_follow``).
    followers: list[SpanEntry] = field(default_factory=list)
    #: The asyncio task it waits in, and the callback its end runs (``_task_ended``).
    task: asyncio.Task[object] | None = None
    on_done: Callable[[asyncio.Task[object]], None] | None = None


#: Library model spans that wait for their admission. On an event loop nothing may
#: block, so a span the budget refuses only for what its model's first call in flight
#: reserves (``Ledger.admit``'s ``lead``) is not refused at its start when the client
#: guard sees its request and awaits it before sending (an async client the guard
#: wraps): the guard awaits that first call's end, then admits it at what it cost
#: (``door.arequest_fleet``), as it does a bare async client's call. Nothing is
#: counted for it until then; refused then, its request is never sent.
WAITING: dict[SpanEntry, Waiting] = {}


def wait_for_admission(
    under: SpanEntry,
    model: str,
    priced: bool,
    producer: str,
    wait: _ProbeWait,
    span: Span | None,
) -> SpanEntry:
    """The entry of a library model span whose admission the client guard awaits (``WAITING``)."""
    entry = SpanEntry(under.ledger, None, True, False, None, True)
    entry.producer = producer
    # (Kept without its traceback: that would hold on_start's frames until admission.)
    waiting = WAITING[entry] = Waiting(
        under, model, priced, producer, wait.with_traceback(None), span
    )
    task = current_strand()
    if isinstance(task, asyncio.Task):
        waiting.task = task
        waiting.on_done = functools.partial(_task_ended, entry)
        task.add_done_callback(waiting.on_done)
    return _sibling(under, entry)


def _task_ended(entry: SpanEntry, task: asyncio.Task[object]) -> None:
    """The task a span waits in ended before the guard saw the span's request: it was
    cancelled or timed out (``asyncio.timeout``) before its request was built, or
    raised, and some instrumentations never end a span whose call was cancelled
    (OpenLLMetry's async wrapper ends it only on an Exception). It would wait on,
    held in ``WAITING`` for the process's life. No request of it was sent through the
    guard (which wraps every client such a span describes): nothing is counted."""
    if entry.request is None:
        stop_waiting(entry)


def stop_waiting(entry: SpanEntry) -> Waiting | None:
    """``entry`` waits no more: admitted, refused, never sent, or its span ended."""
    waiting = WAITING.pop(entry, None)
    if waiting is not None and waiting.task is not None and waiting.on_done is not None:
        # (Its task may run long after: its callback would hold the entry until then.)
        waiting.task.remove_done_callback(waiting.on_done)
    return waiting


def waiting_here(request: object) -> SpanEntry | None:
    """The span waiting for its admission on this strand, if its request is this one.

    The guard's request is the library model span started last on this thread
    or task (``strand_request``'s rule) while that span has no request yet.
    """
    found = STRAND.get()
    if found is None or found.request not in (None, request) or found not in WAITING:
        return None
    found.request = request
    return found


def _follow(found: SpanEntry, model: str, producer: str) -> SpanEntry | None:
    """A library model span starting beside or inside ``found``, which waits for its
    admission on this strand (``WAITING``): the same request, as ``_open_sibling``
    rules (its request not sent, another producer). Its entry gets that call once
    ``found`` is admitted; refused, neither is counted."""
    waiting = WAITING.get(found)
    if waiting is None or found.request is not None or found.producer == producer:
        return None
    if model and waiting.model and model != waiting.model:
        return None
    entry = SpanEntry(found.ledger, None, True, True, None, True)
    entry.producer = producer
    waiting.followers.append(entry)
    return entry


def admit_waiting(
    entry: SpanEntry,
    expected: float,
    defer_fleet: bool,
    probe: bool = False,
    lead: bool = False,
    force: bool = False,
) -> SpanEntry:
    """Admit the call of a span that waited (``WAITING``), placed as at its start.

    Raises the refusal (the span's call is then never admitted), or ``_ProbeWait``
    with ``probe`` / ``lead`` while its model's first call is in flight still (it
    goes on waiting). ``force``: its span ended answered and the guard never saw
    its request (a client it does not wrap): counted now, as a span known late.
    """
    waiting = WAITING[entry]
    try:
        admitted = admit_call(
            waiting.under,
            waiting.model,
            expected,
            ours=False,
            priced=waiting.priced,
            force=force,
            defer_fleet=defer_fleet,
            probe=probe,
            producer=waiting.producer,
            lead=lead,
        )
    except _ProbeWait:
        raise
    except BaseException:
        stop_waiting(entry)
        raise
    stop_waiting(entry)
    entry.call = admitted.call
    entry.same_call = admitted.same_call
    for follower in waiting.followers:
        follower.call = admitted.call
    span = waiting.span
    if span is not None and not admitted.same_call and admitted.call is not None:
        write_known(span, {sc.SESSION_ITERATION: admitted.call.iteration})
    return _sibling(waiting.under, entry)


def _sibling(under: SpanEntry, entry: SpanEntry) -> SpanEntry:
    """Make ``entry`` the model call later spans on this strand compare with (``_open_sibling``)."""
    under.sibling = (entry, current_strand())
    STRAND.set(entry)
    return entry


def _guard_call_here(model: str) -> SpanEntry | None:
    """The guard's own call still sending its request on this strand, if any.

    A library span of the same request that starts after the guard admitted it
    (on the same thread or task, while the request is being sent) is that call.
    """
    found = STRAND.get()
    if found is None or not found.by_guard or found.key not in OPEN:
        return None
    call = found.call
    if call is None or (model and call.model and model != call.model):
        return None
    return found


def strand_request(model: str, request: object) -> SpanEntry | None:
    """The open model span of another instrumentation that is this client request, if any.

    The guard's first question for every request, and the answer for every
    instrumented call, so it is asked before anything is built for an
    admission, and before the current context is read: the library model
    span started last on this thread or task and still open (the span
    around this request, current or not), when not yet matched to another
    request. Else ``request_span`` asks the span current here. The match is
    remembered on the entry (``request``), so the SDK's retries of this
    request find it again and another request does not.
    """
    found = STRAND.get()
    if (
        found is not None
        and found.request in (None, request)
        and not found.by_guard
        and found.key in OPEN
        and found.call is not None
        and (not model or not found.call.model or found.call.model == model)
    ):
        found.request = request  # the library span started last on this strand
        return found
    return None


def request_span(under: SpanEntry, model: str, request: object) -> SpanEntry | None:
    """``strand_request``'s fallback: the library model span current here, if it is this request.

    ``under`` is what ``enclosing_context`` found: a library span made current
    on this thread or task without starting here (its context attached from
    another thread) is this request when not yet matched to another one.
    """
    if under.model_span and under.in_library and under.request in (None, request):
        under.request = request  # the library span current here describes this request
        return under
    return None


def admit_request(
    under: SpanEntry,
    model: str,
    request: object,
    expected: float,
    priced: bool,
    *,
    defer_fleet: bool = False,
    probe: bool = False,
    lead: bool = False,
) -> SpanEntry:
    """The client guard's door for a request no open span describes (both lookups None).

    The request is placed like a library model span under ``under`` (the
    entry ``enclosing_context`` found): inside our turn, the first one is our
    turn's request; elsewhere a new call, admitted against the ledger chain
    with ``expected`` cost and ``priced`` (asked of ``under.ledger``), which
    may raise the refusal. The guard books the response into the entry
    returned: a call of its own, or usage handed to the enclosing turn.
    ``probe``: a call whose cost nothing tells may run as its model's probe, or
    raises ``_ProbeWait`` (nothing counted) while another call of it probes.
    ``lead``: a first call of its model at its request's estimate (``Ledger.admit``).

    Example (the guard's order)::

        entry = strand_request(model, key)
        if entry is None:
            under = enclosing_context(None)    # None: outside every session and root
            entry = request_span(under, model, key) or admit_request(under, model, key, 0.0, True)
    """
    entry = admit_call(
        under,
        model,
        expected,
        ours=False,
        priced=priced,
        defer_fleet=defer_fleet,
        probe=probe,
        by_guard=True,
        lead=lead,
    )
    entry.request = request
    if not entry.same_call:
        # The guard's own call (a GuardEntry, the sibling later spans on this strand
        # compare with), open while the request is sent: a library span starting now
        # is this call.
        key = (0, id(entry))
        entry.key = key
        OPEN[key] = entry
        under.ledger.open_keys.add(key)
    return entry


def guard_call_during(start_ns: int) -> SpanEntry | None:
    """The guard's own call admitted on this strand since ``start_ns``, once.

    A library span known as a model call only when it ends (its operation name
    arrives last) started before the request the guard admitted inside it: that
    request is this span's call, not another one.
    """
    found = STRAND.get()
    if not isinstance(found, GuardEntry) or found.since < start_ns or found.call is None:
        return None
    STRAND.set(None)
    return found


def _open_sibling(under: SpanEntry, model: str, producer: str) -> Claim | None:
    """The call of a library model span still open beside this one, on the same strand.

    Two instrumentations describing one request (one of them not making its
    span current) give two sibling spans that overlap in time on one thread or
    task, both started before the request is sent; they are one call. Two
    requests overlap too when the first one's span stays open after its
    response (a stream, open until it is read), so a sibling is this span's
    request only while its own request has not been sent (the client guard
    matches a span to its request as it is sent) and when it comes from another
    producer: one instrumentation describes one request with one span.
    Concurrent calls run on different threads or tasks.
    """
    found = under.sibling
    if found is None:
        return None
    entry, strand = found
    key = entry.key
    if key is None or key not in OPEN:
        return None  # ended already
    if strand != current_strand() and not _callback_beside(entry, strand):
        return None  # running elsewhere
    if entry.request is not None or entry.producer == producer:
        return None  # another request: sent already, or described by the same producer
    call = entry.call
    if call is None or (model and call.model and model != call.model):
        return None
    return call


def _callback_beside(entry: SpanEntry, strand: object) -> bool:
    """A framework callback's span started in another task of this event loop.

    An async LangChain run calls its instrumentations' handlers in a task of
    their own, so their model span and the client's span of the same request
    are siblings on two tasks of one thread. Concurrent runs of a graph have
    spans under different parents, so they never meet here as siblings.
    """
    if entry.producer not in CALLBACK_SCOPES or not isinstance(strand, asyncio.Task):
        return False
    here = current_strand()
    return isinstance(here, asyncio.Task) and here.get_loop() is strand.get_loop()


def open_entry(context: Context | None) -> SpanEntry | None:
    """The entry of the span current in ``context`` (the current context when None), if open."""
    values = context if context is not None else otel_context.get_current()
    span: Span | None = values.get(_SPAN_KEY)  # type: ignore[assignment]
    if span is None:
        return None
    known = span.get_span_context()
    return OPEN.get((known[0], known[1])) if known[1] else None  # see key_of


def register(entry: SpanEntry, context: SpanContext) -> None:
    """Remember an open span so spans started under it find their session."""
    span_id = context[1]  # (trace_id, span_id, ...): see key_of
    if span_id:
        key = (context[0], span_id)
        entry.key = key
        OPEN[key] = entry
        entry.ledger.open_keys.add(key)


def forget(entry: SpanEntry) -> None:
    """The span ended: drop its entry."""
    key = entry.key
    if key is not None:
        OPEN.pop(key, None)
        if LATE:  # empty unless a session closed under calls in flight
            LATE.pop(key, None)
        entry.ledger.open_keys.discard(key)


def take(context: SpanContext | None) -> SpanEntry | None:
    """Remove and return the entry of a span that just ended."""
    if context is None or not context[1]:
        return None
    key = (context[0], context[1])  # key_of, inline: asked for every span
    entry = OPEN.pop(key, None)
    if entry is None:
        entry = LATE.pop(key, None)
        if entry is None:
            return None
    entry.ledger.open_keys.discard(key)
    return entry


def book_in_flight(ledger: Ledger) -> None:
    """The process is stopping (SIGTERM): book the session's calls in flight at an estimate.

    A model call admitted and not yet answered has (or is about to have) its
    request at the provider, which bills it; no usage will arrive here. It is
    booked as a call without usage (``Ledger.estimate_missing``: what the
    guard saw of its request, else the model's learned cost, else
    ``call_estimate_usd``, else what it reserved), as the fleet books its hold
    at what it reserved. A call nothing estimates is left as it was: released
    when its session closes, its fleet hold booked at exit. With or without a budget
    (the provider bills it either way); one warning per model says how many calls
    and what they were booked at.
    """
    # model -> (calls, USD booked, the first user's line known of them)
    booked: dict[str, tuple[int, float, UserSite | None]] = {}
    for key in list(ledger.open_keys):
        entry = OPEN.get(key)
        claim = entry.call if entry is not None else None
        if entry is None or entry.same_call or claim is None or not claim.open:
            continue
        if claim.leaf is ledger:
            # Set first: it is what lets a session without a budget estimate it.
            early, claim.ended_early = claim.ended_early, "stopped"
            price = ledger.estimate_missing(claim, claim.model, "", True)
            if price is None:
                claim.ended_early = early
                continue
            cost = ledger.settle(claim, claim.model, None, price)
            calls, usd, site = booked.get(claim.model, (0, 0.0, None))
            booked[claim.model] = (calls + 1, usd + cost, site or claim.site)
    for model, (calls, usd, site) in booked.items():
        _warn_stopped(ledger, model, calls, usd, site)


def _warn_stopped(
    ledger: Ledger, model: str, calls: int, usd: float, site: UserSite | None
) -> None:
    """Say once what SIGTERM booked of ``model``'s calls in flight in ``ledger``'s session."""
    session = f" in session {ledger.role!r}" if ledger.role else ""
    if calls == 1:
        what = f"a call of model {model!r}{session} was"
        booked = f"it was booked at an estimate (${usd_text(round(usd, 9))}"
        billed = "its request and bills it"
    else:
        what = f"{calls} calls of model {model!r}{session} were"
        booked = f"they were booked at an estimate (${usd_text(round(usd, 9))} in all"
        billed = "their requests and bills them"
    message = (
        f"{what} still in flight when the process was stopped (SIGTERM), so "
        f"{booked}, counted as estimated on the spans, the session span and the report): "
        f"the provider has {billed}"
    )
    if site is not None:
        warn_at(site, message, RuntimeWarning)  # the line that made the call
        return
    # No line of the user's is known (the handler's worker thread runs this): the
    # warning names the shutdown, not a line of the runtime's or of threading.py.
    warnings.warn_explicit(
        message, RuntimeWarning, "<SIGTERM>", 0, module="techrevati.runtime", registry={}
    )


def drop_session(ledger: Ledger) -> None:
    """A session closed: forget its open spans and release their reservations.

    A model span still in flight keeps a bounded late entry, so usage that
    arrives after the close is still booked (into the ledger chain, which
    holds no reference to the session object).
    """
    _LIMITED.discard(ledger)
    streams = ledger.streams
    if streams:
        # The guard's own streams still unread: their reservations leave the chain
        # (a parent session's budget), their fleet holds stay for their booking.
        ledger.streams = None
        for claim in list(streams):
            claim.leaf.release(claim, keep_fleet=True)
    keys = ledger.open_keys
    if not keys:
        return
    ledger.open_keys = set()
    for key in list(keys):
        entry = OPEN.pop(key, None)
        if entry is None:
            continue
        call = entry.call
        if not entry.model_span or (call is None and entry not in WAITING):
            continue
        # (A span waiting for its admission is kept too: admitted after the close,
        # its call is booked when its span ends, as any call in flight at the close.)
        if call is not None and not entry.same_call:
            call.leaf.release(call, keep_fleet=True)
        if len(LATE) >= LATE_LIMIT:
            _book_evicted(LATE.pop(next(iter(LATE))))
        LATE[key] = entry


def _book_evicted(entry: SpanEntry) -> None:
    """The late table is full: its oldest call is booked now, at an estimate.

    Bounded at ``LATE_LIMIT`` calls (each keeps its closed session's ledger
    alive): rather than losing the call, the ledger books it as a call whose
    usage never arrived (its learned cost or ``call_estimate_usd``, marked
    estimated), and a late usage for it is then ignored. Logged once.
    """
    if entry.call is None:
        return  # a span still waiting for its admission (``WAITING``): nothing counted
    global LATE_EVICTED
    LATE_EVICTED += 1
    if LATE_EVICTED == 1:
        _log.warning(
            "more than %d model calls were still running when their sessions closed; "
            "the oldest are booked at an estimate now instead of their late usage",
            LATE_LIMIT,
        )
    call = entry.call
    if call is not None and not entry.same_call:
        breaker_abandoned(call)  # its outcome will never be told: a half-open probe is freed
        call.leaf.settle(call, call.model, None)
