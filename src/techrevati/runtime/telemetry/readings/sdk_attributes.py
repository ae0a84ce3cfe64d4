"""The SDK span's own fields and attribute dict: read and written directly where safe.

The SDK keeps a span's attributes in a ``BoundedAttributes`` whose plain
``_dict`` holds them. Its public methods re-check every value (types,
sequences, length limits) under two locks, and its ``get`` raises and catches
``KeyError`` for each absent key. On every model call we read some twenty
names, most absent, from other instrumentations' spans, and write a handful of
values we built ourselves (token counts, a cost, a model name): the plain dict
does both many times faster. Everything here falls back to the public API for
any span that is not the SDK's shape (another SDK version, a non-recording
span, a test double), and writes directly only when nothing the SDK would do
on the way could differ: room under its attribute-count limit, no value-length
limit, the span not ended. ``tests/test_sdk_attributes.py`` pins that the
pinned SDK takes the direct path and that both paths store the same thing;
``tests/core/test_processor_fields.py`` that the fields ``span_fields`` reads
exist and equal what the span's properties say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import SpanContext

#: The values ``write_known`` takes: what the SDK stores unchanged (it checks a
#: value's type, never an int's range). The type checker holds every caller to it,
#: so the values are not checked again on each call.
KnownValue = str | bool | int | float


def span_attributes(span: object) -> Mapping[str, Any] | None:
    """A span's attributes as the plain dict the SDK keeps them in, for reading only.

    The SDK hands attributes out as ``BoundedAttributes`` (a started span) or a
    read-only proxy of one (a finished span); its ``get`` raises and catches
    ``KeyError`` for every absent key (~0.65 µs). Recognising and reading a span
    asks for some twenty names, most of them absent, on every model call; the
    inner dict answers the same reads ten times faster. Any other span's
    ``attributes`` is returned as it is.

    Example::

        attrs = span_attributes(span)
    """
    try:
        inner = span._attributes._dict  # type: ignore[attr-defined]
        if type(inner) is dict:
            return inner
    except AttributeError:
        pass  # not the SDK's shape: what the span says
    attributes: Mapping[str, Any] | None = getattr(span, "attributes", None)
    return attributes


def span_fields(span: Any) -> tuple[str | None, str, SpanContext | None, SpanContext | None]:
    """(producer scope name, name, parent, context) of a span, as a span processor reads them.

    Read from the SDK span's own fields: each of its properties is a Python
    call, and every span of every producer passes through our processor. Any
    other span's public properties answer the same.

    Example::

        producer, name, parent, context = span_fields(span)   # in on_start or on_end
    """
    try:
        scope = span._instrumentation_scope
        return (
            scope._name if scope is not None else None,
            span._name,
            span._parent,
            span._context,
        )
    except AttributeError:  # not the SDK's shape (another version): its properties
        scope = span.instrumentation_scope
        return (
            scope.name if scope is not None else None,
            span.name,
            span.parent,
            span.context,
        )


def write_known(span: Any, attributes: Mapping[str, KnownValue]) -> None:
    """Set attributes whose values we built (str, bool, int or float) on a live span.

    What ``span.set_attributes(attributes)`` stores, without the SDK re-checking
    each value's type: under the span's lock, while it has not ended, straight
    into its attribute dict when the dict has room for all of them and no
    value-length limit applies. Any other case goes through ``set_attributes``,
    which applies the SDK's rules. Only for values typed ``KnownValue`` (a
    sequence, bytes or None would be stored as given, not as the SDK stores them).

    Example::

        write_known(span, {"gen_ai.usage.input_tokens": 120, "techrevati.cost.usd": 0.0004})
    """
    try:
        bounded = span._attributes
        inner = bounded._dict
        room = bounded.maxlen
        direct = (
            bounded.max_value_len is None
            and type(inner) is dict
            and (room is None or len(inner) + len(attributes) <= room)
            and not bounded._immutable
        )
    except AttributeError:
        direct = False  # not the SDK's shape (another version): its public method
    if direct:
        lock = span._lock
        # acquire / release rather than `with`: on every call, and `with` costs twice
        # as much (it calls __exit__ with three arguments).
        lock.acquire()
        try:
            if span._end_time is None:
                inner.update(attributes)
                return
        finally:
            lock.release()
    # A limit to apply, or an ended span (the SDK warns and stores nothing).
    span.set_attributes(attributes)


__all__ = ["KnownValue", "span_attributes", "span_fields", "write_known"]
