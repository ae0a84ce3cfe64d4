"""The span processor that admits and books model calls for every instrumentation.

It sees every span its provider makes, ours and any other GenAI
instrumentation's. ``on_start`` is the admission point: an exception raised
there reaches the code starting the span, so a refused call's body never runs.
``on_end`` books what another instrumentation's model span reported; it never
raises (that would hide the user's own exception). Which session and which
call a span belongs to is decided in ``membership``; whether a span is a model
call, and what it used, in ``recognise``.

Our own spans pass through untouched: the core admits its turns before it
starts their spans (a refused turn has no span at all) and books them itself,
knowing their usage without reading attributes back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from ...caller import log_once
from ...pricing import has_pricing
from .. import semconv as sc
from ..readings.recognise import (
    CallReading,
    classify_start,
    model_from_attributes,
    provider_from_attributes,
    read_call,
    span_attributes,
)
from ..readings.sdk_attributes import span_fields, write_known
from ..readings.tools import read_tool, tool_start
from . import loops, membership, unanswered
from .booking import book
from .door import IN_REQUEST
from .errors import FleetUnavailableError
from .estimate import output_estimate_usd, request_estimate_usd
from .guard import awaits_fleet, awaits_request, note_refusal, reads_request
from .ledger import Claim, breaker_span_ended
from .membership import SpanEntry
from .probe import _ProbeWait, other_event_loop


def _warn_once(message: str) -> None:
    # Said once per process (whatever the message): the first failure tells the cause.
    log_once("processor", message, level=logging.ERROR, exc_info=True)


class LimitsProcessor(SpanProcessor):
    """Admits model calls against their session's chain of caps and budgets; books usage.

    Attached once per SDK ``TracerProvider``, ahead of the processors already
    there (see ``ensure_limits_processor``).
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        producer, name, parent, context = span_fields(span)
        if producer == sc.INSTRUMENTATION_SCOPE:
            return  # admitted and registered by the core (see the module docstring)
        try:
            found = membership.enclosing(parent, parent_context, False)
        except FleetUnavailableError as unavailable:
            # The store that holds this span's remote session is unreachable: that
            # refuses a model call (on_store_error="refuse"), never any other span (a
            # server's, a database's), which then runs outside every session.
            if classify_start(name, span_attributes(span), producer):
                note_refusal(unavailable)
                raise
            return
        if found is None:
            # Outside every session: a model call in a generator that holds a block
            # may still be in one (walked only for a model span, not every span).
            if not membership.GENERATOR_BLOCKS:
                return
            if not classify_start(name, span_attributes(span), producer):
                return
            held = membership.in_generator_block()
            if held is None:
                return
            found = held.entry
        under = found
        attrs = span_attributes(span)
        if not classify_start(name, attrs, producer):
            entry = SpanEntry(
                under.ledger, under.call, in_library=under.in_library, in_tool=under.in_tool
            )
            # Inside a tool call: the span's parent's, else the one running here. A
            # producer that parents its spans on a run tree of its own (LangChain's)
            # starts its tool span beside the tool call of ours a framework's tool door
            # runs here: the same call, which that one counts.
            tool = under if under.in_tool else _tool_running_here(under)
            if tool is not None:
                entry.in_tool = True
                entry.outer_tool = tool if tool.tool_call else tool.outer_tool
                entry.tool_entry = tool.tool_entry or tool
            else:
                found_tool = tool_start(name, attrs)
                if found_tool is not None:
                    entry.in_tool = entry.tool_call = True
                    loops.admit_tool(under.ledger, *found_tool)  # may refuse a looping call
        else:
            if membership.GENERATOR_BLOCKS:
                # (Asked for model spans only: the stack walk is not for every span.)
                under = membership.held_below(under)
            model = model_from_attributes(attrs)
            ledger = under.ledger
            budgeted = ledger._budgeted  # has_budget(), read as the field: one call fewer
            expected = ledger.expected_cost(model) if budgeted else 0.0
            priced = True
            if budgeted and model:
                priced = has_pricing(model, provider_from_attributes(attrs))
            scope = producer or ""  # (a span of a provider with no scope name)
            try:
                if _running_loop() is None:
                    # On a thread (the usual case): admitted here, or waits for a probe.
                    unnamed = not model and defers_fleet(scope)
                    try:
                        # Positional (ours, priced, force, defer_fleet, probe, by_guard,
                        # producer, lead): keywords cost ~90 ns more a call. A first call
                        # (nothing expected) may wait for its model's probe, also when
                        # the budget refuses it only for what that probe reserves. One
                        # naming no model (OpenLLMetry's), whatever is learned, if the
                        # guard reads its request: its model's first call may be in flight.
                        entry = membership.admit_call(
                            under,
                            model,
                            expected,
                            False,
                            priced,
                            False,
                            unnamed,
                            True,
                            False,
                            scope,
                            (not expected and bool(model)) or unnamed,
                        )
                    except _ProbeWait as wait:
                        entry = _after_probe(under, model, priced, wait, scope, attrs, span)
                else:
                    entry = _admit_on_loop(under, model, expected, priced, attrs, scope, span)
            except BaseException as refusal:
                note_refusal(refusal)  # for SDKs that swallow it: the client guard raises it
                raise
            if not entry.same_call and entry.call is not None:
                # The session iteration on a library model span that just started.
                write_known(span, {sc.SESSION_ITERATION: entry.call.iteration})
        if context is not None:  # (the SDK types its field optional; a started span has one)
            membership.register(entry, context)

    def on_end(self, span: ReadableSpan) -> None:
        scope, name, _, context = span_fields(span)
        if scope == sc.INSTRUMENTATION_SCOPE:
            return  # the core ends and books its own spans
        producer = scope or ""
        entry = membership.take(context)
        if entry is None:
            return
        try:
            if entry.tool_call or not (entry.in_tool or entry.model_span):
                # A tool call (some producers say so only at the end): loop detection.
                tool = read_tool(name, span.attributes, failed=_failed(span))
                if tool is not None:
                    if not entry.counted_inside:  # else ours inside booked this very call
                        loops.record_tool(entry.ledger, tool)
                    return
                if entry.tool_call:
                    return
            # By name, attributes and producer scope (read_span, with the scope read above).
            reading = read_call(name, span_attributes(span), producer)
            if membership.WAITING and entry.call is None:  # (a span waiting to be admitted)
                entry = _ended_waiting(entry, reading)
            if reading is None:
                if entry.call is not None and entry.call.permit is not None:
                    _tell_breaker(entry.call, span, None)  # (not a model call after all)
                return
            if not entry.model_span:
                late = _late_entry(entry, span, reading)
                if late is None:
                    return
                entry = late
            if entry.call is not None:
                if entry.call.permit is not None:
                    _tell_breaker(entry.call, span, reading)
                failed = False
                if reading.usage is None:
                    # Whether it failed matters only to a call that reported no usage;
                    # so does a request still on the wire when its span ended.
                    failed = _failed(span)
                    error_type = (span.attributes or {}).get("error.type")
                    unanswered.span_ended(entry.call, str(error_type) if error_type else None)
                book(entry, reading, producer, failed)
        except Exception:
            _warn_once("limits processor failed to book a span; continuing")

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _ended_waiting(entry: SpanEntry, reading: CallReading | None) -> SpanEntry:
    """A span that waited for its admission (``membership.WAITING``) ended before it.

    Refused or cancelled while it waited, its request was never sent: nothing
    is counted. Answered, the guard never saw its request (a client it does not
    wrap sent it): it is counted now, and booked as a span known only at its end.
    """
    if entry not in membership.WAITING:
        return entry
    if reading is None or reading.usage is None:
        membership.stop_waiting(entry)
        return entry
    return membership.admit_waiting(entry, 0.0, defer_fleet=True, force=True)


