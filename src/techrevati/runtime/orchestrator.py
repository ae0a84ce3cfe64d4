"""Orchestrator / AgentSession: one agent's session, built on the telemetry core.

The Orchestrator holds configuration and opens sessions. A session is an
``invoke_agent {role}`` span made current for the ``with`` body; each turn is a
``chat {model}`` span and each tool an ``execute_tool {name}`` span, all opened
through ``telemetry.instrument``. Budget and iteration caps are enforced by the
limits span processor against the session's ledger, whose store is
``session.tracker``. This module adds the contract's lifecycle, events,
recovery bookkeeping, permissions and guardrails around those calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import datetime
import functools
import inspect
import logging
import sys
import threading
import time
import unicodedata
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanContext, TracerProvider

from .agent_events import AgentEvent, AgentFailureClass
from .agent_lifecycle import AgentRegistry, AgentStatus, AgentWorker, InvalidTransitionError
from .caller import user_frame, warn_user
from .circuit_breaker import AsyncCircuitBreaker, CircuitBreaker
from .fleet.checks import MAX_CALLS
from .frameworks import ensure_tool_doors
from .guardrails import Guardrail
from .handoffs import Handoff
from .permissions import PermissionEnforcer, PermissionOutcome
from .policy_engine import (
    PhaseContext,
    PolicyActionData,
    PolicyEngine,
    check_number,
    check_roles,
    is_flag,
)
from .quality_gate import QualityGate, QualityGateOutcome, QualityLevel
from .retry_policy import (
    FailureScenario,
    RecoveryContext,
    attempt_recovery,
    classify_exception,
)
from .sinks import (
    DEFAULT_RING_CAPACITY,
    EventSink,
    NoopEventSink,
    NoopUsageSink,
    UsageSink,
)
from .telemetry import semconv as sc
from .telemetry.calls import instrument as core
from .telemetry.calls.failures import error_text, reason_text
from .telemetry.calls.timeouts import await_with_timeout, wait_in_thread
from .telemetry.limits import membership as core_membership
from .telemetry.limits.errors import (
    DEFAULT_MAX_ITERATIONS,
    RUNTIME_REFUSALS,
    MaxIterationsExceededError,
    PermissionDeniedError,
    TurnTimeoutError,
    limit_kind,
)
from .telemetry.limits.ledger import FleetLevel, Ledger, fleet_levels
from .telemetry.limits.loops import DEFAULT_LOOP_GUARD, LoopGuard, callable_arguments
from .telemetry.limits.money import check_budget
from .telemetry.limits.wrapup import Remaining, check_wrap_up_at, remaining
from .telemetry.readings.usage_extract import Extracted, extract
from .usage_tracking import BudgetExceededError, UsageSnapshot, UsageTracker, usd_pair

__all__ = [
    "AgentSession",
    "AsyncOrchestrationSession",
    "MaxIterationsExceededError",
    "OrchestrationSession",
    "Orchestrator",
    "PermissionDeniedError",
    "TurnTimeoutError",
]

logger = logging.getLogger("techrevati.runtime.orchestrator")
logger.addHandler(logging.NullHandler())
_EVENT_SINK_FAILED = "event_sink.emit raised; suppressing to keep session alive"

T = TypeVar("T")
B = TypeVar("B", CircuitBreaker, AsyncCircuitBreaker)

_SCENARIO_TO_FAILURE: dict[FailureScenario, AgentFailureClass] = {
    FailureScenario.LLM_TIMEOUT: AgentFailureClass.LLM_TIMEOUT,
    FailureScenario.LLM_ERROR: AgentFailureClass.LLM_ERROR,
    FailureScenario.TOOL_EXECUTION_ERROR: AgentFailureClass.TOOL_ERROR,
    FailureScenario.CONTEXT_OVERFLOW: AgentFailureClass.CONTEXT_OVERFLOW,
    FailureScenario.DEPENDENCY_TIMEOUT: AgentFailureClass.DEPENDENCY_FAILED,
    FailureScenario.MEMORY_CORRUPTION: AgentFailureClass.MEMORY_CORRUPTION,
    FailureScenario.PROVIDER_FAILURE: AgentFailureClass.DEPENDENCY_FAILED,
}

# Errors that are decisions of the runtime, not failures of the model call:
# they skip recovery bookkeeping.
#: Runtime decisions, not failures of the call: no recovery scenario.
_NO_RECOVERY: tuple[type[Exception], ...] = (TurnTimeoutError, *RUNTIME_REFUSALS)


class _Stepped:
    """Awaits ``coroutine`` with each of its steps run in ``context`` (``session.wrap``).

    The awaiting task's event loop (asyncio's, trio's) sees what the coroutine
    yields and sends and throws back into it, as if it awaited the coroutine itself.
    """

    __slots__ = ("_context", "_coroutine")

    def __init__(self, coroutine: Any, context: contextvars.Context) -> None:
        self._coroutine = coroutine
        self._context = context

    def __await__(self) -> Any:
        coroutine, run = self._coroutine, self._context.run
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is not None:
                    error, thrown = thrown, None
                    step = run(coroutine.throw, error)
                else:
                    step = run(coroutine.send, sent)
            except StopIteration as done:
                return done.value
            try:
                sent = yield step
            except GeneratorExit:
                run(coroutine.close)
                raise
            except BaseException as error:  # a cancellation, thrown in by the loop
                thrown, sent = error, None


def _weakly(method: Callable[[str, Exception], None]) -> Callable[[str, Exception], None]:
    """``method``, called while its object lives (a listener that does not keep it alive)."""
    ref = weakref.WeakMethod(method)

    def call(kind: str, error: Exception) -> None:
        bound = ref()
        if bound is not None:
            bound(kind, error)

    return call


def _check_limits(max_iterations: object, budget_usd: object, *, shared: bool = False) -> None:
    """Reject a cap or budget that would silently disable or break enforcement."""
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise TypeError(
            f"max_iterations must be an int, got {type(max_iterations).__name__}: "
            f"{max_iterations!r}"
        )
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    if shared and max_iterations > MAX_CALLS:
        # A shared session's cap becomes its store's max_calls: refused here, under the
        # name the caller wrote, not at the opening as a FleetLimits setting never set.
        raise ValueError(
            f"max_iterations must be at most 2**53 for a shared session (its store counts "
            f"calls exactly up to there), got {max_iterations}"
        )
    check_budget("budget_usd", budget_usd)  # the ledger's own rule, checked up front


def _check_name(field: str, value: object, *, empty: bool) -> None:
    """A name that goes into spans, metric labels, reports and error messages."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, got {type(value).__name__}: {value!r}")
    if not empty and not value.strip():
        raise ValueError(f"{field} must be a non-empty string, got {value!r}")
    if any(unicodedata.category(char) == "Cc" for char in value):
        # A newline or NUL splits report tables and log lines where the name is shown.
        raise ValueError(f"{field} must not contain control characters, got {value!r}")


