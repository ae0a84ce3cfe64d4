"""The tool state machine: one tool call, from permission check to its end.

``run_tool``, ``arun_tool`` and ``@tool_call`` (every function kind) drive:

    begin      ``execute_tool {name}`` span, then (in a session) the permission
               decision and the pre-guardrails; refused → span ended, error raised
    (run)      the adapter runs the tool inside ``tool.context``
    check      post-guardrails on the result (on each item of a streamed result)
    finish / fail

Tool calls never count against the iteration cap or the budget.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace import TracerProvider as APITracerProvider

from ...guardrails import GuardrailViolatedError, run_post_checks, run_pre_checks
from ...permissions import PermissionOutcome, refused_before_run
from .. import semconv as sc
from ..limits import membership
from ..limits.errors import LoopDetectedError, PermissionDeniedError
from ..limits.loops import LoopWatch, Step, same_step, step_of
from ..limits.membership import SpanEntry
from ..readings.sdk_attributes import KnownValue, write_known
from .content import capture_content, content_text
from .failures import end_span, error_type, record_error
from .labels import bounded_name
from .loops import failed, fingerprint, record
from .metrics import Instruments, instruments_for
from .providers import tracer_for
from .session import SessionScope, session_event
from .threads import submitted_by

#: Read once: an enum member lookup costs about 0.2 µs, and every tool call starts a span.
_INTERNAL = SpanKind.INTERNAL

#: ``ToolCall.begin``'s default: the call's arguments are unknown, so it is not fingerprinted.
NOT_WATCHED: object = object()

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class DoorCall:
    """A framework's tool call a door is running here as one tool call of ``session``.

    Each of the two things that may be this same call is taken once, then it is
    spent: a door found again inside it for the same tool (another wrapper over
    ours that hides it), and a ``@tool_call`` function of that name the framework
    runs as the tool's body (one call, one span, one count). A second call of that
    name inside the tool, or one in another session, is a tool call of its own.
    """

    name: str
    session: SessionScope
    door_taken: bool = False
    body_taken: bool = False

    def take(self, name: str, *, body: bool) -> bool:
        """Whether the call now starting, of tool ``name``, is this one (once per kind)."""
        if name != self.name or (self.body_taken if body else self.door_taken):
            return False
        if tool_session() is not self.session:
            return False
        # The door is always outside the body: once the body is taken, a door of this
        # name found inside it is another tool call (a nested framework tool).
        self.door_taken = True
        if body:
            self.body_taken = True
        return True


#: The tool call a framework's door runs here (``frameworks/door.py``), if any.
DOOR_TOOL: ContextVar[DoorCall | None] = ContextVar("techrevati_tool_door", default=None)


def tool_session() -> SessionScope | None:
    """The session a tool call made here belongs to, for its checks and its span.

    The current session (a ``ThreadPoolExecutor`` task runs in the session
    that submitted it, ``threads._carry``); else, on a pool worker whose task
    outlived that session, the session that submitted the task
    (``threads.submitted_by``), closed, if it has a permission policy or
    guardrails: a tool the session's policy refuses must not run because the
    task outlived the session (smolagents runs a code agent's code on a pool).
    A closed session with nothing to check leaves the call outside. The same
    holds for a task the session was given (carried): once it closed, the
    task's model calls go to its open ancestor, but its tools are still checked
    against its own policy, not its parent's.
    """
    given = membership.given_up_here()
    if given is not None and _checks_tools(given):
        return given
    session = membership.current_session()
    if session is not None:
        return session
    submitter = submitted_by()
    if submitter is None or not _checks_tools(submitter):
        return None
    return submitter


def _checks_tools(session: SessionScope) -> bool:
    """Whether ``session`` has a permission policy or guardrails to check tools against."""
    return session.authorize is not None or bool(session.guardrails)


def _submitted_after_close(session: SessionScope) -> bool:
    """The closed ``session`` is here only as the submitter of this pool task (or as
    the session the task was given, closed since)."""
    if membership.given_up_here() is session:
        return True
    return submitted_by() is session and membership.current_session() is None


@dataclass(eq=False, slots=True)
class ToolCall:
    """One tool call in flight."""

    span: Span
    session: SessionScope | None
    name: str
    instruments: Instruments
    context: Context
    started: float
    entry: SpanEntry | None
    decision: str = sc.PERMISSION_ALLOW
    #: What the guardrails said so far: none ran, all passed, or one raised.
    guarded: str = sc.GUARDRAIL_NONE
    ended: bool = False
    #: The session's loop watch and this call's fingerprint (None: not watched).
    watch: LoopWatch | None = None
    loop_key: int | None = None
    #: Its model turn (``step_of``): calls of one turn are one repetition step.
    loop_step: Step | None = None
    #: Checked against a session that closed before it (``tool_session``), outside it.
    detached: bool = False

    @classmethod
    def begin(
        cls,
        session: SessionScope | None,
        name: str,
        *,
        call_id: str | None = None,
        arguments: object = None,
        loop_arguments: object = NOT_WATCHED,
        tracer_provider: APITracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> ToolCall:
        """Start the span and, in a session, admit the call; raises when refused.

        ``arguments`` are recorded only with content capture on;
        ``loop_arguments`` (the arguments as the session's loop guard should
        see them, kept in memory only) make the call count for loop detection,
        and a call that would extend a loop is refused here under
        ``on_loop="raise"``. Without them the call is not fingerprinted.

        Example::

            tool = ToolCall.begin(current_session(), "lookup")
            result = lookup()
            tool.check(result)
            tool.finish(result)
        """
        if not isinstance(name, str) or not name:
            # An empty name is the right type with a wrong value: ValueError, as for role.
            error = TypeError if not isinstance(name, str) else ValueError
            raise error(f"tool_name must be a non-empty string, got {name!r}")
        detached = False
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            sc.GEN_AI_TOOL_NAME: bounded_name(name),
            sc.GEN_AI_TOOL_TYPE: "function",
        }
        if call_id:
            attributes[sc.GEN_AI_TOOL_CALL_ID] = call_id
        if arguments is not None and capture_content():
            attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = content_text(arguments)
        if session is not None:
            attributes.update(session.agent_attrs)  # the role, bounded at the session
            if session.provider_name:
                attributes[sc.GEN_AI_PROVIDER_NAME] = bounded_name(session.provider_name)
            attributes.update(session.span_stamp)
            tracer, instruments = session.tracer, session.instruments
            parent = membership.parent_for(session)
            if parent is not None and session.closed and _submitted_after_close(session):
                # A pool task's tool after the session that submitted it closed (see
                # ``tool_session``): checked against it, but nothing it calls is booked
                # there, so it does not start in the session's context. (A closed
                # session's own run_tool still counts there, as its warning says.)
                parent = None
                detached = True
        else:
            tracer = tracer_for(tracer_provider)
            instruments = instruments_for(meter_provider)
            parent = None
        span = tracer.start_span(
            f"{sc.OP_EXECUTE_TOOL} {bounded_name(name)}",
            context=parent,
            kind=_INTERNAL,
            attributes=attributes,
        )
        entry = None
        if session is not None and not detached:
            # Model calls a tool makes belong to the session, as new calls.
            entry = SpanEntry(session.ledger, in_tool=True)
            membership.register(entry, span.get_span_context())
        tool = cls(
            span=span,
            session=session,
            name=name,
            instruments=instruments,
            context=trace.set_span_in_context(span, parent),
            started=time.perf_counter(),
            entry=entry,
            detached=detached,
        )
        if session is not None:
            watch = session.loops
            if watch is not None:
                # Inside another instrumentation's tool span (a framework running this
                # function as its tool): one call, counted here, so that span is not.
                outer = membership.open_entry(parent)
                inside = 0
                if outer is not None:
                    (outer.outer_tool or outer).counted_inside = True
                    # Made inside a tool call that made model calls (a sub-agent run
                    # as a tool): counted in that tool call's turns.
                    holder = outer.tool_entry or (outer if outer.in_tool else None)
                    if holder is not None:
                        inside = holder.turn
                if loop_arguments is not NOT_WATCHED:
                    key = fingerprint(watch, name, loop_arguments)
                    if key is not None:
                        tool.watch, tool.loop_key = watch, key
                        tool.loop_step = watch.enter(key, step_of(session.ledger, inside))
            try:
                tool._admit(session)
            except BaseException as exc:
                if tool.loop_key is not None and tool.watch is not None:
                    tool.watch.leave(tool.loop_key)
                tool.loop_key = None  # refused before it ran: not a call of any loop
                tool.fail(exc)
                raise
        return tool

    def run(
        self,
        body: Callable[..., T],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        output: Callable[[T], object] | None = None,
        failure: Callable[[T], BaseException | None] | None = None,
    ) -> T:
        """Run the tool's body in this call's context; then check and finish it, or fail it.

        ``body(*args, **kwargs)`` (passed as a tuple and a dict: a tool's own keyword
        arguments never meet ours). ``output``: what of its return value is the
        tool's result (for the post-guardrails, loop detection and the span), when
        the body returns more. ``failure``: the error a return value reports, when
        the body caught the tool's own exception and returned it as text (the call
        failed; its value is returned all the same).

        Example::

            tool = ToolCall.begin(current_session(), "lookup")   # refused: raises here
            row = tool.run(lookup, ("glossary",))
        """
        try:
            token = otel_context.attach(self.context)
            try:
                returned = body(*args, **(kwargs or {}))
            finally:
                otel_context.detach(token)
            self._returned(returned, output, failure)
        except BaseException as exc:
            self.fail(exc)
            raise
        return returned

    async def arun(
        self,
        body: Callable[..., Awaitable[T]],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        output: Callable[[T], object] | None = None,
        failure: Callable[[T], BaseException | None] | None = None,
    ) -> T:
        """``run`` for a coroutine function's body."""
        try:
            token = otel_context.attach(self.context)
            try:
                returned = await body(*args, **(kwargs or {}))
            finally:
                otel_context.detach(token)
            self._returned(returned, output, failure)
        except BaseException as exc:
            self.fail(exc)
            raise
        return returned

    def _returned(
        self,
        returned: T,
        output: Callable[[T], object] | None,
        failure: Callable[[T], BaseException | None] | None,
    ) -> None:
        error = None if failure is None else failure(returned)
        if error is not None:
            self.fail(error)
            return
        result = returned if output is None else output(returned)
        self.check(result)  # may raise: a post-guardrail blocked the result
        self.finish(result)

    def _admit(self, session: SessionScope) -> None:
        if session.authorize is None:
            outcome = PermissionOutcome(allowed=True, reason="no enforcer configured")
        else:
            outcome = session.authorize(self.name)
        self._note_permission(outcome)
        if not outcome.allowed:
            # no guardrail ran: "none"; the span keeps the policy's own reason
            raise PermissionDeniedError(
                refused_before_run(outcome, role=session.role, tool=self.name)
            )
        self._guard(lambda: run_pre_checks(session.guardrails, role=session.role, tool=self.name))
        key, watch, step = self.loop_key, self.watch, self.loop_step
        if key is not None and watch is not None:
            try:
                watch.admit(key, self.name, step)
            except LoopDetectedError as refusal:
                session.ledger._hit(sc.LIMIT_LOOP, refusal)  # once per session, like a cap
                refused = session.refused_loop
                if refused is not None and refused[0] == key and not same_step(refused[1], step):
                    # Asked for again after its refusal, by a later turn: whoever catches
                    # it is not changing course (a framework that hands a tool's error back
                    # to the model as its result: the Anthropic SDK's tool runner, ToolNode
                    # with handle_tool_errors). The session's model calls are refused too,
                    # until a tool call breaks the loop, or each refusal costs a model call.
                    # (The same reply's parallel calls, refused together, are not asked
                    # again.)
                    session.ledger.pending_refusal = refusal.at_model_call(asked_again=True)
                session.refused_loop = (key, step)
                raise

    def _note_permission(self, outcome: PermissionOutcome) -> None:
        self.decision = sc.PERMISSION_ALLOW if outcome.allowed else sc.PERMISSION_DENY
        span = self.span
        if span.is_recording():
            attributes: dict[str, KnownValue] = {sc.PERMISSION_DECISION: self.decision}
            if outcome.required_mode:
                attributes[sc.PERMISSION_REQUIRED_MODE] = outcome.required_mode
            if outcome.active_mode:
                attributes[sc.PERMISSION_GRANTED_MODE] = outcome.active_mode
            if outcome.reason:
                # The policy's own words (modes and the tool name), not user content.
                attributes[sc.PERMISSION_REASON] = outcome.reason
            write_known(span, attributes)

    def check(self, value: object) -> None:
        """Post-guardrails on a result (or one streamed item); raises on a violation."""
        session = self.session
        if session is not None and session.guardrails:
            guardrails, role = session.guardrails, session.role
            self._guard(lambda: run_post_checks(guardrails, value, role=role, tool=self.name))

    def _guard(self, checks: Callable[[], None]) -> None:
        """Run the guardrails' checks, noting what they said for the span."""
        session = self.session
        if session is None or not session.guardrails:
            return
        try:
            checks()
        except GuardrailViolatedError:
            raise  # "blocked", written with the guardrail's name when the span ends
        except Exception:
            self.guarded = sc.GUARDRAIL_ERROR
            raise
        self.guarded = sc.GUARDRAIL_PASSED

    def finish(self, result: object = None, *, whole: bool = True) -> None:
        """The tool returned (its result already checked).

        ``whole=False``: ``result`` is not the tool's whole output (a streamed
        tool's return value), so loop detection does not compare it.
        """
        if not whole:
            if self.loop_key is not None and self.watch is not None and not self.ended:
                self.watch.leave(self.loop_key)
            self.loop_key = None
        self._end(result, None)

    def fail(self, error: BaseException) -> None:
        """The tool was refused or raised. Never raises."""
        self._end(None, error)

    def _end(self, result: object, error: BaseException | None) -> None:
        if self.ended:
            return
        self.ended = True
        span = self.span
        session = self.session
        labels: dict[str, str] = {
            sc.GEN_AI_TOOL_NAME: bounded_name(self.name),
            sc.PERMISSION_DECISION: self.decision,
        }
        if session is not None:
            labels.update(session.agent_attrs)
            if not self.detached:
                session.tool_calls += 1
        recording = span.is_recording()
        if isinstance(error, GuardrailViolatedError):
            if recording:
                span.set_attribute(sc.GUARDRAIL_OUTCOME, sc.GUARDRAIL_BLOCKED)
                span.set_attribute(sc.GUARDRAIL_NAME, error.guardrail)
                span.set_attribute(sc.GUARDRAIL_STAGE, error.stage)
            self.instruments.guardrail_violations.add(
                1,
                {
                    sc.GUARDRAIL_NAME: error.guardrail,
                    sc.GUARDRAIL_STAGE: error.stage,
                    **{k: v for k, v in labels.items() if k != sc.PERMISSION_DECISION},
                },
            )
            session_event(
                session,
                sc.EVENT_GUARDRAIL,
                {
                    sc.GEN_AI_TOOL_NAME: self.name,
                    sc.GUARDRAIL_NAME: error.guardrail,
                    sc.GUARDRAIL_STAGE: error.stage,
                },
            )
        elif recording:
            write_known(span, {sc.GUARDRAIL_OUTCOME: self.guarded})
        if error is not None:
            labels[sc.ERROR_TYPE] = error_type(error)
            record_error(span, error)
        elif recording and result is not None and capture_content():
            span.set_attribute(sc.GEN_AI_TOOL_CALL_RESULT, content_text(result))
        end_span(span)
        if self.entry is not None:
            membership.forget(self.entry)
        key, watch = self.loop_key, self.watch
        if key is not None and watch is not None:
            watch.leave(key)  # no longer in flight (``LoopWatch.enter``)
            if error is None:
                assert session is not None  # only a session's calls are watched
                record(watch, key, self.name, result, session.ledger, self.loop_step)
            else:
                # In model turns, the same call failing the same way counts like the same
                # result; a program's own retries (no model turn between) are progress.
                failed(watch, key, self.name, error, self.loop_step)
        instruments = self.instruments
        if instruments.live:
            # The tool's own context: its exemplars point at its span (ended by now).
            instruments.tool_calls.add(1, labels, self.context)
            instruments.tool_duration.record(
                time.perf_counter() - self.started, labels, self.context
            )