def defers_fleet(producer: str) -> bool:
    """Whether a model span of ``producer`` that names no model at its start asks its
    fleet scopes only once the client guard read its request (``door.begin``, ``afleet``).

    Asked at its start, such a span's call is a call of model "" reserving nothing
    there: neither the scope's learned cost nor its first-call probe applies, and a
    first burst of 20 passed a fleet budget of five calls. Deferred, the fleet is
    asked as a call of the request's model, after ``Ledger.admit_named`` decided it
    at the local levels, before anything is sent. Only a client span whose request
    the guard reads (``guard.reads_request``); any other keeps asking at its start.
    """
    return reads_request(producer)


def _tool_running_here(under: SpanEntry) -> SpanEntry | None:
    """The tool call whose span is current here, if it is not ``under`` (the span's parent)."""
    running = membership.open_entry(None)
    if running is None or running is under or not running.in_tool:
        return None
    return running


def _after_probe(
    under: SpanEntry,
    model: str,
    priced: bool,
    wait: _ProbeWait,
    producer: str,
    attrs: Mapping[str, Any] | None,
    span: Span,
) -> SpanEntry:
    """Admit a library model span on a thread once its model's probe call settled.

    The first call of a model whose cost nothing tells runs alone (the probe);
    a call of that model meanwhile waits for it here, up to the probe's
    timeout, then is admitted at the cost the probe taught (or unreserved, if
    the probe never settled in time). On trio's thread (no asyncio loop runs,
    so the span took the thread's path) it never waits: that thread is the
    loop the probe's own call runs on, stopped until the wait ran out (30 s by
    default). It is admitted as on an asyncio loop instead.
    """
    if other_event_loop():
        ledger = under.ledger
        expected = ledger.expected_cost(model) if ledger.has_budget() else 0.0
        return _admit_on_loop(under, model, expected, priced, attrs, producer, span)
    deadline = time.monotonic() + wait.timeout
    probe = True
    while True:
        if not wait.probe.wait(deadline - time.monotonic()):
            probe = False  # waited long enough: run unreserved
        ledger = under.ledger
        expected = ledger.expected_cost(model) if ledger.has_budget() else 0.0
        try:
            return membership.admit_call(
                under,
                model,
                expected,
                ours=False,
                priced=priced,
                defer_fleet=not model and defers_fleet(producer),
                probe=probe,
                producer=producer,
                lead=probe and not expected,
            )
        except _ProbeWait as again:
            wait = again