def _needs_instance(kind: type) -> bool:
    """Whether a class passed as a guardrail has a check that is a plain method."""
    for method in ("check_pre", "check_post"):
        found = inspect.getattr_static(kind, method, None)
        if found is not None and not isinstance(found, staticmethod | classmethod):
            return True
    return False


def _check_collaborators(orch: Orchestrator) -> None:
    """Each collaborator is what its field says, or a bare AttributeError comes at first use."""
    expected: tuple[tuple[str, object, type], ...] = (
        ("circuit_breaker", orch.circuit_breaker, CircuitBreaker),
        ("async_circuit_breaker", orch.async_circuit_breaker, AsyncCircuitBreaker),
        ("permissions", orch.permissions, PermissionEnforcer),
        ("policy_engine", orch.policy_engine, PolicyEngine),
        ("quality_gate", orch.quality_gate, QualityGate),
    )
    for name, value, kind in expected:
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"{name} must be a {kind.__name__} or None, got {type(value).__name__}: {value!r}"
            )
    if not isinstance(orch.registry, AgentRegistry):
        raise TypeError(
            f"registry must be an AgentRegistry, got {type(orch.registry).__name__}: "
            f"{orch.registry!r}"
        )
    if isinstance(orch.guardrails, str | bytes) or not isinstance(orch.guardrails, list | tuple):
        raise TypeError(f"guardrails must be a list of guardrails, got {orch.guardrails!r}")
    for index, guardrail in enumerate(orch.guardrails):
        if isinstance(guardrail, type) and _needs_instance(guardrail):
            # A class has check_pre and check_post too, as plain functions: the first
            # tool call would fail with "missing 1 required positional argument: 'self'".
            # (A class whose checks are static or class methods works as it is.)
            name = guardrail.__name__
            raise TypeError(
                f"guardrails[{index}] is the class {name}, not an instance; pass {name}()"
            )
        # Each tool call calls both, synchronously (run_pre_checks / run_post_checks).
        for method in ("check_pre", "check_post"):
            bound = getattr(guardrail, method, None)
            if not callable(bound):
                raise TypeError(
                    f"guardrails[{index}] must be a guardrail with check_pre() and "
                    f"check_post(), got {type(guardrail).__name__}: {guardrail!r}"
                )
            if inspect.iscoroutinefunction(bound):
                # Called without await, its coroutine would never run, nor its verdict.
                raise TypeError(
                    f"guardrails[{index}].{method} is a coroutine function "
                    f"({type(guardrail).__name__}); guardrails are called synchronously, "
                    "in async sessions too: make it a plain method"
                )
    for name, method in (("event_sink", "emit"), ("usage_sink", "record")):
        sink = getattr(orch, name)
        bound = getattr(sink, method, None)
        if not callable(bound):
            raise TypeError(
                f"{name} must be a sink with {method}(), got {type(sink).__name__}: {sink!r}"
            )
        if inspect.iscoroutinefunction(bound):
            # Called without await, it would only make a coroutine nobody runs.
            raise TypeError(
                f"{name}.{method} is a coroutine function ({type(sink).__name__}); sinks are "
                "called synchronously, on the thread that makes the call: make it a plain "
                "method (for asyncio, hand the item to a queue your loop reads)"
            )


def failure_class_for(error: BaseException) -> AgentFailureClass:
    """The failure class a session records when ``error`` escapes its body."""
    if not isinstance(error, Exception):
        return AgentFailureClass.UNKNOWN
    return _SCENARIO_TO_FAILURE.get(classify_exception(error), AgentFailureClass.UNKNOWN)


# --- handoff links -------------------------------------------------------------
# A handoff's target session usually opens later, from another Orchestrator that
# shares the registry. Remember, per (registry, role, project) and in order, the
# source span (the target's span links to it and joins its trace) and the worker
# the handoff registered for the target (the session that takes the handoff up
# ends it, so list_active() does not show a placeholder next to the real worker).
_PendingHandoff = tuple[SpanContext | None, str]
_pending_handoffs: weakref.WeakKeyDictionary[
    AgentRegistry, dict[tuple[str, int | None], collections.deque[_PendingHandoff]]
] = weakref.WeakKeyDictionary()
_handoff_lock = threading.Lock()
#: Handoffs remembered per target role and project (the oldest give way).
_PENDING_PER_TARGET = 256


def _remember_handoff(
    registry: AgentRegistry,
    role: str,
    project_id: int | None,
    source: SpanContext | None,
    worker_id: str,
) -> None:
    with _handoff_lock:
        queue = _pending_handoffs.setdefault(registry, {}).setdefault(
            (role, project_id), collections.deque(maxlen=_PENDING_PER_TARGET)
        )
        queue.append((source, worker_id))


def _take_handoff(
    registry: AgentRegistry, role: str, project_id: int | None
) -> _PendingHandoff | None:
    with _handoff_lock:
        pending = _pending_handoffs.get(registry)
        if not pending:
            return None
        queue = pending.get((role, project_id))
        if not queue:
            return None
        taken = queue.popleft()
        if not queue:
            del pending[(role, project_id)]
        return taken


def _take_up(registry: AgentRegistry, worker_id: str, by: str) -> None:
    """End the worker a handoff registered, now that a session of its role runs."""
    placeholder = registry.get(worker_id)
    if placeholder is not None and placeholder.status is AgentStatus.INITIALIZING:
        with contextlib.suppress(InvalidTransitionError):  # ended meanwhile
            registry.transition(worker_id, AgentStatus.CANCELLED, f"taken up by {by}")


# --- sessions ------------------------------------------------------------------


