"""The span processor that keeps session ledgers and enforces budget and caps.

It sees every span the provider makes, ours and those of any other GenAI
instrumentation. A span whose parent is open inside a session belongs to that
session, at any depth. A model-call span (``chat``, ``embeddings``, ...) is
admitted in ``on_start``, where an exception reaches the code that starts the
span and so stops the call before its body runs, and booked in ``on_end``,
which must never raise (it would hide the user's own exception).

A model-call span nested inside another one (a library's ``chat`` span inside
our turn span) describes the same call: it is not admitted again, and its usage
counts only if the outer span reported none, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import Span as APISpan

from ..usage_tracking import PricedTurn, UsageSnapshot
from . import semconv as sc
from .guard import note_refusal
from .ledger import SessionLedger
from .recognise import is_model_call, model_from_attributes, usage_from_attributes

_log = logging.getLogger("techrevati.runtime.telemetry")


@dataclass(eq=False, slots=True)
class SpanEntry:
    """What the processor knows about one open span inside a session."""

    ledger: SessionLedger
    # The open model-call entry this span is nested in, if any.
    outer: SpanEntry | None = None
    model_call: bool = False
    nested_usage: list[tuple[str, UsageSnapshot]] | None = field(default=None)
    # The core's own turn: (model, usage, price) it put on the span just before
    # ending it, so on_end books exactly that without reading attributes back.
    own: tuple[str, UsageSnapshot, PricedTurn] | None = None
    # Admission number of a model call made by our own core, which writes it on
    # the span together with its other end attributes (one locked write, not two).
    iteration: int = 0
    # What on_end booked for the core's own top-level turn: (model, usage, cost)
    # per booked call, so the core's metrics follow the ledger exactly.
    booked: list[tuple[str, UsageSnapshot, float]] | None = None


# span id -> entry, shared by every processor instance: a session opened on one
# provider is still found by spans of another. Plain dict operations are atomic
# in CPython, which is all the concurrency this map needs.
_OPEN: dict[int, SpanEntry] = {}

#: The ledger of the session active in this context (thread or task). Spans
#: whose parent chain does not lead to a session span still belong to it: a
#: user's own span from a provider without our processor sits between, or the
#: span was started as a new root inside the session's ``with`` block.
ACTIVE_LEDGER: ContextVar[SessionLedger | None] = ContextVar("techrevati_ledger", default=None)

#: Set by the core only while it starts one of its own turn or tool spans: the
#: session that span belongs to, even when its parent is a span the processor
#: never saw (a user's span from another provider, an ended session span).
STARTING_IN: ContextVar[SessionLedger | None] = ContextVar("techrevati_starting", default=None)

_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        _log.exception(message)


def register_session(span: APISpan, ledger: SessionLedger) -> None:
    """Make ``span`` the root of a session: spans under it book into ``ledger``."""
    _OPEN[span.get_span_context().span_id] = SpanEntry(ledger)


def unregister(span: APISpan) -> None:
    """Forget a span that ended without the processor seeing it (unsampled spans)."""
    _OPEN.pop(span.get_span_context().span_id, None)


def entry_of(span: APISpan) -> SpanEntry | None:
    """The processor's entry for an open span, if it lies inside a session."""
    return _OPEN.get(span.get_span_context().span_id)


def ledger_of(span: APISpan) -> SessionLedger | None:
    """The ledger an open span books into, if it lies inside a session."""
    entry = _OPEN.get(span.get_span_context().span_id)
    return entry.ledger if entry is not None else None


