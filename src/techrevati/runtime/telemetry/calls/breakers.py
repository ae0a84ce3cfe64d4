"""A session's circuit breaker on the call path: given to every door, its decisions reported.

The rules (admission, what counts as a failure, once per call) are in
``limits/ledger.py`` (its section on breakers). This module gives a session its breaker
(``watch_breaker``): our turns read ``SessionScope.breaker``; the client
guard and the limits processor, which admit the calls of a bare client and
of other instrumentations, read the session's ledger. Whichever door a call
came through, what the breaker decided is reported the same way: a refused
call gets an ended ``chat {model}`` span with the error and the state that
refused it (``refused_span``), and the gauge ``techrevati.breaker.state`` is
set at each refusal and at each call's end (``note_state``).
"""

from __future__ import annotations

import logging
import weakref

from opentelemetry.trace import SpanKind

from ...circuit_breaker import AsyncCircuitBreaker, BreakerPermit, CircuitBreaker, CircuitOpenError
from .. import semconv as sc
from ..limits import membership
from ..limits.guard import ensure_guard
from .failures import end_span, error_type, record_error
from .labels import bounded_name
from .metrics import Instruments
from .session import SessionScope

_log = logging.getLogger("techrevati.runtime.telemetry")


def watch_breaker(
    scope: SessionScope, breaker: CircuitBreaker | AsyncCircuitBreaker | None
) -> None:
    """Make ``breaker`` the session's for every model call of it, whichever door admits it.

    A bare client's calls are admitted by the client guard, so a session with a
    breaker has it installed (``configure(guard=False)`` still opts out).

    Example::

        watch_breaker(scope, CircuitBreaker("openai", failure_threshold=2))
    """
    scope.breaker = breaker
    ledger = scope.ledger
    ledger.breaker = breaker
    if breaker is None:
        ledger.on_breaker = None
        return
    # Weak: the listener lives on the ledger, which must not keep a closed session alive.
    ref = weakref.ref(scope)

    def news(model: str, refused: CircuitOpenError | None) -> None:
        found = ref()
        if found is None:
            return
        try:
            if refused is not None:
                refused_span(found, model, refused)
            elif found.breaker is not None:
                note_state(found.instruments, found.breaker)
        except Exception:
            # Reporting never fails the call it reports on.
            _log.warning("could not report a breaker decision; continuing", exc_info=True)

    ledger.on_breaker = news
    ensure_guard()


def note_state(instruments: Instruments, breaker: CircuitBreaker | AsyncCircuitBreaker) -> str:
    """Set the breaker's gauge to its state now; returns the state's value (``"open"``)."""
    state = BreakerPermit(breaker).state().value
    instruments.breaker_state.set(
        sc.BREAKER_STATE_VALUE.get(state, 0), {sc.BREAKER_NAME: bounded_name(breaker.name)}
    )
    return state


def refused_span(session: SessionScope | None, model: str, error: BaseException) -> None:
    """A call the breaker refused before admission: an ended error span, nothing counted."""
    if session is None:
        return
    labels = session.labels(model)
    attributes: dict[str, object] = {**labels.base, **session.span_stamp}
    breaker = session.breaker
    if breaker is not None:
        attributes[sc.BREAKER_NAME] = breaker.name
        # What refused it: open, or half-open with every probe slot taken.
        attributes[sc.BREAKER_STATE] = note_state(session.instruments, breaker)
    span = session.tracer.start_span(
        labels.span_name,
        context=membership.parent_for(session),
        kind=SpanKind.CLIENT,
        attributes=attributes,  # type: ignore[arg-type]
    )
    record_error(span, error)
    end_span(span)
    session.instruments.operation_duration.record(
        0.0, {**labels.base, sc.ERROR_TYPE: error_type(error)}
    )
