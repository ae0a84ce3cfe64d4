"""How an error is put on a span without leaking what the user did not consent to.

Exception messages routinely quote prompts, tool arguments and secrets. With
content capture off, a span gets the error's type, and a stack trace made of
frames only; the message is recorded only when capture is on.
"""

from __future__ import annotations

import logging
import traceback

from opentelemetry.trace import Span, Status, StatusCode

from .. import semconv as sc
from .content import capture_content, unreadable

_log = logging.getLogger("techrevati.runtime.telemetry")
#: Error types a span processor raised in ``on_end`` that were logged already.
_END_FAILURES: set[str] = set()


def error_type(error: BaseException) -> str:
    """The ``error.type`` value: the exception's qualified class name."""
    return type(error).__qualname__


def record_error(span: Span, error: BaseException, *, capture: bool | None = None) -> None:
    """ERROR status, ``error.type`` and an ``exception`` event on a recording span.

    Example::

        record_error(span, ValueError("secret prompt"))   # status says "ValueError"
    """
    if not span.is_recording():
        return
    kind = error_type(error)
    allowed = capture_content() if capture is None else capture
    span.set_attribute(sc.ERROR_TYPE, kind)
    message = kind
    if allowed:
        text, readable = error_text(error)
        if readable:
            span.set_status(Status(StatusCode.ERROR, f"{kind}: {text}"))
            span.record_exception(error)
            return
        # An error whose message cannot be read: the span a placeholder and the frames.
        message = f"{kind}: {text}"
    span.set_status(Status(StatusCode.ERROR, message))
    frames = "".join(traceback.format_tb(error.__traceback__)) if error.__traceback__ else ""
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(error).__module__}.{kind}",
            "exception.message": message,
            "exception.stacktrace": f"Traceback (most recent call last):\n{frames}{kind}",
        },
    )


def error_text(error: BaseException) -> tuple[str, bool]:
    """(``str(error)``, True), or a placeholder and False when reading it raises.

    An exception whose message cannot be read (an ORM row's, detached from its
    session) still reaches its caller as itself: what we record of it says so.

    Example::

        >>> error_text(ValueError("bad value"))
        ('bad value', True)
    """
    try:
        return str(error), True
    except Exception as failed:
        return unreadable(error, failed, "str"), False


def reason_text(reason: str) -> str | None:
    """A free-text reason (handoff, guardrail) is content: kept only with capture on."""
    return reason if capture_content() else None


def end_span(span: Span) -> None:
    """End ``span``; a span processor that raises in ``on_end`` never fails the call.

    The SDK runs every processor's ``on_end`` inside ``span.end()`` and lets
    their errors through. Our calls end their span before they are booked, so
    a raising processor would skip the booking (the reservation held, the cost
    lost) and fail a call that succeeded. Logged once per error type.
    """
    try:
        span.end()
    except Exception as error:
        kind = type(error).__qualname__
        if kind not in _END_FAILURES and len(_END_FAILURES) < 64:
            _END_FAILURES.add(kind)
            _log.warning(
                "a span processor raised in on_end (%s: %s): the span of %r ended and its "
                "call is booked as usual; processors after it may not have seen the span",
                kind,
                error,
                getattr(span, "name", "?"),
            )