class LimitsProcessor(SpanProcessor):
    """Admits model calls against a session's cap and budget; books their usage.

    Attached once per SDK ``TracerProvider`` (see ``ensure_limits_processor``).
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = span.parent
        parent_entry = _OPEN.get(parent.span_id) if parent is not None else None
        scope = span.instrumentation_scope
        ours = scope is not None and scope.name == sc.INSTRUMENTATION_SCOPE
        if parent_entry is None:
            # Our core says which session its span belongs to; anything else
            # started while a session is active belongs to that one.
            ledger = STARTING_IN.get() if ours else ACTIVE_LEDGER.get()
            if ledger is None:
                return
            parent_entry = SpanEntry(ledger)  # directly under the active session
        outer = parent_entry if parent_entry.model_call else parent_entry.outer
        if ours:
            # Our core names every span "<operation> ...": no locked attribute read.
            model_call = span.name.startswith(sc.OP_CHAT)
        else:
            attrs = span.attributes
            operation = attrs.get(sc.GEN_AI_OPERATION_NAME) if attrs is not None else None
            model_call = is_model_call(operation, span.name)
        if outer is None and model_call:
            # May raise MaxIterationsExceededError / BudgetExceededError: that
            # is the admission point, the span is then never started.
            try:
                iteration = parent_entry.ledger.admit()
            except BaseException as refusal:
                note_refusal(refusal)  # for SDKs that swallow it: the client guard raises it
                raise
            entry = SpanEntry(parent_entry.ledger, None, True)
            if ours:
                entry.iteration = iteration  # written by the core with its end attributes
            else:
                span.set_attribute(sc.SESSION_ITERATION, iteration)
        else:
            entry = SpanEntry(parent_entry.ledger, outer, False)
        _OPEN[span.context.span_id] = entry

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        entry = _OPEN.pop(context.span_id, None)
        if entry is None:
            return
        try:
            _book(entry, span)
        except Exception:
            _warn_once("limits processor failed to book a span; continuing")

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _book(entry: SpanEntry, span: ReadableSpan) -> None:
    own = entry.own
    if entry.outer is not None:
        if own is not None:
            model, usage = own[0], own[1]
        else:
            attrs = span.attributes
            if not is_model_call((attrs or {}).get(sc.GEN_AI_OPERATION_NAME), span.name):
                return
            usage_read = usage_from_attributes(attrs)
            if usage_read is None:
                return
            model, usage = model_from_attributes(attrs), usage_read
        if entry.outer.nested_usage is None:
            entry.outer.nested_usage = []
        entry.outer.nested_usage.append((model, usage))
        return
    if not entry.model_call:
        return
    if own is not None:
        entry.booked = book_own_turn(entry.ledger, own[0], own[1], own[2], entry.nested_usage)
        return
    book_model_call(entry.ledger, span.attributes, entry.nested_usage)


def book_own_turn(
    ledger: SessionLedger,
    model: str,
    usage: UsageSnapshot,
    price: PricedTurn,
    nested: list[tuple[str, UsageSnapshot]] | None = None,
) -> list[tuple[str, UsageSnapshot, float]]:
    """Book one finished top-level turn of the core; returns what was booked.

    A turn that reported no usage of its own is booked from the model calls
    nested in it (a library's span, or a decorated turn called inside
    ``run_turn``). The core records its metrics from the returned list.
    """
    if nested and usage == _ZERO:
        return [
            (inner_model, inner, ledger.record(inner_model, inner)) for inner_model, inner in nested
        ]
    return [(model, usage, ledger.record(model, usage, price=price))]


def book_model_call(
    ledger: SessionLedger,
    attrs: Mapping[str, Any] | None,
    nested: list[tuple[str, UsageSnapshot]] | None = None,
) -> None:
    """Book one finished top-level model call from its span attributes."""
    usage = usage_from_attributes(attrs)
    if (usage is None or usage == _ZERO) and nested:
        for model, inner in nested:
            ledger.record(model, inner, priced=False)
        return
    if usage is None:
        return  # a failed call reports no usage, and the contract books only successes
    priced = attrs is not None and sc.COST_USD in attrs
    ledger.record(model_from_attributes(attrs), usage, priced=priced)


_ZERO = UsageSnapshot()

# Weak: a provider the user drops (per test, per tenant) must not be kept alive here.
_attached: weakref.WeakKeyDictionary[TracerProvider, LimitsProcessor] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def ensure_limits_processor(provider: TracerProvider) -> LimitsProcessor:
    """Attach our processor to an SDK provider exactly once; return it.

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
        _attached[provider] = processor
        return processor
