"""The turn state machine: one model call, from admission to booking.

``run_turn``, ``arun_turn`` and ``@agent_turn`` (functions, coroutines,
generators, async generators and returned SDK streams) all drive this one
sequence; they differ only in how they run the user's function:

    begin      breaker permit, ledger admission, then the ``chat {model}``
               span; refused → no span, nothing counted, the error raised
    (run)      the adapter runs the call inside ``turn.context``
    finish     usage read, span ended with usage/cost, ledger settled, metrics;
               raises ``BudgetExceededError`` when an enforced level is over
    fail       breaker told, span ended with the error type, reservation
               released, the session's recovery bookkeeping
    stop       a stream closed early: book what was seen, never raise

Every method after ``begin`` is idempotent: the first end wins.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace import TracerProvider as APITracerProvider

# The key the OTel API stores the current span under (membership reads it too).
from opentelemetry.trace.propagation import _SPAN_KEY

from ...caller import warn_user
from ...circuit_breaker import BreakerPermit, CircuitOpenError
from ...pricing import PricedCall, has_pricing, price_call
from ...usage_tracking import BudgetExceededError, UsageSnapshot, usd_text
from .. import semconv as sc
from ..limits import membership
from ..limits.errors import TurnTimeoutError
from ..limits.ledger import (
    BREAKERS_HELD,
    Ledger,
    breaker_admit,
    breaker_ended,
    breaker_held,
    holding,
)
from ..limits.membership import SpanEntry
from ..limits.probe import _ProbeWait
from ..readings.sdk_attributes import write_known
from ..readings.tokens import usage_to_attributes
from . import conventions
from .breakers import note_state, refused_span
from .content import capture_content, content_text
from .failures import end_span, error_type, record_error
from .labels import GLOBAL_LABELS, ModelLabels, model_labels
from .metrics import Instruments, instruments_for
from .providers import tracer_for
from .session import SessionScope

#: Read once: an enum member lookup costs about 0.2 µs, and every turn starts a span.
_CLIENT = SpanKind.CLIENT

_ZERO = UsageSnapshot()
_NOT_PRICED = PricedCall(0.0, None, True)  # a turn with no model is not priced
#: Token counts above this cannot be exported (OTLP ints are signed 64-bit).
MAX_TOKENS = 2**63 - 1


def check_usage(usage: UsageSnapshot, what: str = "usage") -> None:
    """Reject token counts no exporter can carry, naming the field and value."""
    for name in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"):
        value = getattr(usage, name)
        if value > MAX_TOKENS:
            raise ValueError(f"{what}.{name} must be < 2**63, got {value}")


@dataclass(eq=False, slots=True)
class TurnCall:
    """One model call in flight (see the module docstring for its states)."""

    span: Span
    session: SessionScope | None
    model: str
    provider: str
    labels: ModelLabels
    instruments: Instruments
    context: Context
    started: float
    entry: SpanEntry | None
    permit: BreakerPermit | None
    ended: bool = False

    @property
    def iteration(self) -> int:
        """The admission number of this call in its session (0 outside any)."""
        entry = self.entry
        return entry.call.iteration if entry is not None and entry.call is not None else 0

    # -- begin ----------------------------------------------------------------

    @classmethod
    def begin(
        cls,
        session: SessionScope | None,
        model: str = "",
        *,
        provider: str | None = None,
        usage: UsageSnapshot | None = None,
        prompt: object = None,
        tracer_provider: APITracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> TurnCall:
        """Admit and start one model call; raises the refusal before anything runs.

        ``usage`` known up front is what the call reserves; ``prompt`` is
        recorded only with content capture on.
        """
        probe = True
        deadline = 0.0
        while True:
            try:
                admitted = _admit(
                    session, model, provider, usage, tracer_provider, meter_provider, False, probe
                )
                break
            except _ProbeWait as wait:
                # Another call of this model is its probe: wait for it (bounded).
                now = time.monotonic()
                deadline = deadline or now + wait.timeout
                if not wait.probe.wait(deadline - now):
                    probe = False  # waited long enough: run unreserved
        return cls._start(admitted, prompt)

    @classmethod
    async def abegin(
        cls,
        session: SessionScope | None,
        model: str = "",
        *,
        provider: str | None = None,
        usage: UsageSnapshot | None = None,
        prompt: object = None,
        tracer_provider: APITracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> TurnCall:
        """``begin`` for coroutines: fleet scopes are asked without blocking the loop.

        The local levels admit at once (a lock and a few additions); the fleet
        round trips and any wait for a model's probe call are awaited, their
        network I/O off the event loop.
        """
        probe = True
        deadline = 0.0
        while True:
            try:
                admitted = _admit(
                    session, model, provider, usage, tracer_provider, meter_provider, True, probe
                )
                break
            except _ProbeWait as wait:
                # Awaited, never blocking the loop (see ``limits.probe``).
                now = time.monotonic()
                deadline = deadline or now + wait.timeout
                if not await wait.probe.await_end(deadline - now):
                    probe = False
        entry, permit = admitted[6], admitted[7]
        if entry is not None and entry.call is not None and entry.call.fleet_deferred:
            try:
                await entry.call.leaf.areserve_fleet(entry.call)
            except BaseException:
                if permit is not None:
                    permit.released()
                raise
        return cls._start(admitted, prompt)

    @classmethod
    def _start(cls, admitted: _Admitted, prompt: object) -> TurnCall:
        """Start the span of an admitted call (the part of ``begin`` after admission)."""
        session, model, provider_name, labels, tracer, instruments, entry, permit, here = admitted
        try:
            span = tracer.start_span(
                labels.span_name,
                context=here,
                kind=_CLIENT,
                attributes={**labels.base, **session.span_stamp}
                if session is not None and session.span_stamp
                else labels.base,
            )
        except BaseException:
            if permit is not None:
                permit.released()
            if entry is not None and entry.call is not None:
                entry.call.leaf.release(entry.call, uncount=True)
            raise
        if entry is not None:
            membership.register(entry, span.get_span_context())
        context = (
            membership.call_context(span, entry, here)
            if entry is not None
            else trace.set_span_in_context(span, here)
        )
        if prompt is not None and capture_content() and span.is_recording():
            span.set_attribute(sc.GEN_AI_INPUT_MESSAGES, content_text(prompt))
        # Positional: this runs on every call (same order as the fields above).
        return cls(
            span,
            session,
            model,
            provider_name,
            labels,
            instruments,
            context,
            time.perf_counter() if instruments.live else 0.0,  # read by the metrics only
            entry,
            permit,
        )

    def streams(self) -> None:
        """The call's response arrives as a stream (a generator turn, a returned SDK stream)."""
        span = self.span
        if span.is_recording():
            span.set_attribute(sc.GEN_AI_REQUEST_STREAM, True)

    # -- end ------------------------------------------------------------------

    def _note_breaker(self) -> None:
        permit = self.permit
        if permit is None:
            return
        state = note_state(self.instruments, permit.breaker)
        if self.span.is_recording():
            self.span.set_attribute(sc.BREAKER_NAME, permit.name)
            self.span.set_attribute(sc.BREAKER_STATE, state)

    def fail(self, error: BaseException) -> None:
        """The call failed: breaker, span, reservation released, recovery. Never raises."""
        if self.ended:
            return
        self.ended = True
        if self.permit is not None:
            breaker_ended(self.permit, error)  # a runtime refusal is no provider failure
            self._note_breaker()
        span = self.span
        if span.is_recording() and self.iteration:
            span.set_attribute(sc.SESSION_ITERATION, self.iteration)
        record_error(span, error)
        end_span(span)
        entry = self.entry
        if entry is not None:
            membership.forget(entry)
            claim = entry.call
            if claim is not None and claim.library is not None and not claim.booked_usage:
                # The model call inside the turn returned (the client guard or another
                # instrumentation read its usage) and the body raised after it: the
                # provider billed the call, so it is booked, not released.
                model, usage = claim.library
                claim.leaf.settle(claim, self.model or model, usage, None, self.provider)
            elif (
                claim is not None
                and claim.estimated is not None
                and not claim.booked_usage
                and not isinstance(error, TurnTimeoutError)  # booked late, if it returns
            ):
                # A stream that failed after its response began (an error event, a
                # dropped connection): what its request and the text seen say, as a
                # stream closed early is booked.
                claim.leaf.settle(claim, self.model, None, None, self.provider)
            elif claim is not None:
                # A timed-out call may still finish and be billed: its fleet holds
                # stay for the late booking (or expire with their lease).
                claim.leaf.release(claim, keep_fleet=isinstance(error, TurnTimeoutError))
        if self.instruments.live:
            self.instruments.operation_duration.record(
                time.perf_counter() - self.started,
                {**self.labels.base, sc.ERROR_TYPE: error_type(error)},
                self.context,
            )
        session = self.session
        if session is not None and session.on_turn_failed is not None:
            session.on_turn_failed(error)

    def not_run(self, error: BaseException) -> None:
        """The turn's body never ran: nothing was sent. Never raises.

        Its callable was called with arguments it does not take, or a sync turn
        was handed a coroutine (an async function, unawaited). The call is
        uncounted and released; no breaker counts it and no recovery is asked for,
        as nothing failed at a provider. Its span says why.
        """
        if self.ended:
            return
        self.ended = True
        if self.permit is not None:
            self.permit.released()
        span = self.span
        record_error(span, error)
        end_span(span)
        entry = self.entry
        if entry is not None:
            membership.forget(entry)
            claim = entry.call
            if claim is not None:
                claim.leaf.release(claim, uncount=True)

    def book_late(
        self,
        usage: UsageSnapshot | None,
        *,
        explicit: bool = False,
        response_model: str | None = None,
    ) -> None:
        """A call that timed out, then returned after all: book what it used, once.

        Its turn already failed (``fail``: the span ended with the timeout and
        the reservation was freed), but the provider billed the call, so the
        ledger, the tracker and any fleet holds (kept for this) book it now.
        """
        entry = self.entry
        claim = entry.call if entry is not None else None
        if claim is None or usage is None or claim.booked_usage:
            return  # nothing said, or a library span inside it booked it already
        if claim.inner and not explicit:
            return  # its result's usage belongs to the calls made inside it
        claim.leaf.settle(claim, self.model or response_model or "", usage, None, self.provider)

    def stop(
        self,
        usage: UsageSnapshot | None,
        *,
        response_model: str | None = None,
        output: object = None,
    ) -> None:
        """A stream the caller closed early: book what was seen; never raises."""
        if self.ended:
            return
        if self.permit is not None:
            self.permit.released()  # the permit then ignores finish's "succeeded"
        entry = self.entry
        if usage is None and entry is not None and entry.call is not None:
            entry.call.ended_early = "stream"  # its warning then says why no usage arrived
        # Booked and reported either way; the session's next call is refused.
        with contextlib.suppress(BudgetExceededError):
            self.finish(usage, response_model=response_model, output=output)

    def usage_unread(self) -> None:
        """The caller's usage callback gave no usage: the warning of its booking says so,
        rather than that the response had none."""
        entry = self.entry
        if entry is not None and entry.call is not None:
            entry.call.ended_early = "usage="

    def finish(
        self,
        usage: UsageSnapshot | None,
        *,
        explicit: bool = False,
        response_model: str | None = None,
        output: object = None,
        reasoning_tokens: int = 0,
    ) -> None:
        """The call returned: usage and cost on the span, ledger settled, metrics.

        ``usage=None`` means the response carried none. ``explicit`` marks
        usage the caller gave (``usage=``); a turn inside which other calls
        were booked books only explicit usage, since its result's usage is
        theirs. Raises ``BudgetExceededError`` after the span has ended when an
        enforced level of the session's chain is over its budget.
        """
        if self.ended:
            return
        self.ended = True
        permit = self.permit
        if permit is not None:
            breaker_ended(permit, None)
            self._note_breaker()
        if not self.model and response_model:
            self._learn_model(response_model)
        entry = self.entry
        claim = entry.call if entry is not None else None
        model = self.model
        # The model that answered, as far as anything read it: the result's, else the
        # client guard's (or a library span's) reading of the response inside the turn.
        answered = response_model
        if claim is not None:
            if claim.inner and not explicit:
                usage = _ZERO  # its result's usage belongs to the calls made inside it
            library = claim.library
            if library is not None:
                if usage is None or usage == _ZERO:
                    library_model, usage = library
                    model = model or library_model
                    answered = answered or library_model
                elif explicit:
                    answered = answered or library[0]
                    _check_given_usage(model or library[0], usage, library[1], self.provider)
        snapshot = usage if usage is not None else _ZERO
        priced = price_call(model, snapshot, self.provider) if model else _NOT_PRICED
        if answered and answered != model and model:
            _check_declared_model(model, answered, self.provider, snapshot, priced)
        if usage is None and model:
            if claim is not None:
                # No call is free under a budget: booked at an estimate (cost.source).
                estimate = claim.leaf.estimate_missing(claim, model, self.provider)
                if estimate is not None:
                    priced = estimate
            if priced.source != sc.COST_SOURCE_ESTIMATED:
                # $0 because nothing was read, not because a price said so.
                priced = priced._replace(source=sc.COST_SOURCE_NO_USAGE)
        known = priced.known
        span = self.span
        if span.is_recording():
            # No usage read: the token counts are unknown, not 0 (``usage.missing`` says so).
            attributes = usage_to_attributes(snapshot) if usage is not None else {}
            attributes[sc.COST_USD] = priced[0]
            if model:
                attributes[sc.COST_SOURCE] = priced.source
                if conventions.proposed():  # off by default: no call, no empty dict
                    attributes.update(conventions.cost_attributes(priced[0], priced.source))
            if response_model:
                attributes[sc.GEN_AI_RESPONSE_MODEL] = response_model
            if reasoning_tokens:
                attributes[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning_tokens
            if usage is None:
                attributes[sc.USAGE_MISSING] = True
            if output is not None and capture_content():
                attributes[sc.GEN_AI_OUTPUT_MESSAGES] = content_text(output)
            if claim is not None:
                attributes[sc.SESSION_ITERATION] = claim.iteration
            write_known(span, attributes)
        end_span(span)
        cost = priced.cost
        if entry is not None:
            membership.forget(entry)
        if claim is not None and not claim.booked_usage:
            cost = claim.leaf.settle(
                claim, model, usage, price=priced, provider=self.provider, unpriced=not known
            )
        # (Booked already: the call's usage arrived after its session had closed, and the
        # client guard or another instrumentation's span booked it late, exactly once.)
        if self.instruments.live:
            self._record_metrics(model, snapshot, cost, usage is None, known, reasoning_tokens)
        if claim is not None and claim.over is not None and self.session is not None:
            # Found by the booking itself, under the ledger's lock.
            raise claim.leaf.over_error(claim.over, later=claim.over_later)

    def _learn_model(self, model: str) -> None:
        """Adopt the model a response named when the caller gave none."""
        self.model = model
        self.labels = self._labels_for(model)
        if self.span.is_recording():
            self.span.update_name(self.labels.span_name)
            self.span.set_attribute(sc.GEN_AI_REQUEST_MODEL, model)
        entry = self.entry
        if entry is not None and entry.call is not None and not entry.call.model:
            entry.call.model = model

    def _labels_for(self, model: str) -> ModelLabels:
        session = self.session
        if session is not None:
            return model_labels(session.model_attrs, model, self.provider, session.role)
        return model_labels(GLOBAL_LABELS, model, self.provider, None)

    def _record_metrics(
        self,
        model: str,
        usage: UsageSnapshot,
        cost: float,
        missing: bool,
        known: bool,
        reasoning: int,
    ) -> None:
        instruments = self.instruments
        labels = self.labels if model == self.model else self._labels_for(model)
        # Recorded after the span ended, outside it: its context names the span, so the
        # exemplars point at this call, not at whatever span is current (the session's).
        context = self.context
        instruments.operation_duration.record(
            time.perf_counter() - self.started, labels.base, context
        )
        total_input = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        if total_input or usage.output_tokens:
            instruments.token_usage.record(total_input, labels.input, context)
            instruments.token_usage.record(usage.output_tokens, labels.output, context)
            if usage.cache_read_tokens:
                instruments.token_detail.add(
                    usage.cache_read_tokens, labels.detail[sc.TOKEN_KIND_CACHE_READ], context
                )
            if usage.cache_write_tokens:
                instruments.token_detail.add(
                    usage.cache_write_tokens, labels.detail[sc.TOKEN_KIND_CACHE_WRITE], context
                )
        if reasoning:
            instruments.token_detail.add(reasoning, labels.detail[sc.TOKEN_KIND_REASONING], context)
        if cost:
            instruments.cost.add(cost, labels.cost)
        if missing:
            instruments.calls_without_usage.add(1, labels.cost, context)
        if model and not known:
            instruments.unpriced_calls.add(1, labels.cost, context)


#: What admission hands to the span start: (session, model, provider, labels,
#: tracer, instruments, entry, permit, context the call starts in).
_Admitted = tuple[
    SessionScope | None,
    str,
    str,
    ModelLabels,
    Tracer,
    Instruments,
    SpanEntry | None,
    BreakerPermit | None,
    Context,
]


def _admit(
    session: SessionScope | None,
    model: str,
    provider: str | None,
    usage: UsageSnapshot | None,
    tracer_provider: APITracerProvider | None,
    meter_provider: MeterProvider | None,
    defer_fleet: bool,
    probe: bool = False,
) -> _Admitted:
    """The breaker permit and the ledger admission of one call; raises the refusal.

    ``defer_fleet`` leaves the fleet scopes to the caller (``abegin`` awaits them).
    """
    if session is not None:
        tracer, instruments = session.tracer, session.instruments
        provider_name = provider if provider is not None else session.provider_name
        labels = model_labels(session.model_attrs, model, provider_name, session.role)
        parent = None if membership.CURRENT.get() is session else membership.parent_for(session)
        ledger: Ledger | None = session.ledger
        breaker = session.breaker
    else:
        tracer, instruments = tracer_for(tracer_provider), instruments_for(meter_provider)
        provider_name = provider or ""
        labels = model_labels(GLOBAL_LABELS, model, provider_name, None)
        parent = None
        ledger = None
        breaker = None
        membership.note_outside()
    # The context the call starts in, read once: its placement in the ledger
    # tree, its span's parent and its own context all derive from it.
    here = parent if parent is not None else otel_context.get_current()
    if session is None:
        ledger = membership.root_for_context(here)
    permit = None
    if breaker is not None and not breaker_held(here.get(BREAKERS_HELD), breaker):  # type: ignore[arg-type]
        # (A turn inside a call holding this breaker's permit, e.g. in a sub-session
        # sharing it, is that call's: the breaker counts the outermost call once.)
        try:
            permit = breaker_admit(breaker)
        except CircuitOpenError as exc:
            refused_span(session, model, exc)  # refused before it counts as a call
            raise
        # What runs inside the turn, at any depth, finds the permit held.
        here = holding(here, permit)
    entry: SpanEntry | None = None
    if ledger is not None:
        # Admitted before the span starts: a refused call leaves no span at
        # all, in our processor or anyone else's, and nothing is counted.
        expected = 0.0
        priced = True
        if ledger.has_budget():
            # Reservations and prices matter only where a budget can refuse.
            upfront = (
                price_call(model, usage, provider_name).cost
                if usage is not None and model
                else None
            )
            expected = ledger.expected_cost(model, upfront)
            priced = not model or has_pricing(model, provider_name)
        if session is not None and parent is None and here.get(_SPAN_KEY) is session.span:
            # The session's own span is current (a turn made directly in its
            # block, the usual case): the call starts under the session itself,
            # which is what looking its span up would find.
            under: SpanEntry | None = session.entry
        else:
            under = membership.enclosing_context(here)
        if under is None or under.ledger is not ledger:
            # The session named here is the one booked, whatever span encloses it.
            under = SpanEntry(ledger, under.call if under is not None else None)
        try:
            entry = membership.admit_call(
                under,
                model,
                expected,
                ours=True,
                priced=priced,
                defer_fleet=defer_fleet,
                probe=probe,
            )
        except BaseException:
            if permit is not None:
                permit.released()
            raise
    return (session, model, provider_name, labels, tracer, instruments, entry, permit, here)


#: (declared model, response model, provider) pairs already checked: each pair is
#: priced and warned about once (bounded: names come from responses).
_DECLARED_CHECKED: set[tuple[str, str, str]] = set()


def _check_declared_model(
    declared: str, answered: str, provider: str, usage: UsageSnapshot, priced: PricedCall
) -> None:
    """Warn once when a turn's declared model and the model that answered price differently.

    The declared model prices the turn (``model=`` wins, as documented); a call
    that really went to a dearer model would then be booked, and held against a
    budget, at the wrong price without a word. A dated snapshot of the declared
    model prices the same and says nothing; models without a price are not compared.
    """
    key = (declared, answered, provider)
    if key in _DECLARED_CHECKED or len(_DECLARED_CHECKED) >= 1024:
        return
    _DECLARED_CHECKED.add(key)
    actual = price_call(answered, usage, provider)
    if not (priced.known and actual.known) or actual.cost == priced.cost:
        return
    warn_user(
        f"a turn declared model {declared!r} but the response came from {answered!r}: "
        f"the call is booked at the price of {declared!r} (${usd_text(priced.cost)}) where "
        f"{answered!r} costs ${usd_text(actual.cost)}. Declare the model you call, or leave "
        "model= out to price the model the response names",
        RuntimeWarning,
    )


#: Models whose turns' ``usage=`` was found below the response's reading: each warned once.
_GIVEN_CHECKED: set[str] = set()


def _check_given_usage(
    model: str, given: UsageSnapshot, read: UsageSnapshot, provider: str
) -> None:
    """Warn once per model when ``usage=`` books less than the response inside the turn used.

    ``usage=`` wins (as documented): it is what the turn is booked at. A value
    copied from an example, or counted by hand, then holds a budget at a
    fraction of what the provider bills, which the client guard (or a library
    span) read from the response itself, so it is said.
    """
    if model in _GIVEN_CHECKED or len(_GIVEN_CHECKED) >= 1024:
        return
    # Both at the model the turn is booked at: a different model that answered is the
    # declared-model warning's to say, not a difference of usage.
    booked = price_call(model, given, provider)
    billed = price_call(model, read, provider)
    if not (booked.known and billed.known) or billed.cost <= booked.cost:
        return
    _GIVEN_CHECKED.add(model)
    warn_user(
        f"a turn of model {model!r} was given usage= worth ${usd_text(booked.cost)} "
        f"({given.input_tokens + given.cache_read_tokens + given.cache_write_tokens} input, "
        f"{given.output_tokens} output tokens), but the response read inside it used "
        f"{read.input_tokens + read.cache_read_tokens + read.cache_write_tokens}"
        f" input and {read.output_tokens} output tokens, worth ${usd_text(billed.cost)}: the "
        "turn is booked, and held against its budget, at usage= (as documented). Pass the "
        "response's own usage, or leave usage= out to book what the response says",
        RuntimeWarning,
    )


__all__ = ["MAX_TOKENS", "TurnCall", "check_usage", "refused_span"]


def arguments_refused(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], error: BaseException
) -> bool:
    """Whether calling ``fn`` with these arguments raised ``error`` before its body ran.

    Asked once the call raised ``TypeError`` where it was made: the error has
    no frame below that one (a body that ran, a wrapper of ``fn`` included,
    added its own frame to the traceback), and the arguments do not fit the
    signature of ``fn`` itself (not of what it wraps), so nothing was sent.
    """
    if type(error) is not TypeError:
        return False
    trace = error.__traceback__
    if trace is None or trace.tb_next is not None:
        return False  # raised inside a body that ran: a failed call, not a refused one
    try:
        inspect.signature(fn, follow_wrapped=False).bind(*args, **kwargs)
    except TypeError:
        return True
    except ValueError:
        return False  # (no signature to read: a builtin)
    return False
