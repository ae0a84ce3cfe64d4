"""The instrumentation core: opens and fills session, turn and tool spans.

This is the one place spans, cost, token metrics and limit checks are wired
together; the Orchestrator's sessions and the decorators both go through it.
Enforcement itself happens in the limits processor while spans start and end;
this module only falls back to calling the ledger directly for spans the
sampler dropped, which no processor ever sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace import TracerProvider as APITracerProvider

from ..circuit_breaker import AsyncCircuitBreaker, CircuitBreaker, CircuitState
from ..guardrails import GuardrailViolatedError
from ..permissions import PermissionOutcome
from ..usage_tracking import PricedTurn, UsageSnapshot, cost_of, price_turn
from . import semconv as sc
from .content import capture_content, content_text
from .ledger import SessionLedger
from .limits import (
    ACTIVE_LEDGER,
    STARTING_IN,
    SpanEntry,
    book_own_turn,
    entry_of,
    register_session,
    unregister,
)
from .metrics import Instruments, instruments_for
from .providers import tracer_for
from .tokens import usage_to_attributes

_ACTIVE: ContextVar[SessionScope | None] = ContextVar("techrevati_session", default=None)


def price(model: str, usage: UsageSnapshot) -> float:
    """USD cost of ``usage`` on ``model`` at the currently registered prices."""
    return cost_of(model, usage) if model else 0.0


_NO_USAGE = UsageSnapshot()
_NOT_PRICED: PricedTurn = (0.0, None, True)  # a turn with no model is not priced


@dataclass(eq=False, slots=True)
class _ModelAttrs:
    """Pre-built metric label sets for one model, so a turn allocates none."""

    base: dict[str, str]
    input: dict[str, str]
    output: dict[str, str]
    cost: dict[str, str]
    span_name: str


@dataclass(eq=False, slots=True)
class SessionScope:
    """One open session as the core sees it: its span, ledger and metric labels."""

    ledger: SessionLedger
    span: Span
    tracer: Tracer
    instruments: Instruments
    context: Context
    role: str
    provider_name: str
    started: float
    owner: object = None
    outcome: str | None = None
    error_type: str | None = None
    agent_attrs: dict[str, str] = field(default_factory=dict)
    model_attrs: dict[str, _ModelAttrs] = field(default_factory=dict)
    closed: bool = False
    # Span-only attributes for every turn and tool span (never metric labels).
    span_stamp: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Activation:
    """Tokens to undo ``activate``; detach in reverse order on the same context."""

    otel_token: Token[Context]
    session_token: Token[SessionScope | None]
    ledger_token: Token[SessionLedger | None]


def current_session() -> SessionScope | None:
    """The innermost session open in this context (thread or task), if any."""
    return _ACTIVE.get()


def _model_attrs(
    cache: dict[str, _ModelAttrs], model: str, provider: str, role: str | None
) -> _ModelAttrs:
    key = f"{provider}\x00{model}"
    found = cache.get(key)
    if found is not None:
        return found
    base = {sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT, sc.GEN_AI_REQUEST_MODEL: model}
    if provider:
        base[sc.GEN_AI_PROVIDER_NAME] = provider
    if role:
        base[sc.GEN_AI_AGENT_NAME] = role
    cost = {k: v for k, v in base.items() if k != sc.GEN_AI_OPERATION_NAME}
    built = _ModelAttrs(
        base,
        {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT},
        {**base, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT},
        cost,
        f"{sc.OP_CHAT} {model}" if model else sc.OP_CHAT,
    )
    if len(cache) < 512:  # bounded: model names come from user code
        cache[key] = built
    return built


_GLOBAL_MODEL_ATTRS: dict[str, _ModelAttrs] = {}


# --- sessions ------------------------------------------------------------------


def open_session(
    *,
    role: str,
    ledger: SessionLedger,
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
) -> SessionScope:
    """Start an ``invoke_agent {role}`` span and bind ``ledger`` to it.

    ``gen_ai.agent.id`` is ``agent_id`` when given (then also stamped on the
    session's turn and tool spans), else the worker id. The span is not made
    current here; ``activate`` does that for a ``with`` body.
    """
    tracer = tracer_for(tracer_provider)
    instruments = instruments_for(meter_provider)
    attributes: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
        sc.GEN_AI_AGENT_NAME: role,
    }
    if agent_id or worker_id:
        attributes[sc.GEN_AI_AGENT_ID] = agent_id or worker_id
    attributes[sc.GEN_AI_CONVERSATION_ID] = conversation_id or worker_id
    if provider_name:
        attributes[sc.GEN_AI_PROVIDER_NAME] = provider_name
    if phase:
        attributes[sc.PHASE] = phase
    if project_id is not None:
        attributes[sc.PROJECT_ID] = project_id
    if ledger.budget_usd is not None:
        attributes[sc.BUDGET_LIMIT_USD] = ledger.budget_usd
        attributes[sc.BUDGET_ENFORCED] = ledger.enforce_budget
    if ledger.max_iterations is not None:
        attributes[sc.SESSION_MAX_ITERATIONS] = ledger.max_iterations
    span = tracer.start_span(
        f"{sc.OP_INVOKE_AGENT} {role}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        links=[Link(link) for link in links],
    )
    register_session(span, ledger)
    scope = SessionScope(
        ledger=ledger,
        span=span,
        tracer=tracer,
        instruments=instruments,
        context=trace.set_span_in_context(span, parent),
        role=role,
        provider_name=provider_name,
        started=time.perf_counter(),
        owner=owner,
        agent_attrs={sc.GEN_AI_AGENT_NAME: role},
        span_stamp={sc.GEN_AI_AGENT_ID: agent_id} if agent_id else {},
    )
    previous_listener = ledger.on_limit

    def on_limit(kind: str, error: Exception) -> None:
        _limit_hit(scope, kind, error)
        if previous_listener is not None:
            previous_listener(kind, error)

    ledger.on_limit = on_limit
    ledger.on_unpriced_cost = lambda model, usage, cost: _count_cost(
        scope.instruments,
        _model_attrs(scope.model_attrs, model, scope.provider_name, scope.role),
        cost,
    )
    return scope


def activate(scope: SessionScope) -> Activation:
    """Make the session span current (and the session findable) in this context."""
    return Activation(
        otel_context.attach(scope.context), _ACTIVE.set(scope), ACTIVE_LEDGER.set(scope.ledger)
    )


def deactivate(activation: Activation) -> None:
    """Undo ``activate``."""
    ACTIVE_LEDGER.reset(activation.ledger_token)
    _ACTIVE.reset(activation.session_token)
    otel_context.detach(activation.otel_token)


def session_event(scope: SessionScope | None, name: str, attributes: Mapping[str, Any]) -> None:
    """A span event on the still-open session span (handoffs, gates, policy, limits)."""
    if scope is not None and not scope.closed:
        scope.span.add_event(name, attributes=dict(attributes))


def _limit_hit(scope: SessionScope, kind: str, error: Exception) -> None:
    scope.instruments.limit_hits.add(1, {sc.LIMIT_KIND: kind, **scope.agent_attrs})
    session_event(
        scope,
        sc.EVENT_LIMIT_HIT,
        {sc.LIMIT_KIND: kind, sc.ERROR_TYPE: type(error).__name__, "message": str(error)},
    )


def close_session(
    scope: SessionScope,
    *,
    outcome: str,
    error: BaseException | None = None,
    error_type: str | None = None,
) -> None:
    """Write the session's roll-ups and final status, end its span, record metrics."""
    if scope.closed:
        return
    scope.closed = True
    tracker = scope.ledger.tracker
    totals = tracker.token_totals()
    cost = tracker.total_cost()
    span = scope.span
    span.set_attributes(
        {
            sc.SESSION_OUTCOME: outcome,
            sc.SESSION_TURNS: tracker.turn_count,
            sc.SESSION_ITERATION: scope.ledger.iterations,
            sc.COST_USD: cost,
            sc.BUDGET_SPENT_USD: cost,
            **usage_to_attributes(totals),
        }
    )
    if outcome == sc.OUTCOME_COMPLETED:
        span.set_status(Status(StatusCode.OK))
    else:
        kind = error_type or (type(error).__name__ if error is not None else outcome)
        span.set_attribute(sc.ERROR_TYPE, kind)
        span.set_status(Status(StatusCode.ERROR, str(error) if error is not None else outcome))
    span.end()
    unregister(span)
    labels = {sc.SESSION_OUTCOME: outcome, **scope.agent_attrs}
    scope.instruments.sessions.add(1, labels)
    scope.instruments.agent_duration.record(time.perf_counter() - scope.started, labels)


# --- model turns ---------------------------------------------------------------


@dataclass(eq=False, slots=True)
class TurnScope:
    """One model call in flight."""

    span: Span
    session: SessionScope | None
    model: str
    attrs: _ModelAttrs
    instruments: Instruments
    context: Context
    started: float
    # Set when the sampler dropped the span: the core books the ledger itself.
    direct_ledger: SessionLedger | None = None
    # The processor's entry for this span (None outside any session).
    entry: SpanEntry | None = None
    ended: bool = False
    # The resolved provider label, kept so a model learned at the end gets the same labels.
    provider: str = ""


def start_turn(
    session: SessionScope | None,
    model: str = "",
    *,
    provider: str | None = None,
    tracer_provider: APITracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    prompt: object = None,
) -> TurnScope:
    """Start a ``chat {model}`` span; raises if the session's cap or budget refuses it.

    The returned ``context`` has the turn span current: run the model call in
    it so spans of other instrumentations nest under the turn. ``prompt`` is
    recorded only when content capture is on. With no ``model`` the span is
    named ``chat`` until ``end_turn`` learns the model from the response.
    """
    if session is not None:
        tracer = session.tracer
        instruments = session.instruments
        provider_name = provider if provider is not None else session.provider_name
        attrs = _model_attrs(session.model_attrs, model, provider_name, session.role)
        parent = None if _ACTIVE.get() is session else session.context
    else:
        tracer = tracer_for(tracer_provider)
        instruments = instruments_for(meter_provider)
        provider_name = provider or ""
        attrs = _model_attrs(_GLOBAL_MODEL_ATTRS, model, provider_name, None)
        parent = None
    token = STARTING_IN.set(session.ledger) if session is not None else None
    try:
        # The limits processor admits the turn here, or refuses it by raising.
        span = tracer.start_span(
            attrs.span_name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={**attrs.base, **session.span_stamp}
            if session is not None and session.span_stamp
            else attrs.base,
        )
    finally:
        if token is not None:
            STARTING_IN.reset(token)
    direct = None
    entry = None
    if session is not None:
        entry = entry_of(span)
        if entry is None:
            # No processor saw this span (the sampler dropped it, or the provider
            # has none): the ledger still admits the call, and end_turn books it.
            # A refused call's span is dropped unended.
            session.ledger.admit()
            direct = session.ledger
    if prompt is not None and direct is None and capture_content():
        span.set_attribute(sc.GEN_AI_INPUT_MESSAGES, content_text(prompt))
    return TurnScope(
        span=span,
        session=session,
        model=model,
        attrs=attrs,
        instruments=instruments,
        context=trace.set_span_in_context(span, parent),
        started=time.perf_counter(),
        direct_ledger=direct,
        entry=entry,
        provider=provider_name,
    )


def _learn_model(turn: TurnScope, model: str) -> None:
    """Adopt the model a response named when the caller gave none.

    Price, span name, ``gen_ai.request.model`` and metric labels then all use
    it, so a turn that only learns its model from the response is still
    priced, booked and charted under that model rather than under "".
    """
    turn.model = model
    turn.attrs = _attrs_for(turn, model)
    if turn.span.is_recording():
        turn.span.update_name(turn.attrs.span_name)
        turn.span.set_attribute(sc.GEN_AI_REQUEST_MODEL, model)


def _count_cost(instruments: Instruments, attrs: _ModelAttrs, cost: float) -> None:
    if cost:
        instruments.cost.add(cost, attrs.cost)


def breaker_attributes(breaker: CircuitBreaker | AsyncCircuitBreaker | None) -> dict[str, str]:
    """Name and state of a sync breaker (async state needs the loop: see ``abreaker``)."""
    if breaker is None or isinstance(breaker, AsyncCircuitBreaker):
        return {}
    return {sc.BREAKER_NAME: breaker.name, sc.BREAKER_STATE: breaker.state().value}


def note_breaker(
    turn: TurnScope, name: str, state: CircuitState | str, instruments: Instruments | None = None
) -> None:
    """Put breaker name/state on the turn span and the breaker-state gauge."""
    value = state.value if isinstance(state, CircuitState) else state
    if turn.span.is_recording():
        turn.span.set_attribute(sc.BREAKER_NAME, name)
        turn.span.set_attribute(sc.BREAKER_STATE, value)
    (instruments or turn.instruments).breaker_state.set(
        sc.BREAKER_STATE_VALUE.get(value, 0), {sc.BREAKER_NAME: name}
    )


def end_turn(
    turn: TurnScope,
    usage: UsageSnapshot | None = None,
    *,
    error: BaseException | None = None,
    response_model: str | None = None,
    output: object = None,
    reasoning_tokens: int = 0,
) -> None:
    """Finish a turn: usage, cost and status on the span, metrics, ledger; then budget.

    On success, raises ``BudgetExceededError`` after the span has ended when
    this turn pushed an enforced session over its budget. Ends the span once.
    A turn started without a model is priced and labelled with
    ``response_model``. ``reasoning_tokens`` (already inside ``output_tokens``)
    is only reported, never priced again.
    """
    if turn.ended:
        return
    turn.ended = True
    if not turn.model and response_model:
        _learn_model(turn, response_model)
    span = turn.span
    duration = time.perf_counter() - turn.started
    instruments = turn.instruments
    entry = turn.entry
    # A turn inside another model-call span (a decorated turn called within
    # run_turn, say) is the same model call: the ledger books it once, through
    # the outer turn, and so do the metrics.
    nested = entry is not None and entry.outer is not None
    if error is not None:
        error_type = type(error).__qualname__
        if span.is_recording():
            failed: dict[str, Any] = {sc.ERROR_TYPE: error_type}
            if entry is not None and entry.iteration:
                failed[sc.SESSION_ITERATION] = entry.iteration
            span.set_attributes(failed)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.record_exception(error)
        span.end()
        if not nested:
            instruments.operation_duration.record(
                duration, {**turn.attrs.base, sc.ERROR_TYPE: error_type}
            )
        return
    snapshot = usage if usage is not None else _NO_USAGE
    model = turn.model
    priced = price_turn(model, snapshot) if model else _NOT_PRICED
    if span.is_recording():
        # One set_attributes call: each call takes the span's lock and cleans values.
        attributes = usage_to_attributes(snapshot)
        attributes[sc.COST_USD] = priced[0]
        if response_model:
            attributes[sc.GEN_AI_RESPONSE_MODEL] = response_model
        if reasoning_tokens:
            attributes[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning_tokens
        if output is not None and capture_content():
            attributes[sc.GEN_AI_OUTPUT_MESSAGES] = content_text(output)
        if entry is not None:
            # on_end books exactly this, without reading the attributes back.
            entry.own = (model, snapshot, priced)
            if entry.iteration:
                attributes[sc.SESSION_ITERATION] = entry.iteration
        span.set_attributes(attributes)
    span.end()
    if turn.direct_ledger is not None:
        # No processor saw this span: book it here.
        booked = book_own_turn(turn.direct_ledger, model, snapshot, priced)
    elif entry is not None and entry.booked is not None:
        booked = entry.booked
    else:
        booked = [(model, snapshot, priced[0])]  # outside any session: priced, not booked
    if not nested:
        instruments.operation_duration.record(duration, turn.attrs.base)
        for booked_model, booked_usage, cost in booked:
            attrs = turn.attrs if booked_model == model else _attrs_for(turn, booked_model)
            instruments.token_usage.record(
                booked_usage.input_tokens
                + booked_usage.cache_read_tokens
                + booked_usage.cache_write_tokens,
                attrs.input,
            )
            instruments.token_usage.record(booked_usage.output_tokens, attrs.output)
            _count_cost(instruments, attrs, cost)
    if turn.session is not None:
        exceeded = turn.session.ledger.check_budget()
        if exceeded is not None:
            raise exceeded


def _attrs_for(turn: TurnScope, model: str) -> _ModelAttrs:
    session = turn.session
    if session is not None:
        return _model_attrs(session.model_attrs, model, turn.provider, session.role)
    return _model_attrs(_GLOBAL_MODEL_ATTRS, model, turn.provider, None)


# --- tools ---------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class ToolScope:
    """One tool call in flight."""

    span: Span
    session: SessionScope | None
    name: str
    instruments: Instruments
    context: Context
    started: float
    decision: str = sc.PERMISSION_ALLOW
    ended: bool = False


def start_tool(
    session: SessionScope | None,
    name: str,
    *,
    call_id: str | None = None,
    arguments: object = None,
    tracer_provider: APITracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> ToolScope:
    """Start an ``execute_tool {name}`` span (permission checks come next)."""
    attributes: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
        sc.GEN_AI_TOOL_NAME: name,
        sc.GEN_AI_TOOL_TYPE: "function",
    }
    if call_id:
        attributes[sc.GEN_AI_TOOL_CALL_ID] = call_id
    if arguments is not None and capture_content():
        attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = content_text(arguments)
    if session is not None:
        attributes[sc.GEN_AI_AGENT_NAME] = session.role
        if session.provider_name:
            attributes[sc.GEN_AI_PROVIDER_NAME] = session.provider_name
        attributes.update(session.span_stamp)
        tracer, instruments = session.tracer, session.instruments
        parent = None if _ACTIVE.get() is session else session.context
    else:
        tracer, instruments = tracer_for(tracer_provider), instruments_for(meter_provider)
        parent = None
    token = STARTING_IN.set(session.ledger) if session is not None else None
    try:
        span = tracer.start_span(
            f"{sc.OP_EXECUTE_TOOL} {name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
    finally:
        if token is not None:
            STARTING_IN.reset(token)
    return ToolScope(
        span=span,
        session=session,
        name=name,
        instruments=instruments,
        context=trace.set_span_in_context(span, parent),
        started=time.perf_counter(),
    )


def note_permission(tool: ToolScope, outcome: PermissionOutcome) -> None:
    """Record the permission decision (allow/deny, modes, reason) on the tool span."""
    tool.decision = sc.PERMISSION_ALLOW if outcome.allowed else sc.PERMISSION_DENY
    if tool.span.is_recording():
        tool.span.set_attribute(sc.PERMISSION_DECISION, tool.decision)
        if outcome.required_mode:
            tool.span.set_attribute(sc.PERMISSION_REQUIRED_MODE, outcome.required_mode)
        if outcome.active_mode:
            tool.span.set_attribute(sc.PERMISSION_GRANTED_MODE, outcome.active_mode)
        if outcome.reason:
            tool.span.set_attribute(sc.PERMISSION_REASON, outcome.reason)


def end_tool(
    tool: ToolScope,
    *,
    result: object = None,
    error: BaseException | None = None,
    guardrails_checked: bool = False,
) -> None:
    """Finish a tool call: guardrail outcome, status, metrics. Ends the span once."""
    if tool.ended:
        return
    tool.ended = True
    span = tool.span
    labels: dict[str, str] = {sc.GEN_AI_TOOL_NAME: tool.name, sc.PERMISSION_DECISION: tool.decision}
    if tool.session is not None:
        labels.update(tool.session.agent_attrs)
    recording = span.is_recording()
    if isinstance(error, GuardrailViolatedError):
        if recording:
            span.set_attribute(sc.GUARDRAIL_OUTCOME, sc.GUARDRAIL_BLOCKED)
            span.set_attribute(sc.GUARDRAIL_NAME, error.guardrail)
            span.set_attribute(sc.GUARDRAIL_STAGE, error.stage)
        tool.instruments.guardrail_violations.add(
            1,
            {
                sc.GUARDRAIL_NAME: error.guardrail,
                sc.GUARDRAIL_STAGE: error.stage,
                **{k: v for k, v in labels.items() if k != sc.PERMISSION_DECISION},
            },
        )
        session_event(
            tool.session,
            sc.EVENT_GUARDRAIL,
            {
                sc.GEN_AI_TOOL_NAME: tool.name,
                sc.GUARDRAIL_NAME: error.guardrail,
                sc.GUARDRAIL_STAGE: error.stage,
            },
        )
    elif recording:
        span.set_attribute(
            sc.GUARDRAIL_OUTCOME, sc.GUARDRAIL_PASSED if guardrails_checked else sc.GUARDRAIL_NONE
        )
    if error is not None:
        error_type = type(error).__qualname__
        labels[sc.ERROR_TYPE] = error_type
        if recording:
            span.set_attribute(sc.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, str(error)))
    elif recording and result is not None and capture_content():
        span.set_attribute(sc.GEN_AI_TOOL_CALL_RESULT, content_text(result))
    span.end()
    tool.instruments.tool_calls.add(1, labels)
    tool.instruments.tool_duration.record(time.perf_counter() - tool.started, labels)


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
