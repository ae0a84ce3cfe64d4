"""Session spans: open, make current, annotate and close one agent session.

A session is an ``invoke_agent {role}`` span plus its ledger. Opening one
while another is current makes it that session's child (its calls count
against every ancestor's limits); closing it writes the roll-ups, drops its
open-span entries and releases whatever it still had reserved, so nothing
global keeps a finished session alive.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace import TracerProvider as APITracerProvider

from ...caller import UserSite, user_site, warn_aside
from ...circuit_breaker import AsyncCircuitBreaker, BreakerPermit, CircuitBreaker
from ...guardrails import Guardrail
from ...permissions import PermissionOutcome
from ...usage_tracking import UsageSnapshot
from .. import semconv as sc
from ..limits import membership, remote
from ..limits.errors import FleetUnavailableError
from ..limits.guard import ensure_guard
from ..limits.ledger import FleetLevel, Ledger, describe
from ..limits.loops import LoopWatch, Step
from ..limits.membership import CURRENT, SpanEntry
from ..readings.tokens import usage_to_attributes
from . import conventions
from .failures import end_span
from .failures import error_type as _error_type
from .labels import ModelLabels, bounded_name, model_labels
from .metrics import Instruments, instruments_for
from .providers import tracer_for
from .threads import ensure_noted, submitted_from, warn_if_started_in

_log = logging.getLogger("techrevati.runtime.telemetry")


@dataclass(eq=False, slots=True, weakref_slot=True)
class SessionScope:
    """One open session as the core sees it: span, ledger, labels and the session's rules.

    ``breaker``, ``authorize``, ``guardrails`` and ``on_turn_failed`` are what
    the turn and tool state machines ask of the session that owns them.
    """

    ledger: Ledger
    span: Span
    tracer: Tracer
    instruments: Instruments
    context: Context
    role: str
    provider_name: str
    started: float
    entry: SpanEntry
    parent: SessionScope | None = None
    owner: object = None
    error_type: str | None = None
    agent_attrs: dict[str, str] = field(default_factory=dict)
    model_attrs: dict[tuple[str, str], ModelLabels] = field(default_factory=dict)
    closed: bool = False
    #: The id of the nearest shared session at or above this one (this process or
    #: another): what a shared session opened inside names as its parent.
    shared_above: str = ""
    #: How its ``with`` block made it current (``activate``), if one did.
    activation: Activation | None = None
    #: Warned once that the session was used after its block ended.
    used_after_close: bool = False
    #: Span-only attributes for every turn and tool span (never metric labels).
    span_stamp: dict[str, str] = field(default_factory=dict)
    breaker: CircuitBreaker | AsyncCircuitBreaker | None = None
    authorize: Callable[[str], PermissionOutcome] | None = None
    guardrails: list[Guardrail] = field(default_factory=list)
    on_turn_failed: Callable[[BaseException], None] | None = None
    #: Tool calls made in this session (denied and failed ones included).
    tool_calls: int = 0
    #: A shared session's id and store level (``shared=True``).
    shared: tuple[str, FleetLevel] | None = None
    #: The session's loop watch (``calls/loops.py``); None: loop detection off.
    loops: LoopWatch | None = None
    #: The fingerprint and step of the last tool call its loop watch refused (see
    #: ``ToolCall._admit``).
    refused_loop: tuple[int, Step | None] | None = None
    #: Wrap-up (``calls/wrapup.py``): the threshold, the callback, and whether it fired.
    wrap_up_at: float | None = None
    on_wrap_up: Callable[[Any], None] | None = None
    wrapped: bool = False
    #: The user's line that opened it (warnings given where no user line is on the stack).
    site: UserSite | None = None
    #: What a later session reaps if this one is collected while open (``Abandoned``).
    left: Abandoned | None = None
    #: The id of the sync generator frame whose ``with`` block holds it (0: none).
    held_by: int = 0
    #: Sessions below it whose blocks a sync generator holds (``membership.GENERATOR_BLOCKS``).
    held_below: int = 0

    def labels(self, model: str, provider: str | None = None) -> ModelLabels:
        """Metric label sets for a turn of ``model`` in this session."""
        return model_labels(
            self.model_attrs,
            model,
            self.provider_name if provider is None else provider,
            self.role,
        )


@dataclass(eq=False, slots=True)
class Activation:
    """Tokens to undo ``activate``, and the context it was made current over."""

    otel_token: Token[Context]
    session_token: Token[SessionScope | None]
    outer: Context
    scope: SessionScope | None = None
    #: Its block was exited in another thread or task: the context here still has it.
    orphaned: bool = False


#: The sessions whose block was exited in this context, newest first (a few: blocks
#: exited out of order are nested ones). A task or thread that copied a block's
#: context never exited it, so it keeps that block's session after the block ends.
_EXITED: ContextVar[tuple[weakref.ref[SessionScope], ...]] = ContextVar(
    "techrevati_exited", default=()
)
_EXITED_KEPT = 8


def _session_in_context() -> SessionScope | None:
    """The open session that owns the span current here, or that the context carries.

    A thread that attached a session's OpenTelemetry context (``context.attach``,
    OpenTelemetry's ``ThreadingInstrumentor``) is in that session, as its calls are:
    a session it opens is that session's child. Opened as a top-level one, a
    sub-agent in three such threads sent 15 requests under its parent's cap of 3.
    (Only this process's sessions: a remote parent is found by ``remote_parent``.)
    """
    entry = membership.owner_in_context(otel_context.get_current())
    ref = entry.ledger.session_ref if entry is not None else None
    found = ref() if ref is not None else None
    return membership.nearest_open(found) if isinstance(found, SessionScope) else None


def open_session(
    *,
    role: str,
    ledger: Ledger,
    phase: str = "",
    project_id: int | None = None,
    worker_id: str = "",
    conversation_id: str | None = None,
    provider_name: str = "",
    agent_id: str | None = None,
    tracer_provider: APITracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    links: Iterable[SpanContext] = (),
    parent: Context | None = None,
    owner: object = None,
    shared: bool = False,
) -> SessionScope:
    """Start an ``invoke_agent {role}`` span and bind ``ledger`` to it.

    The session opened inside the current one becomes its child; a session
    with no parent hangs under the process root when ``configure(fleet=...)``
    set one. ``gen_ai.agent.id`` is ``agent_id`` when given (then also stamped
    on the session's turn and tool spans), else the worker id. The span is not
    made current here; ``activate`` does that for a ``with`` body.

    Example::

        scope = open_session(role="writer", ledger=Ledger(UsageTracker()))
        activation = activate(scope)
        ...
        deactivate(activation)
        close_session(scope, outcome="completed")
    """
    if _ABANDONED:
        _reap_abandoned()
    site = user_site()
    stale = CURRENT.get()
    if stale is not None and stale.closed:
        _leave_orphans(stale)  # before its span starts: in the context it had
    parent_scope = membership.open_parent()
    if parent is None and membership.given_up_here() is not None:
        # A pool task's session after the session it was given closed: under that one's
        # open ancestor's span (the task's context still holds the closed one's), else
        # a trace of its own, as its limits are.
        parent = parent_scope.context if parent_scope is not None else Context()
    if parent_scope is None:
        # A pool task's session opens under the session that submitted the task, its
        # span too (the task's thread carries no context of its own).
        parent_scope = submitted_from()
        if parent_scope is not None and parent is None:
            parent = parent_scope.context
    if parent_scope is None and parent is None:
        parent_scope = _session_in_context()
    remote_parent = None
    unreachable: FleetUnavailableError | None = None
    if parent_scope is None:
        try:
            remote_parent = remote.remote_parent(
                parent if parent is not None else otel_context.get_current()
            )
        except FleetUnavailableError as error:
            # Its remote parent's store is down: the session opens (a request with no
            # model call must not fail), and its model calls are refused, as the store
            # refuses calls it cannot count.
            unreachable = error
        if remote_parent is None:
            warn_if_started_in(role)  # a top-level session: escaping its thread's starter?
    conversation = conversation_id or secrets.token_hex(16)
    # The nearest shared session this one opens under, here or in another process.
    if parent_scope is not None:
        above = parent_scope.shared_above
    else:
        above = remote_parent.session_id if remote_parent is not None else ""
    shared_level = None
    if shared:
        store = remote.session_store()
        if store is None:
            raise ValueError(
                "shared=True needs a session store: call "
                "configure(session_store='redis://...') in every process first"
            )
        # Before anything is opened: the warning may be raised (warnings as errors).
        remote.check_propagator("a shared session")
        session_id = remote.new_session_id()
        level = store.open_shared(
            session_id,
            role=role,
            conversation_id=conversation,
            budget_usd=ledger.budget_usd if ledger.enforce_budget else None,
            max_calls=ledger.max_iterations,
            parent=above,
        )
        if level is not None:
            ledger.add_fleet((level,))
            shared_level = (session_id, level)
    if parent_scope is not None:
        ledger.attach(parent_scope.ledger)
    elif remote_parent is not None:
        ledger.attach(remote.root_for(remote_parent, membership.process_root()))
    elif unreachable is not None:
        ledger.attach(remote.unreachable_root(unreachable, membership.process_root()))
    else:
        ledger.attach(membership.process_root())
    tracer = tracer_for(tracer_provider)
    instruments = instruments_for(meter_provider)
    shown = bounded_name(role)  # span name and labels: bounded where they are made
    attributes: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
        sc.GEN_AI_AGENT_NAME: shown,
    }
    if agent_id or worker_id:
        # Worker ids embed the role: bounded like every name we create.
        attributes[sc.GEN_AI_AGENT_ID] = bounded_name(agent_id or worker_id)
    # 128 random bits: worker ids are short and only unique within one registry,
    # while conversations from every process meet in one trace store.
    attributes[sc.GEN_AI_CONVERSATION_ID] = conversation
    if shared_level is not None:
        attributes[sc.SESSION_SHARED] = True
    if remote_parent is not None:
        attributes[sc.SESSION_REMOTE_PARENT_ROLE] = bounded_name(remote_parent.role)
        attributes[sc.SESSION_REMOTE_PARENT_CONVERSATION] = remote_parent.conversation_id
    if provider_name:
        attributes[sc.GEN_AI_PROVIDER_NAME] = bounded_name(provider_name)
    if phase:
        attributes[sc.PHASE] = phase
    if project_id is not None:
        attributes[sc.PROJECT_ID] = project_id
    if ledger.budget_usd is not None:
        attributes[sc.BUDGET_LIMIT_USD] = ledger.budget_usd
        attributes[sc.BUDGET_ENFORCED] = ledger.enforce_budget
    if ledger.max_iterations is not None:
        attributes[sc.SESSION_MAX_ITERATIONS] = ledger.max_iterations
    entry = SpanEntry(ledger)
    span = tracer.start_span(
        f"{sc.OP_INVOKE_AGENT} {shown}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        links=[Link(link) for link in links],
    )
    membership.register(entry, span.get_span_context())
    context = otel_context.set_value(
        membership.SESSION_KEY, entry, trace.set_span_in_context(span, parent)
    )
    if shared_level is not None:
        # The id travels with the session's context: HTTP, gRPC and Celery
        # instrumentations inject W3C baggage into what the session sends.
        context = remote.with_session(context, shared_level[0])
    if remote_parent is not None:
        store = remote.session_store()
        if store is not None:
            store.child_opened(remote_parent)
        instruments.remote_sessions.add(1, {sc.GEN_AI_AGENT_NAME: bounded_name(remote_parent.role)})
    scope = SessionScope(
        ledger=ledger,
        span=span,
        tracer=tracer,
        instruments=instruments,
        context=context,
        role=role,
        provider_name=provider_name,
        started=time.perf_counter(),
        entry=entry,
        parent=parent_scope,
        owner=owner,
        agent_attrs={sc.GEN_AI_AGENT_NAME: shown},
        span_stamp={sc.GEN_AI_AGENT_ID: bounded_name(agent_id)} if agent_id else {},
        shared=shared_level,
        shared_above=shared_level[0] if shared_level is not None else above,
        site=site,
    )
    # The ledger's listeners hold the session weakly: an open span's entry holds the
    # ledger, and a session never exited must not be kept alive by it (``Abandoned``).
    ref = weakref.ref(scope)
    previous_listener = ledger.on_limit

    def on_limit(kind: str, error: Exception) -> None:
        found = ref()
        if found is not None:
            _limit_hit(found, kind, error)
        if previous_listener is not None:
            previous_listener(kind, error)

    ledger.on_limit = on_limit
    ledger.session_ref = weakref.ref(scope)
    ledger.role = role
    ledger.session_id = agent_id or worker_id or conversation
    membership.watch_escapes(ledger)
    if ledger.max_iterations is not None or ledger.has_budget() or ledger.fleet_scopes():
        ensure_guard()  # limits exist: the client guard is on by default
        ensure_noted()  # and a session opened on a thread this one starts is told
    _open_scopes.add(scope)
    if instruments.live:
        # Like a turn's metrics: nothing can read this counter while no MeterProvider
        # is set, so another instrumentation's calls skip it (a lock and a dict update).
        ledger.on_unpriced_cost = functools.partial(_count_library_cost, ref)
    # Entered and never exited (a handler that returned without leaving its block):
    # once the session is unreachable, the next session opened reaps what it left in
    # the tables (not the collector's callback: it may run while a ledger lock is held).
    left = scope.left = Abandoned(entry, ledger, span, role, site, shared_level)
    left.finalizer = weakref.finalize(scope, _collected, left)
    left.finalizer.atexit = False
    return scope


@dataclass(eq=False, slots=True)
class Abandoned:
    """What a session leaves in the tables, reaped if it is collected while open."""

    entry: SpanEntry
    ledger: Ledger
    span: Span
    role: str
    site: UserSite | None
    shared: tuple[str, FleetLevel] | None
    #: Set by ``close_session``: a generator's block may be closed after the collector
    #: found its session unreachable (weak references are cleared first), or later, by
    #: the ``aclose()`` task asyncio schedules: then there is nothing to reap.
    closed: bool = False
    #: When the collector found it (``time.monotonic``).
    found: float = 0.0
    #: Its block in a sync generator (``hold_in_generator``): the frame's id, and the
    #: ancestors whose ``held_below`` that raised.
    held_by: int = 0
    held_above: tuple[SessionScope, ...] = ()
    #: The collector's callback: detached when the session closes (it holds this object).
    finalizer: weakref.finalize[Any, Any] | None = None


#: Sessions collected while open, reaped at a later open (``_reap_abandoned``). A
#: deque: appended to by the garbage collector's callback, lock-free.
_ABANDONED: deque[Abandoned] = deque()
#: How long a collected session waits before it is reaped: an async generator's block
#: is exited by a task asyncio schedules when the generator is collected.
_REAP_AFTER_S = 1.0


def _collected(left: Abandoned) -> None:
    # The collector's callback (any thread, any moment, maybe under a ledger's lock):
    # only noted here; reaped by a session opened later.
    if left.closed:
        return
    left.found = time.monotonic()
    _ABANDONED.append(left)


def _reap_abandoned() -> None:
    """Release what sessions collected while open held, end their spans, and say so.

    A warning raised by a filter (``-W error``) is logged instead (``warn_aside``):
    the session opening now is not the one at fault.
    """
    due = time.monotonic() - _REAP_AFTER_S
    for _ in range(len(_ABANDONED)):
        try:
            left = _ABANDONED.popleft()
        except IndexError:
            return  # another thread took the last one
        if left.closed:
            continue
        if left.found > due:
            _ABANDONED.append(left)  # not yet: its generator's close may still come
            continue
        left.closed = True
        try:
            _reap(left)
        except Exception:
            # Never the failure of the session opening now.
            _log.warning("could not reap a session collected while open", exc_info=True)


def _reap(left: Abandoned) -> None:
    if left.held_by:
        membership.release_held(left.held_by, left.held_above)
        left.held_by, left.held_above = 0, ()
    membership.forget(left.entry)
    membership.drop_session(left.ledger)
    left.ledger.detach()
    store = remote.session_store()
    if left.shared is not None and store is not None:
        with contextlib.suppress(Exception):  # else its keys expire in the store
            store.close_shared(*left.shared)
    # Its span ends here, marked, so the trace shows the session (and its calls' parent).
    span = left.span
    span.set_attributes({sc.SESSION_OUTCOME: sc.OUTCOME_CANCELLED, sc.ERROR_TYPE: ABANDONED})
    span.set_status(Status(StatusCode.ERROR, ABANDONED))
    end_span(span)
    message = (
        f"session {left.role!r} was opened and never closed (a block entered and never "
        "exited, or a session built directly and never completed): it was collected "
        f"while open, so its span ended late (error.type {ABANDONED!r}) and its summary() "
        "was never read. Exit every session you enter (a with block does)"
    )
    warn_aside(left.site, message, ResourceWarning)


#: ``error.type`` of a session span ended because its session was collected while open.
ABANDONED = "session_abandoned"


# Open sessions, weakly: SIGTERM handling ends them; nothing here keeps one alive.
_open_scopes: weakref.WeakSet[SessionScope] = weakref.WeakSet()


def any_open() -> bool:
    """True while some session of this process is open."""
    return any(not scope.closed for scope in list(_open_scopes))


def close_all(reason: str) -> int:
    """Close every open session with outcome ``cancelled``; returns how many."""
    closed = 0
    for scope in list(_open_scopes):
        if not scope.closed:
            # Calls still in flight will never report (the process is going): the
            # provider bills them, and their fleet holds are booked at what they
            # reserved, so the session books them at its estimate too.
            membership.book_in_flight(scope.ledger)
            close_session(scope, outcome=sc.OUTCOME_CANCELLED, error_type=reason)
            closed += 1
    return closed


def _count_library_cost(
    ref: weakref.ref[SessionScope], model: str, usage: UsageSnapshot, cost: float
) -> None:
    # Runs once per call another instrumentation made: the label cache read inline.
    scope = ref()
    if scope is None:
        return
    labels = scope.model_attrs.get((scope.provider_name, model)) or scope.labels(model)
    scope.instruments.cost.add(cost, labels.cost, labels.cost_key)


def activate(scope: SessionScope) -> Activation:
    """Make the session span current (and the session findable) in this context."""
    outer = otel_context.get_current()
    activation = Activation(otel_context.attach(scope.context), CURRENT.set(scope), outer, scope)
    scope.activation = activation
    return activation


def _leave_orphans(stale: SessionScope | None) -> None:
    """A block entered here and exited elsewhere no longer holds this context.

    A sync generator holding a session block, begun here and closed on another
    thread, exits where no token of this context can be reset: the session
    stayed current here, and every session opened here later nested under its
    context (and kept it alive). Its tokens are reset now, which succeeds only
    in the context that made them: a task or thread that only copied the
    block's context keeps the session (its work still counts there).
    """
    while stale is not None and stale.closed:
        entered = stale.activation
        if entered is None or not entered.orphaned:
            return
        try:
            CURRENT.reset(entered.session_token)
        except (ValueError, RuntimeError):
            return  # another context's (a copy), or reset already
        otel_context.detach(entered.otel_token)  # (the same context: it succeeds too)
        entered.orphaned = False
        stale = CURRENT.get()


def hold_in_generator(scope: SessionScope, frame: FrameType) -> None:
    """The session's ``with`` block is in sync generator ``frame``: found from its stack.

    See ``membership.GENERATOR_BLOCKS``: each later ``next()`` may run in another
    context, where only the frame on the stack still says which session it is in.
    """
    above = membership.hold_in_generator(scope, frame)
    if scope.left is not None:
        scope.left.held_by, scope.left.held_above = scope.held_by, above


def deactivate(activation: Activation) -> None:
    """Undo ``activate``; from another task or thread (lifespan hooks) it is a no-op.

    A context variable can only be reset in the context that set it. A session
    entered in one task and exited in another is closed all the same; the
    entering context keeps it current until a session opens there
    (``_leave_orphans``).
    """
    try:
        CURRENT.reset(activation.session_token)
    except ValueError:
        activation.orphaned = True  # the entering context lets go at its next open
        return
    otel_context.detach(activation.otel_token)
    scope = activation.scope
    if scope is not None:
        # Weakly: a long-lived context (a thread's) must not keep closed sessions alive.
        _EXITED.set((weakref.ref(scope), *_EXITED.get()[: _EXITED_KEPT - 1]))
    # Blocks exited out of order (an outer one first, in this same context) restore,
    # here, the closed outer session and its context: no block of it is open in this
    # context any more, so what was current before it is current again. (A task or
    # thread begun inside a block, which never exited it, keeps the block's session
    # after the block ends elsewhere: its work still counts there.)
    stale = CURRENT.get()
    if stale is None or not stale.closed or all(ref() is not stale for ref in _EXITED.get()):
        return
    while stale is not None and stale.closed:
        entered = stale.activation
        before = entered.outer if entered is not None else None
        stale = stale.parent
    CURRENT.set(stale)
    if stale is not None:
        otel_context.attach(stale.context)
    elif before is not None:
        otel_context.attach(before)


def session_event(scope: SessionScope | None, name: str, attributes: Mapping[str, Any]) -> None:
    """A span event on the still-open session span (handoffs, gates, policy, limits)."""
    if scope is not None and not scope.closed:
        scope.span.add_event(name, attributes=dict(attributes))


def _limit_hit(scope: SessionScope, kind: str, error: Exception) -> None:
    # A hit is reported on the level whose limit it is: a budget there that is not
    # enforced was only crossed and reported, and refused nothing.
    enforced = kind != sc.LIMIT_BUDGET or scope.ledger.enforce_budget
    labels: dict[str, str | bool] = {
        sc.LIMIT_KIND: kind,
        sc.LIMIT_ENFORCED: enforced,
        **scope.agent_attrs,
    }
    scope.instruments.limit_hits.add(1, labels)
    attributes: dict[str, Any] = {
        sc.LIMIT_KIND: kind,
        sc.LIMIT_ENFORCED: enforced,
        sc.ERROR_TYPE: _error_type(error),
    }
    fleet_scope = getattr(error, "scope", None)
    if isinstance(fleet_scope, str):
        attributes[sc.FLEET_SCOPE] = fleet_scope
    # The message names numbers and the model, never user content.
    attributes["message"] = str(error)
    session_event(scope, sc.EVENT_LIMIT_HIT, attributes)


def outside_limit_hit(kind: str, error: Exception) -> None:
    """A limit hit with no session to carry it (``configure(fleet=...)``, a call outside
    every session): a short span of its own holding the same event, so the spans
    file and the report show it, and one count of the limit-hit metric.
    """
    attributes: dict[str, Any] = {sc.LIMIT_KIND: kind, sc.ERROR_TYPE: _error_type(error)}
    fleet_scope = getattr(error, "scope", None)
    if isinstance(fleet_scope, str):
        attributes[sc.FLEET_SCOPE] = fleet_scope
    instruments_for(None).limit_hits.add(1, {sc.LIMIT_KIND: kind})
    span = tracer_for(None).start_span(
        sc.EVENT_LIMIT_HIT, kind=SpanKind.INTERNAL, attributes=dict(attributes)
    )
    span.add_event(sc.EVENT_LIMIT_HIT, {**attributes, "message": str(error)})
    span.set_status(Status(StatusCode.ERROR, _error_type(error)))
    end_span(span)


def close_session(
    scope: SessionScope,
    *,
    outcome: str,
    error: BaseException | None = None,
    error_type: str | None = None,
) -> None:
    """Write the roll-ups and final status, end the span, release what the session held."""
    if scope.closed:
        return
    scope.closed = True
    left = scope.left
    if left is not None:
        left.closed = True  # (its collection, if it comes, finds nothing to reap)
        if left.finalizer is not None:
            left.finalizer.detach()  # (else its registry held the ledger until then)
        if left.held_by:
            membership.release_held(left.held_by, left.held_above)
            left.held_by, left.held_above, scope.held_by = 0, (), 0
    ledger = scope.ledger
    tracker = ledger.tracker
    totals = tracker.token_totals()
    cost = tracker.total_cost()
    span = scope.span
    loops = scope.loops
    if loops is not None:
        loops.close()
        if loops.detections:
            span.set_attribute(sc.SESSION_LOOPS, loops.detections)
    span.set_attributes(
        {
            sc.SESSION_OUTCOME: outcome,
            sc.SESSION_TURNS: tracker.turn_count,
            sc.COST_USD: cost,
            sc.BUDGET_SPENT_USD: ledger.spent,
            **describe(ledger),
            **usage_to_attributes(totals),
            **conventions.session_attributes(cost, ledger.max_iterations, ledger.iterations),
        }
    )
    by_model = tracker.per_model_summary()
    if by_model:
        kept = sorted(by_model.items(), key=lambda item: -item[1])[: sc.COST_MODELS_LIMIT]
        span.set_attributes(
            {
                sc.COST_MODELS: [bounded_name(model) for model, _ in kept],
                sc.COST_MODEL_USD: [cost for _, cost in kept],
            }
        )
    unpriced = ledger.unpriced_models
    if unpriced:
        # The models its unpriced calls named: a bare client's calls have no span to say it.
        named = sorted(unpriced.items(), key=lambda item: -item[1])[: sc.COST_MODELS_LIMIT]
        span.set_attributes(
            {
                sc.SESSION_UNPRICED_MODELS: [bounded_name(model) for model, _ in named],
                sc.SESSION_UNPRICED_MODEL_CALLS: [count for _, count in named],
            }
        )
    breaker = scope.breaker
    if breaker is not None:
        # The breaker this session's calls went through, as it stands when the session ends.
        span.set_attributes(
            {
                sc.BREAKER_NAME: breaker.name,
                sc.BREAKER_STATE: BreakerPermit(breaker).state().value,
            }
        )
    if scope.shared is not None:
        _close_shared(scope, ledger)
    failed: str | None = None
    # A completed session leaves its status unset: the trace API reserves Ok for the
    # application's own say-so, and instrumentation sets only Error.
    if outcome != sc.OUTCOME_COMPLETED or error is not None:
        # Failed, cancelled, or completed (a handoff) and then left by an exception:
        # the span says what escaped the block.
        failed = error_type or (_error_type(error) if error is not None else outcome)
        span.set_attribute(sc.ERROR_TYPE, failed)
        span.set_status(Status(StatusCode.ERROR, failed))
    end_span(span)
    membership.forget(scope.entry)
    membership.drop_session(ledger)
    ledger.detach()
    labels = {sc.SESSION_OUTCOME: outcome, **scope.agent_attrs}
    instruments = scope.instruments
    instruments.sessions.add(1, labels)
    instruments.agent_duration.record(
        time.perf_counter() - scope.started,
        # Conditionally required there once the invocation ended in an error: the span's.
        labels if failed is None else {**labels, sc.ERROR_TYPE: failed},
    )
    instruments.session_iterations.record(ledger.iterations, scope.agent_attrs)
    calls_labels = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, **scope.agent_attrs}
    instruments.agent_inference_calls.record(ledger.iterations, calls_labels)
    instruments.agent_tool_calls.record(scope.tool_calls, calls_labels)
    if ledger.budget_usd:
        instruments.budget_utilization.record(ledger.spent / ledger.budget_usd, scope.agent_attrs)


def _close_shared(scope: SessionScope, ledger: Ledger) -> None:
    # The tree's spend includes every remote child's, booked in the store.
    store = remote.session_store()
    if store is None or scope.shared is None:
        return
    session_id, level = scope.shared
    try:
        totals = store.close_shared(session_id, level)
    except Exception:
        # Closing a session never fails the agent (nor replaces the error it is closing
        # with) because a store is down: only the tree's totals on its span are missing.
        _log.warning(
            "shared session %r: its store could not be read at close; the session span "
            "lacks the tree's spend",
            scope.role,
            exc_info=True,
        )
        return
    if totals is None:
        return
    local_tree = describe(ledger).get(sc.COST_TREE_USD, ledger.spent)
    scope.span.set_attributes(
        {
            sc.COST_TREE_USD: max(float(local_tree), totals.spent_usd),
            sc.SESSION_REMOTE_CHILDREN: totals.remote_children,
        }
    )


def note_recovery(scope: SessionScope | None, scenario: str, outcome: str) -> None:
    """A failed turn's recovery bookkeeping, as a span event and a metric."""
    if scope is None:
        return
    scope.instruments.recovery_attempts.add(
        1, {sc.RECOVERY_SCENARIO: scenario, sc.RECOVERY_OUTCOME: outcome, **scope.agent_attrs}
    )
    session_event(
        scope, sc.EVENT_RECOVERY, {sc.RECOVERY_SCENARIO: scenario, sc.RECOVERY_OUTCOME: outcome}
    )