@dataclass
class _SessionBase(Generic[B]):
    """State and behaviour shared by the sync and async sessions."""

    worker: AgentWorker
    tracker: UsageTracker
    recovery: RecoveryContext
    registry: AgentRegistry
    phase: str
    role: str
    project_id: int | None
    permissions: PermissionEnforcer | None = None
    policy_engine: PolicyEngine | None = None
    quality_gate: QualityGate | None = None
    budget_usd: float | None = None
    enforce_budget: bool = False
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    guardrails: list[Guardrail] = field(default_factory=list)
    event_sink: EventSink = field(default_factory=NoopEventSink)
    usage_sink: UsageSink = field(default_factory=NoopUsageSink)
    events: list[AgentEvent] = field(default_factory=list)
    circuit_breaker: B | None = None
    _started_at: float = field(default_factory=time.monotonic, init=False, repr=False)
    _ledger: Ledger = field(init=False, repr=False)
    _scope: core.SessionScope | None = field(default=None, init=False, repr=False)
    _telemetry: _TelemetryOptions | None = field(default=None, init=False, repr=False)
    # True when an Orchestrator context manager owns the span's end; a session
    # built directly ends its span when it reaches a terminal state instead.
    _managed: bool = field(default=False, init=False, repr=False)
    _event_sink_failed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_limits(self.max_iterations, self.budget_usd)
        self._ledger = Ledger(
            self.tracker,
            budget_usd=self.budget_usd,
            enforce_budget=self.enforce_budget,
            max_iterations=self.max_iterations,
            usage_sink=None if isinstance(self.usage_sink, NoopUsageSink) else self.usage_sink,
            # Weakly: the ledger outlives a session never exited (its open spans' entries).
            on_limit=_weakly(self._on_limit),
        )

    # -- telemetry scope --------------------------------------------------------

    def _open_scope(self, parent: SpanContext | None = None) -> core.SessionScope:
        options = self._telemetry or _TelemetryOptions()
        ledger = self._ledger
        ledger.call_estimate_usd = options.call_estimate_usd
        ledger.allow_unpriced = options.allow_unpriced
        ledger.add_fleet(options.fleet)
        parent_ctx = None
        if parent is not None and not trace.get_current_span().get_span_context().is_valid:
            parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        if self.permissions is not None or self.guardrails:
            # Before the session opens (nothing to undo if it raised): agent frameworks'
            # own tools pass its permission policy and guardrails too.
            ensure_tool_doors()
        self._scope = core.open_session(
            role=self.role,
            ledger=self._ledger,
            phase=self.phase,
            project_id=self.project_id,
            worker_id=self.worker.worker_id,
            provider_name=options.provider_name,
            agent_id=options.agent_id,
            tracer_provider=options.tracer_provider,
            meter_provider=options.meter_provider,
            links=(parent,) if parent is not None else (),
            parent=parent_ctx,
            owner=self,
            shared=options.shared,
        )
        scope = self._scope
        # What the turn and tool state machines ask of this session.
        core.watch_breaker(scope, self.circuit_breaker)  # every door's, bare clients too
        scope.authorize = self.authorize if self.permissions is not None else None
        scope.guardrails = self.guardrails
        scope.on_turn_failed = self._turn_failed
        core.watch_loops(scope, options.loop_guard)
        core.watch_wrap_up(scope, options.wrap_up_at, options.on_wrap_up)
        return scope

    def _scope_or_open(self) -> core.SessionScope:
        # Sessions built directly (not through an Orchestrator) open lazily.
        scope = self._scope
        if scope is None:
            return self._open_scope()
        if scope.closed and not scope.used_after_close:
            scope.used_after_close = True
            warn_user(
                f"session {self.worker.role!r} ({self.worker.worker_id}) is used after its "
                "block ended: this call still counts against its limits and its summary(), "
                "but its span has ended, so the exported session leaves it out; open a new "
                "session for new work",
                RuntimeWarning,
            )
        return scope

    def _close_scope(self, error: BaseException | None = None) -> None:
        scope = self._scope
        if scope is None or scope.closed:
            return
        status = self.worker.status
        if status == AgentStatus.COMPLETED:
            outcome = sc.OUTCOME_COMPLETED
        elif status == AgentStatus.CANCELLED:
            outcome = sc.OUTCOME_CANCELLED
        else:
            outcome = sc.OUTCOME_FAILED
        failure = self.worker.last_error
        core.close_session(
            scope,
            outcome=outcome,
            error=error,
            error_type=scope.error_type
            or (None if error is not None or failure is None else outcome),
        )

    @property
    def wrapping_up(self) -> bool:
        """True once ``wrap_up_at`` of the cap or of an enforced budget is used.

        The signal to finish: ask the model for a final answer (no more tools)
        instead of running into the limit. Always False without ``wrap_up_at``.

        Example::

            with agent_session("writer", max_iterations=10, wrap_up_at=0.8) as session:
                while not done:
                    reply = ask(history, tools=[] if session.wrapping_up else TOOLS)
        """
        scope = self._scope
        return scope is not None and core.wrapping_up(scope, fresh=True)

    def remaining(self) -> Remaining:
        """What is left before this session's limits stop it (and its ancestors').

        ``calls`` before the tightest cap, ``budget_usd`` of the tightest budget,
        ``fraction`` of the tightest cap or enforced budget (None if neither).
        Under a shared session (here or in the process that opened it) its cap
        and budget count every process's calls, read from the session store.

        Example::

            left = session.remaining()
            print(left.calls, left.budget_usd, left.fraction)
        """
        return remaining(self._ledger, fresh=True)

    @property
    def _iteration_count(self) -> int:
        """Model calls started in this session (the cap counts these)."""
        return self._ledger.iterations

    @_iteration_count.setter
    def _iteration_count(self, value: int) -> None:
        self._ledger.set_iterations(value)

    # -- events -----------------------------------------------------------------

    def _emit_event(self, event: AgentEvent) -> None:
        self.events.append(event)
        try:
            self.event_sink.emit(event)
        except Exception:
            # Once per session at ERROR (a sink that is down fails on every
            # event); the rest at DEBUG, still with their tracebacks.
            if self._event_sink_failed:
                logger.debug(_EVENT_SINK_FAILED, exc_info=True)
            else:
                self._event_sink_failed = True
                logger.exception(_EVENT_SINK_FAILED)

    def _log_extra(self, **more: Any) -> dict[str, Any]:
        return {"role": self.role, "phase": self.phase, "project_id": self.project_id, **more}

    def _on_limit(self, kind: str, error: Exception) -> None:
        if kind != sc.LIMIT_BUDGET or not isinstance(error, BudgetExceededError):
            return
        self._emit_event(
            AgentEvent.failed(
                self.role,
                self.phase,
                AgentFailureClass.UNKNOWN,
                detail="budget exceeded: " + self.tracker.format_cost(),
            ).with_data({"budget_usd": error.budget_usd})
        )
        # The error's own amounts (tree-wide, as its limit counts them), printed so the
        # comparison holds as read: the tracker's formatted cost rounds to 4 decimals.
        ran = error.site is None or error.site.ran
        spent, budget = usd_pair(error.current_cost_usd, error.budget_usd, strict=ran)
        # A soft budget (not enforced) is crossed and the session goes on: the line says
        # so, or a log reader takes it for a stop.
        went_on = "" if self.enforce_budget else " (a soft budget: the session goes on)"
        logger.warning(
            "budget_exceeded: session %r (%s) spent $%s of its $%s budget%s"
            if ran
            else "budget_exceeded: session %r (%s) reached its budget: $%s spent or reserved "
            "by calls in flight >= $%s%s",
            self.role,
            self.worker.worker_id,
            spent,
            budget,
            went_on,
            extra=self._log_extra(
                budget_usd=error.budget_usd,
                current_cost_usd=error.current_cost_usd,
                enforced=self.enforce_budget,
            ),
        )

    def _record_recovery(self, scenario: FailureScenario, outcome: str) -> None:
        self._emit_event(
            AgentEvent.recovery_attempted(
                self.role, self.phase, detail=f"{scenario.value}: {outcome}"
            )
        )
        logger.info(
            "recovery_attempted",
            extra=self._log_extra(scenario=scenario.value, outcome=outcome),
        )
        core.note_recovery(self._scope, scenario.value, outcome)

    def _turn_failed(self, error: BaseException) -> None:
        """Recovery bookkeeping after a failed model call, for every kind of turn.

        ``run_turn``, ``arun_turn`` and decorated turns all end here, so a
        failure is classified and counted the same way whichever API made it.
        Runtime decisions (open breaker, timeout, cap, budget) and
        non-``Exception`` errors such as cancellation are not failures of the call.
        """
        if isinstance(error, Exception) and not isinstance(error, _NO_RECOVERY):
            scenario = classify_exception(error)
            self._record_recovery(scenario, attempt_recovery(scenario, self.recovery).outcome)

    # -- permissions and tools --------------------------------------------------

    def authorize(self, tool_name: str) -> PermissionOutcome:
        """The permission decision for ``tool_name`` under this session's role."""
        if self.permissions is None:
            return PermissionOutcome(allowed=True, reason="no enforcer configured")
        return self.permissions.check(self.role, tool_name)

    def run_tool(self, tool_name: str, fn: Callable[[], T], *, arguments: object = None) -> T:
        """Run a tool after the permission check and pre-guardrails; post-check its result.

        A denied tool raises ``PermissionDeniedError`` and ``fn`` never runs; a
        call that would extend a loop raises ``LoopDetectedError`` under
        ``LoopGuard(on_loop="raise")``. ``arguments`` tell the loop guard (and,
        with content capture on, the span) what the call was made with; without
        them the guard reads what ``fn`` was bound to (a lambda's closure, a
        ``functools.partial``'s arguments).

        Example::

            fact = session.run_tool("lookup_term", lambda: lookup(term), arguments={"term": term})
        """
        if not callable(fn):
            raise TypeError(f"run_tool needs a callable, got {type(fn).__name__}: {fn!r}")
        tool = core.ToolCall.begin(
            self._scope_or_open(),
            tool_name,
            arguments=arguments,
            loop_arguments=_loop_arguments(fn, arguments),
        )
        try:
            token = otel_context.attach(tool.context)
            try:
                result = fn()
            finally:
                otel_context.detach(token)
            tool.check(result)
        except BaseException as exc:
            tool.fail(exc)
            raise
        tool.finish(result)
        return result

    def wrap(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` bound to this session, for a plain thread or an executor.

        A thread started with ``threading.Thread`` begins with an empty
        context, so calls made there would belong to no session and escape its
        limits. The wrapped function runs in a copy of the context captured
        here (this session current), so its calls count.

        Example::

            with orch.session() as session:
                threading.Thread(target=session.wrap(worker)).start()
                pool.submit(session.wrap(ask), "question")

        A coroutine function stays one (``inspect.iscoroutinefunction`` is true
        of the wrapped function too): awaited, each of its steps runs with this
        session current, on the awaiting task (any event loop).
        """
        if not callable(fn):
            raise TypeError(f"wrap needs a callable, got {type(fn).__name__}: {fn!r}")
        scope = self._scope_or_open()
        captured = contextvars.copy_context()

        def context() -> contextvars.Context:
            ctx = captured.copy()
            if ctx.get(core_membership.CURRENT) is not scope:
                ctx.run(core_membership.CURRENT.set, scope)
                ctx.run(otel_context.attach, scope.context)
            return ctx

        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__  # an object whose __call__ is async
        ):
            # A coroutine runs in the context of the task that awaits it, not of the
            # call that made it: each of its steps is run in ours (any event loop).
            async def abound(*args: Any, **kwargs: Any) -> Any:
                ctx = context()
                return await _Stepped(ctx.run(fn, *args, **kwargs), ctx)

            functools.update_wrapper(abound, fn)
            return cast("Callable[..., T]", abound)

        def bound(*args: Any, **kwargs: Any) -> T:
            return context().run(fn, *args, **kwargs)

        return functools.update_wrapper(bound, fn)

    # -- policy, gates, handoffs ------------------------------------------------

    def evaluate_policy(
        self,
        gate_score: float = 0.0,
        gate_threshold: float = 0.0,
        completed_roles: set[str] | None = None,
        failed_roles: set[str] | None = None,
        all_roles: set[str] | None = None,
        elapsed_seconds: float | None = None,
        phase_completed: bool = False,
        quality_level: QualityLevel | None = None,
    ) -> list[PolicyActionData]:
        """Evaluate the policy engine against this session's state (no events)."""
        if self.policy_engine is None:
            return []
        # A NaN score (an evaluation that failed) would skip every GateBelow rule unseen.
        check_number("gate_score", gate_score)
        check_number("gate_threshold", gate_threshold)
        if elapsed_seconds is not None:
            check_number("elapsed_seconds", elapsed_seconds, minimum=0.0)
        if quality_level is not None and not isinstance(quality_level, QualityLevel):
            raise TypeError(f"quality_level must be a QualityLevel or None, got {quality_level!r}")
        if not is_flag(phase_completed):
            # "no" is truthy: PhaseCompleted() would match and propose advancing the phase.
            raise TypeError(f"phase_completed must be True or False, got {phase_completed!r}")
        ctx = PhaseContext(
            phase=self.phase,
            quality_level=quality_level,
            gate_score=gate_score,
            gate_threshold=gate_threshold,
            completed_roles=check_roles("completed_roles", completed_roles),
            failed_roles=check_roles("failed_roles", failed_roles),
            all_roles=check_roles("all_roles", all_roles),
            elapsed_seconds=(
                elapsed_seconds
                if elapsed_seconds is not None
                else time.monotonic() - self._started_at
            ),
            retry_exhausted_scenarios={
                e.scenario for e in self.recovery.events if e.event_type == "escalated"
            },
            phase_completed=phase_completed,
            total_cost_usd=self.tracker.total_cost(),
        )
        actions = self.policy_engine.evaluate(ctx)
        core.session_event(
            self._scope,
            sc.EVENT_POLICY,
            {"techrevati.policy.actions": [a.action.value for a in actions]},
        )
        return actions

    def evaluate_gate(self, observed: QualityLevel) -> QualityGateOutcome | None:
        """Evaluate the quality gate; emits ``phase.gate_passed`` / ``phase.gate_failed``."""
        if self.quality_gate is None:
            return None
        outcome = self.quality_gate.evaluate(observed)
        detail = f"observed={observed.name if observed is not None else None}"
        if outcome.satisfied:
            self._emit_event(AgentEvent.gate_passed(self.phase, detail))
        else:
            self._emit_event(AgentEvent.gate_failed(self.phase, detail))
            logger.info(
                "quality_gate_failed",
                extra=self._log_extra(observed=observed.name if observed is not None else None),
            )
        core.session_event(
            self._scope,
            sc.EVENT_QUALITY_GATE,
            {
                "techrevati.quality_gate.satisfied": outcome.satisfied,
                "techrevati.quality_gate.required": self.quality_gate.required_level.name,
                "techrevati.quality_gate.observed": observed.name
                if observed is not None
                else "none",
            },
        )
        return outcome

    def handoff_to(
        self, target_role: str, reason: str, context: dict[str, Any] | None = None
    ) -> Handoff:
        """Finish this worker and register one for ``target_role`` under the same project.

        Example::

            handoff = session.handoff_to("editor", reason="needs review")
        """
        _check_name("target_role", target_role, empty=False)
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a string, got {type(reason).__name__}: {reason!r}")
        if context is not None and not isinstance(context, Mapping):
            raise TypeError(
                f"context must be a dict or None, got {type(context).__name__}: {context!r}"
            )
        if self.worker.status is AgentStatus.WAITING_FOR_INPUT:
            # Checked before the target is registered: a refused handoff leaves nothing.
            raise InvalidTransitionError(AgentStatus.WAITING_FOR_INPUT, AgentStatus.COMPLETED)
        ctx = dict(context) if context is not None else {}
        # Windowed: a handoff target nobody ever starts is dropped with the
        # finished workers instead of staying in the registry for good.
        target = self.registry.create(
            role=target_role, phase=self.phase, project_id=self.project_id, windowed=True
        )
        self.registry.transition(
            target.worker_id,
            AgentStatus.INITIALIZING,
            f"handoff from {self.role}: {reason}",
        )
        if not self.worker.is_terminal:
            self.worker.transition(AgentStatus.COMPLETED, f"handoff to {target_role}")
        handoff = Handoff(
            source_role=self.role,
            target_role=target_role,
            phase=self.phase,
            reason=reason,
            context=ctx,
            project_id=self.project_id,
            target_worker_id=target.worker_id,
        )
        self._emit_event(
            AgentEvent.completed(
                self.role, self.phase, detail=f"handoff → {target_role}: {reason}"
            ).with_data({"handoff": _json_safe(handoff.to_dict())})
        )
        scope = self._scope
        if scope is not None:
            attributes = {
                "techrevati.handoff.target_role": target_role,
                "techrevati.handoff.target_worker_id": target.worker_id,
            }
            said = reason_text(reason)  # free text: content, kept only with capture on
            if said is not None:
                attributes["techrevati.handoff.reason"] = said
            core.session_event(scope, sc.EVENT_HANDOFF, attributes)
        _remember_handoff(
            self.registry,
            target_role,
            self.project_id,
            scope.span.get_span_context() if scope is not None else None,
            target.worker_id,
        )
        logger.info(
            "handoff_issued",
            extra=self._log_extra(
                target_role=target_role, reason=reason, target_worker_id=target.worker_id
            ),
        )
        return handoff

    # -- lifecycle --------------------------------------------------------------

    def complete(self, detail: str | None = None) -> None:
        """Mark the worker COMPLETED (if not terminal) and emit ``agent.completed``."""
        if not self.worker.is_terminal:
            self.worker.transition(AgentStatus.COMPLETED, detail)
        self._emit_event(AgentEvent.completed(self.role, self.phase, detail))
        if not self._managed:
            self._close_scope()

    def fail(
        self, detail: str, failure_class: AgentFailureClass = AgentFailureClass.UNKNOWN
    ) -> None:
        """Mark the worker FAILED (if not terminal) and emit ``agent.failed``."""
        if not self.worker.is_terminal:
            self.worker.transition(AgentStatus.FAILED, detail)
        if self._scope is not None:
            self._scope.error_type = failure_class.value
        self._emit_event(AgentEvent.failed(self.role, self.phase, failure_class, detail))
        logger.info(
            "session_failed",
            extra=self._log_extra(failure_class=failure_class.value, detail=detail),
        )
        if not self._managed:
            self._close_scope()

    def cancel(self, detail: str | None = None) -> None:
        """Mark the worker CANCELLED; reported as ``agent.failed`` with class ``unknown``."""
        if not self.worker.is_terminal:
            self.worker.transition(AgentStatus.CANCELLED, detail)
        self._emit_event(
            AgentEvent.failed(
                self.role, self.phase, AgentFailureClass.UNKNOWN, detail or "cancelled"
            )
        )
        if not self._managed:
            self._close_scope()

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: worker, usage, per-model cost, events.

        Example::

            print(json.dumps(session.summary(), indent=2))
        """
        return {
            "worker": self.worker.to_dict(),
            "usage": self.tracker.summary(),
            "per_model_cost": self.tracker.per_model_summary(),
            "recovery_events": [e.to_dict() for e in self.recovery.events],
            "agent_events": [e.to_dict() for e in self.events],
        }


def _json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it: events go to sinks and into ``summary()``.

    A handoff's context is the caller's; a datetime or a set in it made
    ``json.dumps(session.summary())`` and ``AgentEvent.to_json()`` raise.
    Dates become ISO text, sets and tuples lists, anything else its ``repr``.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_json_safe(v) for v in value), key=repr)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return repr(value)


def _loop_arguments(fn: object, arguments: object) -> object:
    """What the loop guard fingerprints for ``run_tool(name, fn, arguments=...)``."""
    if arguments is not None:
        return arguments
    try:
        return callable_arguments(fn)
    except Exception:  # an exotic callable: not fingerprinted rather than failing the tool
        return core.NOT_WATCHED


def _check_turn_arguments(
    fn: object, model: object, usage: object, estimate_usage: object, timeout: object
) -> None:
    """Refuse bad arguments before anything is counted, started or recorded."""
    if not callable(fn):
        raise TypeError(f"the turn's callable must be callable, got {type(fn).__name__}: {fn!r}")
    if not isinstance(model, str):
        raise TypeError(f"model must be a string, got {type(model).__name__}: {model!r}")
    if usage is not None and not isinstance(usage, UsageSnapshot):
        raise TypeError(f"usage must be a UsageSnapshot, got {type(usage).__name__}: {usage!r}")
    if usage is not None:
        core.check_usage(usage)
    if estimate_usage is not None and not callable(estimate_usage):
        raise TypeError(f"estimate_usage must be callable, got {estimate_usage!r}")
    if timeout is not None:
        # The wrong kind of value is a TypeError, a wrong number a ValueError (as for
        # the other arguments here).
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(
                f"timeout must be a number of seconds, got {type(timeout).__name__}: {timeout!r}"
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _resolve_usage(
    result: T,
    usage: UsageSnapshot | None,
    estimate_usage: Callable[[T], UsageSnapshot] | None,
) -> tuple[UsageSnapshot, bool, Extracted]:
    """(the snapshot run_turn returns, whether the caller gave it, what the result says).

    An explicit ``usage=`` wins, then ``estimate_usage(result)``; otherwise the
    usage is read from the result the way ``@agent_turn`` reads it (OpenAI and
    Anthropic responses, dicts of those shapes), so both paths book the same.
    """
    if usage is not None:
        return usage, True, _NOTHING_FOUND
    if estimate_usage is not None:
        estimated = estimate_usage(result)
        if not isinstance(estimated, UsageSnapshot):
            raise TypeError(
                "estimate_usage must return a UsageSnapshot, got "
                f"{type(estimated).__name__}: {estimated!r}"
            )
        core.check_usage(estimated, "estimate_usage()")
        return estimated, True, _NOTHING_FOUND
    found = extract(result)
    return (found.usage if found.usage is not None else UsageSnapshot()), False, found


_NOTHING_FOUND = Extracted()


def _resolve_or_book(
    turn: core.TurnCall,
    result: T,
    usage: UsageSnapshot | None,
    estimate_usage: Callable[[T], UsageSnapshot] | None,
) -> tuple[UsageSnapshot, bool, Extracted]:
    """``_resolve_usage`` for a call that returned; a failing ``estimate_usage`` is the caller's.

    The provider did its part and billed the call: when ``estimate_usage``
    raises (or returns something else than a snapshot), the call is booked
    from what its result says (else as a call without usage) and counts as a
    success on the breaker, and the caller's error propagates.
    """
    try:
        return _resolve_usage(result, usage, estimate_usage)
    except Exception:
        resolved = _resolve_usage(result, None, None)
        if resolved[2].usage is None:
            turn.usage_unread()
        _finish(turn, result, resolved)
        raise


def _finish(
    turn: core.TurnCall, result: object, resolved: tuple[UsageSnapshot, bool, Extracted]
) -> UsageSnapshot:
    """End a returned turn with the usage ``_resolve_usage`` chose; return run_turn's snapshot."""
    snapshot, explicit, found = resolved
    turn.finish(
        snapshot if explicit else found.usage,
        explicit=explicit,
        response_model=found.model,
        reasoning_tokens=found.reasoning_tokens,
        output=result,
    )
    return snapshot


def _counted_by(turn: core.TurnCall) -> str | None:
    """The breaker that books this turn's timeout as a failure: its permit's (None: none)."""
    permit = turn.permit
    return None if permit is None else permit.name


@dataclass
class OrchestrationSession(_SessionBase[CircuitBreaker]):
    """A synchronous session; get one from ``Orchestrator.session()``.

    Example::

        with orch.session() as session:
            text, usage = session.run_turn(call_model, model="model-a",
                                           usage=UsageSnapshot(5000, 1200))
    """

    def run_turn(
        self,
        fn: Callable[[], T],
        model: str = "",
        usage: UsageSnapshot | None = None,
        estimate_usage: Callable[[T], UsageSnapshot] | None = None,
        timeout: float | None = None,
    ) -> tuple[T, UsageSnapshot]:
        """Run one model call as a ``chat {model}`` span; returns ``(result, usage)``.

        Raises ``MaxIterationsExceededError`` before ``fn`` runs when the cap is
        reached, and ``BudgetExceededError`` when an enforced budget is exceeded.
        """
        _check_turn_arguments(fn, model, usage, estimate_usage, timeout)
        turn = core.TurnCall.begin(self._scope_or_open(), model, usage=usage)

        def late(result: T) -> None:
            # Timed out, then answered: the provider billed it, so it is booked after all.
            snapshot, explicit, found = _resolve_usage(result, usage, estimate_usage)
            turn.book_late(
                snapshot if explicit else found.usage, explicit=explicit, response_model=found.model
            )

        try:
            token = otel_context.attach(turn.context)
            try:
                result = (
                    fn()
                    if timeout is None
                    else wait_in_thread(
                        fn,
                        timeout,
                        self.circuit_breaker,
                        late,
                        role=self.role,
                        model=model,
                        counted_by=_counted_by(turn),
                    )
                )
            finally:
                otel_context.detach(token)
        except BaseException as exc:
            if core.arguments_refused(fn, (), {}, exc):
                turn.not_run(exc)  # fn takes arguments: it never ran, nothing was sent
            else:
                turn.fail(exc)
            raise
        if inspect.iscoroutine(result):
            result.close()
            name = getattr(fn, "__qualname__", repr(fn))
            error = TypeError(
                f"run_turn(): {name} returned a coroutine, which a sync session never awaits"
                ": its body never ran and nothing was sent or counted. Use an "
                "async session (Orchestrator.asession(), arun_turn) for an async client"
            )
            turn.not_run(error)
            raise error
        return result, _finish(turn, result, _resolve_or_book(turn, result, usage, estimate_usage))


@dataclass
class AsyncOrchestrationSession(_SessionBase[AsyncCircuitBreaker]):
    """An asyncio session; get one from ``Orchestrator.asession()``.

    Example::

        async with orch.asession() as session:
            text, _ = await session.arun_turn(lambda: acall_model(prompt), model="model-a")
    """

    _pending_input: asyncio.Future[str] | None = field(default=None, init=False, repr=False)

    async def arun_turn(
        self,
        coro_factory: Callable[[], Awaitable[T]],
        model: str = "",
        usage: UsageSnapshot | None = None,
        estimate_usage: Callable[[T], UsageSnapshot] | None = None,
        timeout: float | None = None,
    ) -> tuple[T, UsageSnapshot]:
        """Async ``run_turn``: same limits, spans, events and budget rules."""
        _check_turn_arguments(coro_factory, model, usage, estimate_usage, timeout)
        turn = await core.TurnCall.abegin(self._scope_or_open(), model, usage=usage)
        try:
            token = otel_context.attach(turn.context)
            try:
                # Only this turn's own deadline becomes TurnTimeoutError; a
                # TimeoutError the coroutine raises itself stays what it is.
                result = await (
                    coro_factory()
                    if timeout is None
                    else await_with_timeout(
                        coro_factory,
                        timeout,
                        role=self.role,
                        model=model,
                        counted_by=_counted_by(turn),
                    )
                )
            finally:
                otel_context.detach(token)
        except BaseException as exc:
            # aattempt_recovery never awaits (it is attempt_recovery), so the
            # shared synchronous bookkeeping in fail() is exact here too.
            turn.fail(exc)
            raise
        return result, _finish(turn, result, _resolve_or_book(turn, result, usage, estimate_usage))

    async def arun_tool(
        self,
        tool_name: str,
        coro_factory: Callable[[], Awaitable[T]],
        *,
        arguments: object = None,
    ) -> T:
        """Async ``run_tool``: checks are synchronous, the tool itself is awaited."""
        if not callable(coro_factory):
            raise TypeError(
                f"arun_tool needs a callable, got {type(coro_factory).__name__}: {coro_factory!r}"
            )
        tool = core.ToolCall.begin(
            self._scope_or_open(),
            tool_name,
            arguments=arguments,
            loop_arguments=_loop_arguments(coro_factory, arguments),
        )
        try:
            token = otel_context.attach(tool.context)
            try:
                result = await coro_factory()
            finally:
                otel_context.detach(token)
            tool.check(result)
        except BaseException as exc:
            tool.fail(exc)
            raise
        tool.finish(result)
        return result

    async def pause_for_input(self, prompt: str) -> str:
        """Wait for a human: WAITING_FOR_INPUT until ``provide_input`` is called."""
        if self.worker.is_terminal:
            raise RuntimeError(f"cannot pause a terminal session ({self.worker.status.value})")
        if self._pending_input is not None:
            raise RuntimeError("a previous pause_for_input is still pending")
        self.worker.transition(AgentStatus.WAITING_FOR_INPUT, prompt)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending_input = future
        try:
            value = await future
        finally:
            self._pending_input = None
        if not self.worker.is_terminal:
            self.worker.transition(AgentStatus.RUNNING, "input received")
        return value

    def provide_input(self, value: str) -> None:
        """Resolve a pending ``pause_for_input`` (call from the event-loop thread)."""
        pending = self._pending_input
        if pending is None:
            raise RuntimeError("no pause_for_input in flight")
        if not pending.done():
            pending.set_result(value)


# --- the Orchestrator ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TelemetryOptions:
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    provider_name: str = ""
    agent_id: str | None = None
    call_estimate_usd: float | None = None
    allow_unpriced: bool = False
    fleet: tuple[FleetLevel, ...] = ()
    shared: bool = False
    loop_guard: LoopGuard | None = DEFAULT_LOOP_GUARD
    wrap_up_at: float | None = None
    on_wrap_up: Callable[[Any], None] | None = None


def _telemetry_options(orch: Orchestrator) -> _TelemetryOptions:
    provider_name, agent_id = orch.provider_name, None
    # A 0.1.0 OpenTelemetrySink names the agent and provider for the spans it
    # records; spans the session itself makes may land in the same exporter,
    # so they carry the same two attributes. Looked up in sys.modules: the
    # package must not import the optional otel module on its own.
    otel = sys.modules.get("techrevati.runtime.otel")
    if otel is not None and isinstance(orch.event_sink, otel.OpenTelemetrySink):
        provider_name = provider_name or orch.event_sink.provider_name
        agent_id = orch.event_sink.agent_id
    return _TelemetryOptions(
        orch.tracer_provider,
        orch.meter_provider,
        provider_name,
        agent_id,
        orch.call_estimate_usd,
        orch.allow_unpriced,
        fleet_levels(orch.fleet),
        orch.shared,
        orch.loop_guard,
        orch.wrap_up_at,
        orch.on_wrap_up,
    )


def _check_estimate(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"call_estimate_usd must be a number, got {type(value).__name__}: {value!r}"
        )
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"call_estimate_usd must be a finite non-negative number, got {value!r}")


S = TypeVar("S", bound="_SessionBase[Any]")


@dataclass
class Orchestrator:
    """Session factory for one logical agent: breakers, permissions, budget, sinks.

    Example::

        orch = Orchestrator(role="writer", phase="draft", budget_usd=0.50,
                            enforce_budget=True, max_iterations=5)
        with orch.session() as session:
            text, usage = session.run_turn(call_model, model="your-model",
                                           usage=UsageSnapshot(5000, 1200))
        print(session.summary())

    Beyond the 0.1.0 fields: ``tracer_provider`` / ``meter_provider`` send this
    orchestrator's telemetry to given providers instead of the global ones;
    ``provider_name`` fills ``gen_ai.provider.name`` on its turns;
    ``call_estimate_usd`` is what a call is expected to cost when the session
    knows nothing better (no ``usage=`` up front, no finished call of that
    model yet): admission reserves it, so concurrent calls cannot all slip
    under an enforced budget; ``allow_unpriced`` accepts calls of models with
    no known price at $0 under an enforced budget (refused by default);
    ``fleet`` adds fleet-wide limits (one ``FleetLimits`` or a list) above
    every session of this orchestrator; ``shared=True`` makes each session a
    shared one: its id travels in W3C baggage, and model calls and sessions in
    other processes under that context count against its cap and budget
    (needs ``configure(session_store=...)`` in every process). ``loop_guard``
    watches each session's tool calls for loops (default
    ``LoopGuard(on_loop="warn")``; None: off); ``wrap_up_at`` (e.g. 0.8) makes
    ``session.wrapping_up`` True, adds a span event and calls
    ``on_wrap_up(session)`` once that share of the cap or of an enforced budget
    is used.
    """

    role: str
    phase: str = "default"
    project_id: int | None = None
    registry: AgentRegistry = field(default_factory=AgentRegistry)
    permissions: PermissionEnforcer | None = None
    circuit_breaker: CircuitBreaker | None = None
    async_circuit_breaker: AsyncCircuitBreaker | None = None
    policy_engine: PolicyEngine | None = None
    quality_gate: QualityGate | None = None
    budget_usd: float | None = None
    enforce_budget: bool = False
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    guardrails: list[Guardrail] = field(default_factory=list)
    event_sink: EventSink = field(default_factory=NoopEventSink)
    usage_sink: UsageSink = field(default_factory=NoopUsageSink)
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    provider_name: str = ""
    call_estimate_usd: float | None = None
    allow_unpriced: bool = False
    fleet: Any = None
    shared: bool = False
    loop_guard: LoopGuard | None = DEFAULT_LOOP_GUARD
    wrap_up_at: float | None = None
    on_wrap_up: Callable[[Any], None] | None = None
    _last_tracker: UsageTracker | None = field(default=None, init=False, repr=False, compare=False)
    #: ``enforce_budget=True`` without a budget was warned about (once, where it is written).
    _warned_no_budget: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_fields()

    def _check_fields(self) -> None:
        # At construction, and again at each session's opening: the fields are
        # public, and one set afterwards ("no" for a flag) would be read as it is.
        _check_name("role", self.role, empty=False)
        _check_name("phase", self.phase, empty=True)
        _check_name("provider_name", self.provider_name, empty=True)
        if self.project_id is not None and (
            isinstance(self.project_id, bool) or not isinstance(self.project_id, int)
        ):
            raise TypeError(f"project_id must be an int or None, got {self.project_id!r}")
        _check_collaborators(self)
        for flag in ("enforce_budget", "allow_unpriced", "shared"):
            value = getattr(self, flag)
            if not isinstance(value, bool):
                # "no" or "False" would read as True: a flag that guards money is a bool.
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        _check_limits(self.max_iterations, self.budget_usd, shared=self.shared)
        if self.enforce_budget and self.budget_usd is None and not self._warned_no_budget:
            # Read as "enforce a budget", it enforces none: say so where it is written,
            # once (not again at each session it opens, pointing at that line instead).
            self._warned_no_budget = True
            warn_user(
                f"session {self.role!r}: enforce_budget=True has no budget to enforce "
                "(budget_usd is None), so no call is refused for what it costs; set "
                "budget_usd= to cap its spend",
                UserWarning,
            )
        _check_estimate(self.call_estimate_usd)
        fleet_levels(self.fleet)
        if self.loop_guard is not None and not isinstance(self.loop_guard, LoopGuard):
            raise TypeError(
                f"loop_guard must be a LoopGuard or None, got {type(self.loop_guard).__name__}: "
                f"{self.loop_guard!r}"
            )
        self.wrap_up_at = check_wrap_up_at(self.wrap_up_at)
        if self.on_wrap_up is not None and not callable(self.on_wrap_up):
            raise TypeError(f"on_wrap_up must be callable, got {self.on_wrap_up!r}")

    @property
    def tracker(self) -> UsageTracker:
        """The usage tracker of the most recently opened session (empty before any)."""
        return self._last_tracker if self._last_tracker is not None else UsageTracker()

    def session(self) -> _SessionContext[OrchestrationSession]:
        """A ``with`` block running one synchronous session of this agent."""
        return _SessionContext(self, OrchestrationSession, self.circuit_breaker)

    def asession(self) -> _SessionContext[AsyncOrchestrationSession]:
        """An ``async with`` block running one asyncio session of this agent."""
        return _SessionContext(self, AsyncOrchestrationSession, self.async_circuit_breaker)

    def _new_session(self, cls: type[S], breaker: object) -> S:
        # Again here: the fields may have been set after construction, and a session
        # refused at its opening must leave no worker behind.
        self._check_fields()
        worker = self.registry.create(self.role, self.phase, self.project_id)
        self.registry.transition(worker.worker_id, AgentStatus.INITIALIZING)
        self.registry.transition(worker.worker_id, AgentStatus.RUNNING)
        retain = None
        if not isinstance(self.usage_sink, NoopUsageSink):
            # A usage sink keeps the history; the tracker then keeps a bounded tail.
            retain = getattr(self.usage_sink, "capacity", DEFAULT_RING_CAPACITY)
        session = cls(
            worker=worker,
            tracker=UsageTracker(retain_turns=retain),
            recovery=RecoveryContext(),
            registry=self.registry,
            phase=self.phase,
            role=self.role,
            project_id=self.project_id,
            permissions=self.permissions,
            policy_engine=self.policy_engine,
            quality_gate=self.quality_gate,
            budget_usd=self.budget_usd,
            enforce_budget=self.enforce_budget,
            max_iterations=self.max_iterations,
            guardrails=list(self.guardrails),
            event_sink=self.event_sink,
            usage_sink=self.usage_sink,
            circuit_breaker=breaker,
        )
        session._telemetry = _telemetry_options(self)
        self._last_tracker = session.tracker
        return session


AgentSession = Orchestrator


class _SessionContext(Generic[S]):
    """The object ``session()`` / ``asession()`` return: a sync and async context manager."""

    def __init__(self, orch: Orchestrator, cls: type[S], breaker: object) -> None:
        self._orch = orch
        self._cls = cls
        self._breaker = breaker
        self._session: S | None = None
        self._activation: core.Activation | None = None

    def _enter(self) -> S:
        orch = self._orch
        session = orch._new_session(self._cls, self._breaker)
        session._managed = True
        handoff = _take_handoff(orch.registry, orch.role, orch.project_id)
        try:
            session._open_scope(parent=handoff[0] if handoff is not None else None)
        except BaseException as exc:
            # It never ran (no store for shared=True, a parent that refused it): its
            # worker ends here, not left RUNNING in the registry for good.
            if not session.worker.is_terminal:
                session.worker.transition(
                    AgentStatus.FAILED, f"the session could not open: {type(exc).__name__}: {exc}"
                )
            raise
        assert session._scope is not None
        if handoff is not None:
            _take_up(orch.registry, handoff[1], session.worker.worker_id)
        self._activation = core.activate(session._scope)
        self._session = session
        return session

    def _exit(self, exc: BaseException | None, *, cancelled: bool) -> None:
        session = self._session
        assert session is not None
        try:
            if cancelled:
                session.cancel(detail="async session cancelled")
            elif exc is None:
                if not session.worker.is_terminal:
                    session.complete()
            elif isinstance(exc, Exception):
                detail = error_text(exc)[0]  # (a message that cannot be read: said so)
                session.fail(detail=detail, failure_class=failure_class_for(exc))
                kind = limit_kind(exc)
                if kind is not None and session._scope is not None:
                    # The span says which limit stopped the session, not "llm_error".
                    session._scope.error_type = kind
            elif isinstance(exc, GeneratorExit):
                session.cancel(detail="session closed early")
            else:
                # KeyboardInterrupt, SystemExit: stopped from outside, like a cancelled
                # task (the contract's rule), and still in a terminal state.
                session.cancel(detail=type(exc).__name__)
        finally:
            if self._activation is not None:
                core.deactivate(self._activation)
                self._activation = None
            session._close_scope(exc)

    def __enter__(self) -> S:
        if self._cls is not OrchestrationSession:
            raise TypeError("asession() is an async context manager: use 'async with'")
        session = self._enter()
        frame = user_frame()
        if frame is not None and frame.f_code.co_flags & inspect.CO_GENERATOR:
            # A block inside a sync generator: a later next() may run in another
            # context (Starlette's streamed responses), where only the stack says it.
            assert session._scope is not None
            core.hold_in_generator(session._scope, frame)
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc, cancelled=False)

    async def __aenter__(self) -> S:
        if self._cls is not AsyncOrchestrationSession:
            raise TypeError("session() is a sync context manager: use 'with'")
        return self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc, cancelled=isinstance(exc, asyncio.CancelledError))