def _admit_on_loop(
    under: SpanEntry,
    model: str,
    expected: float,
    priced: bool,
    attrs: Mapping[str, Any] | None,
    producer: str,
    span: Span,
) -> SpanEntry:
    """Admit a library model span starting on an event loop's thread, without blocking it.

    It is admitted at once, or waits for the guard to admit it when the budget
    refuses it only for what its model's first call in flight reserves (see
    ``membership.WAITING``); it never blocks the loop. With nothing learned of its model,
    it reserves what its output cap costs (the span's ``max_tokens``, else the
    provider's default output length), and the client guard sets that to its
    request's estimate when the request is built (raised; or lowered, from the
    default length, to a request's own smaller cap): other tasks' spans may start
    in between (a client's first request awaits its platform lookup first), and
    a burst of them reserving nothing would all pass a nearly spent budget. Its
    fleet scopes (a Redis round trip each) are not asked here when the guarded
    client will send the request: the guard awaits them, off the loop, before
    anything is sent (``guard.awaits_fleet``).
    """
    provider = provider_from_attributes(attrs)
    default_cap = False
    first = not expected
    if not model and first and under.ledger._budgeted:
        running = _request_running_here()
        if running is not None:
            # A span that names no model at its start, started inside the async client's
            # request method (OpenInference's): the request names it, and what it may
            # cost. Admitted reserving nothing, a burst of them all ran (20 first calls
            # under five calls' budget).
            model, asked_by, body = running
            provider = provider or asked_by
            priced = has_pricing(model, provider)
            expected = request_estimate_usd(model, body, provider) or 0.0
    if not expected and model and priced and under.ledger._budgeted:
        cap = attrs.get(sc.GEN_AI_REQUEST_MAX_TOKENS) if attrs is not None else None
        if type(cap) is int and cap > 0:
            expected = output_estimate_usd(model, cap, provider)
        else:
            # No cap on the span at its start (the official OpenAI instrumentation sets
            # it only when the span ends): a placeholder until the guard reads the request.
            expected = output_estimate_usd(model, None, provider)
            default_cap = True
    # (Not on trio's thread: the guard awaits a deferred fleet hold on asyncio only.)
    defer = (
        bool(under.ledger.fleet_scopes())
        and (awaits_fleet(provider) or (not model and defers_fleet(producer)))
        and _running_loop() is not None
    )
    try:
        entry = membership.admit_call(
            under,
            model,
            expected,
            ours=False,
            priced=priced,
            probe=False,
            defer_fleet=defer,
            producer=producer,
            # (A span naming no model, whatever is learned: its model's first call may be
            # in flight, as its request tells the guard, ``door._name_waiting``.)
            lead=(first or not model) and awaits_request(producer, provider),
        )
    except _ProbeWait as wait:
        # Refused only for what its model's first call in flight reserves (each of a
        # first burst reserves its request's bound): the guard, which awaits this
        # request before it is sent, awaits that call's end and admits it then, at
        # what it cost (``membership.WAITING``). 20 first calls of the official
        # instrumentation's async client under five calls' budget: 1 ran, now 5.
        return membership.wait_for_admission(under, model, priced, producer, wait, span)
    if default_cap and not entry.same_call and entry.call is not None:
        entry.call.default_cap = True
    return entry


def _request_running_here() -> tuple[str, str, Mapping[str, Any]] | None:
    """(model, provider, body) of the async client request whose method runs here, if any."""
    run = IN_REQUEST.get()
    if run is None or not run.running:
        return None
    body = getattr(run.options, "json_data", None)
    if not isinstance(body, Mapping):
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None
    return model, run.provider, body


# Asked on every model span: get_running_loop() raises off a loop, which costs ~20x
# this plain check.
_running_loop = asyncio._get_running_loop


def _failed(span: ReadableSpan) -> bool:
    return span.status.status_code is StatusCode.ERROR


def _tell_breaker(call: Claim, span: ReadableSpan, reading: CallReading | None) -> None:
    """A call admitted through its session's breaker ended: its span tells the breaker
    how, unless the client guard tells it (it saw the request: its report counts)."""
    running = IN_REQUEST.get()
    if running is not None and running.claim is call:
        # The span ended inside the SDK's request method the guard follows (the
        # Anthropic SDK's own span, ended before an error is raised, and left UNSET
        # for a cancellation): the end of that method tells the breaker, with the
        # request's own error.
        return
    attributes = span.attributes or {}
    answered = reading is not None and (reading.usage is not None or _shows_answer(attributes))
    breaker_span_ended(call, answered, _failed(span), attributes.get("error.type"))


#: Attributes a model span carries only once its call was answered.
_ANSWER_ATTRIBUTES = (
    "gen_ai.response.id",
    "gen_ai.response.model",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.time_to_first_chunk",
)


def _shows_answer(attributes: Mapping[str, Any]) -> bool:
    """True when a model span shows its call was answered: a response read, or a stream
    that began (a streamed call is an answer once its stream began, read or not)."""
    if any(name in attributes for name in _ANSWER_ATTRIBUTES):
        return True
    # The official OpenAI instrumentation marks a call streamed only once the SDK
    # returned its stream (the response began), and ends a stream dropped unread with
    # error.type "_OTHER" (opentelemetry-util-genai's AbandonedStreamError).
    return (
        attributes.get("gen_ai.request.stream") is True and attributes.get("error.type") == "_OTHER"
    )


def _late_entry(entry: SpanEntry, span: ReadableSpan, reading: CallReading) -> SpanEntry | None:
    """A span known as a model call only at its end: the call another door admitted, or a new one.

    Too late to refuse it. If the request was admitted meanwhile in the same
    session (by the client guard on this strand, ``guard_call_during``, or by
    the guard or a client instrumentation's span on any strand: LangChain
    instrumentations start and end their spans in callback threads,
    ``late_same_call``), this span describes that call. A failed span
    with no usage that no door admitted is a request that was never sent (its
    refusal, raised by the guard or the client span, is why it failed): no
    call (None). Otherwise it is counted and booked now.
    """
    guarded = membership.guard_call_during(span.start_time or 0)
    if guarded is not None and guarded.call is not None:
        membership.take_recent(guarded.ledger, guarded.call)
        return SpanEntry(entry.ledger, guarded.call, True, True, in_library=True)
    if entry.call is None or not entry.call.ours or entry.in_library:
        failed = reading.usage is None and _failed(span)
        found = membership.late_same_call(
            entry.ledger, span.start_time or 0, span.end_time or 0, reading.model, failed
        )
        if found is not None:
            return SpanEntry(entry.ledger, found, True, True, in_library=True)
        if failed:
            return None
    return membership.admit_call(
        SpanEntry(entry.ledger, entry.call, in_library=entry.in_library),
        reading.model,
        0.0,
        ours=False,
        force=True,
    )


# Weak: a provider the user drops (per test, per tenant) must not be kept alive here.
_attached: weakref.WeakKeyDictionary[TracerProvider, LimitsProcessor] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def ensure_limits_processor(provider: TracerProvider) -> LimitsProcessor:
    """Attach our processor to an SDK provider exactly once, first in line; return it.

    First, because a refusal in ``on_start`` stops the span from starting:
    processors after ours never see it, while processors before ours would
    have seen a start that never ends. On a provider where processors were
    added before ours, ours is moved to the front of the SDK's list.

    Example::

        provider = TracerProvider()
        ensure_limits_processor(provider)
        trace.set_tracer_provider(provider)
    """
    found = _attached.get(provider)
    if found is not None:
        return found
    with _attach_lock:
        found = _attached.get(provider)
        if found is not None:
            return found
        processor = LimitsProcessor()
        provider.add_span_processor(processor)
        _move_to_front(provider, processor)
        _attached[provider] = processor
        return processor


def _move_to_front(provider: TracerProvider, processor: LimitsProcessor) -> None:
    # The SDK keeps its processors in a tuple on a multi-processor; there is
    # no public API to insert at the front, so reorder when the shape is known.
    multi = getattr(provider, "_active_span_processor", None)
    current = getattr(multi, "_span_processors", None)
    lock = getattr(multi, "_lock", None)
    if not isinstance(current, tuple) or lock is None:
        return
    with lock:
        current = multi._span_processors  # type: ignore[union-attr]
        if processor in current:
            multi._span_processors = (  # type: ignore[union-attr]
                processor,
                *(p for p in current if p is not processor),
            )
