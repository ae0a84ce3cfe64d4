"""Make every span encodable and bounded before it is exported, one span at a time.

An OTLP request is one protobuf message (or one JSON line) for a whole batch,
so a single value the encoder rejects (a lone surrogate from a decoded file
name, an int beyond 64 bits) used to fail the batch: 200 spans lost for one bad
tool name. Here, on the export thread and for every span that reaches our
pipelines (ours and other instrumentations'), each one is checked and, only
when needed, copied with:

* text made valid Unicode: lone surrogates (which is how Python holds bytes
  that were not UTF-8) become U+FFFD, so the UTF-8 encoders cannot fail;
* text capped: attribute values, event and link attributes and the status
  description at ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (or
  ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``) characters, default
  :data:`DEFAULT_ATTRIBUTE_VALUE_LENGTH`; span and event names at
  :data:`DEFAULT_NAME_LENGTH` characters;
* counts capped: ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` (default 128) attributes
  per span, and the SDK's event / link limits;
* integers outside the signed 64-bit range OTLP carries turned into floats.

A clean span (the common case) is passed through untouched. ``configure()``
also hands the same limits to the providers it creates (``SpanLimits``), so
oversized values are cut when they are set, not only when they leave.

Example::

    limits = ExportLimits.from_env()
    clean = sanitize_spans(batch, limits)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.environment_variables import (
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status

from .log_throttle import OncePerWindow

_logger = logging.getLogger(__name__)

#: Characters kept of one attribute value when ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``
#: is not set (the SDK alone keeps everything: a 10 MB value becomes a 10 MB span).
DEFAULT_ATTRIBUTE_VALUE_LENGTH = 16_384
#: Characters kept of a span or event name (a name is meant to be short and low in
#: cardinality; a role or model name that is a whole document is cut here).
DEFAULT_NAME_LENGTH = 1_024

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ExportLimits:
    """How much of a span is exported: text lengths and attribute, event and link counts."""

    max_attribute_length: int | None = DEFAULT_ATTRIBUTE_VALUE_LENGTH
    max_span_attributes: int = 128
    max_event_attributes: int = 128
    max_link_attributes: int = 128
    max_events: int = 128
    max_links: int = 128
    max_name_length: int = DEFAULT_NAME_LENGTH

    @classmethod
    def from_env(cls) -> ExportLimits:
        """The standard ``OTEL_*_LIMIT`` variables, with our default for value length.

        A variable that is not a non-negative integer is reported once and its
        default used: a typo must not stop the agent from starting.
        """
        try:
            sdk = SpanLimits()
        except ValueError as error:
            _logger.warning("%s; using the default span limits", error)
            sdk = _default_sdk_limits()
        length = sdk.max_span_attribute_length
        if length is None and not _explicitly_unset():
            length = DEFAULT_ATTRIBUTE_VALUE_LENGTH
        return cls(
            max_attribute_length=length,
            max_span_attributes=_count(sdk.max_span_attributes),
            max_event_attributes=_count(sdk.max_event_attributes),
            max_link_attributes=_count(sdk.max_link_attributes),
            max_events=_count(sdk.max_events),
            max_links=_count(sdk.max_links),
        )

    def span_limits(self) -> SpanLimits:
        """The same limits as the SDK's ``SpanLimits``, for a provider we create."""
        return SpanLimits(
            max_span_attributes=self.max_span_attributes,
            max_event_attributes=self.max_event_attributes,
            max_link_attributes=self.max_link_attributes,
            max_events=self.max_events,
            max_links=self.max_links,
            max_attribute_length=(
                self.max_attribute_length
                if self.max_attribute_length is not None
                else SpanLimits.UNSET
            ),
            max_span_attribute_length=(
                self.max_attribute_length
                if self.max_attribute_length is not None
                else SpanLimits.UNSET
            ),
        )


def _default_sdk_limits() -> SpanLimits:
    # Explicit values: the SDK then reads no variable at all.
    count = 128
    return SpanLimits(
        max_attributes=count,
        max_events=count,
        max_links=count,
        max_span_attributes=count,
        max_event_attributes=count,
        max_link_attributes=count,
        max_attribute_length=SpanLimits.UNSET,
        max_span_attribute_length=SpanLimits.UNSET,
    )


def _explicitly_unset() -> bool:
    # The SDK reads a variable that is set but empty as "no limit".
    return any(
        name in os.environ and not os.environ[name].strip()
        for name in (OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT)
    )


def _count(value: int | None) -> int:
    return 2**31 if value is None else value


#: Each distinct message template once per process (a window that never ends).
_quiet_filter = OncePerWindow(math.inf)


def quiet_repeated_truncation_warnings() -> None:
    """Log the SDK's "value truncated" / "attributes full" warnings once each, not per value.

    With a length limit in force the SDK warns for every value it cuts (every long
    prompt, every stack trace); the first says it all. Idempotent.
    """
    logger = logging.getLogger("opentelemetry.attributes")
    if _quiet_filter not in logger.filters:
        logger.addFilter(_quiet_filter)


# --- values -------------------------------------------------------------------------------
def clean_text(value: str, limit: int | None) -> str:
    """``value`` cut to ``limit`` characters, with lone surrogates replaced by U+FFFD.

    Example::

        >>> clean_text("tool\\ud800", None)
        'tool�'
        >>> clean_text("abcdef", 3)
        'abc'
    """
    if limit is not None and len(value) > limit:
        value = value[:limit]
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16 so that a surrogate *pair* written as two characters
        # becomes the character it stands for; only lone halves are replaced.
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _clean_scalar(value: Any, limit: int | None) -> Any:
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        try:
            return float(value)
        except OverflowError:
            return clean_text(str(value)[:64], limit) if value > 0 else float("-inf")
    if isinstance(value, bytes):
        return clean_text(value.decode("utf-8", "replace"), limit)
    return clean_text(str(value), limit)  # not an attribute type: kept as its text


def _scalar_ok(value: Any, limit: int | None) -> bool:
    if isinstance(value, str):
        if limit is not None and len(value) > limit:
            return False
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, bool | float):
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return False


def _value_ok(value: Any, limit: int | None) -> bool:
    if isinstance(value, tuple | list):
        return all(_scalar_ok(item, limit) for item in value)
    return _scalar_ok(value, limit)


def _clean_value(value: Any, limit: int | None) -> Any:
    if isinstance(value, tuple | list):
        return tuple(_clean_scalar(item, limit) for item in value)
    return _clean_scalar(value, limit)


def _attributes_ok(attributes: Mapping[str, Any] | None, limit: int | None, count: int) -> bool:
    if not attributes:
        return True
    if len(attributes) > count:
        return False
    for key, value in attributes.items():
        if not _scalar_ok(key, None) or not _value_ok(value, limit):
            return False
    return True


def clean_attributes(
    attributes: Mapping[str, Any] | None, limit: int | None, count: int
) -> dict[str, Any]:
    """At most ``count`` attributes, each key and value made encodable and capped.

    Example::

        >>> clean_attributes({"a": "x" * 5, "b": 2**70}, 3, 10)
        {'a': 'xxx', 'b': 1.1805916207174113e+21}
    """
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if len(cleaned) >= count:
            break
        cleaned[clean_text(str(key), DEFAULT_NAME_LENGTH)] = _clean_value(value, limit)
    return cleaned


# --- spans --------------------------------------------------------------------------------
def _resource_ok(resource: Resource | None, limits: ExportLimits) -> bool:
    if resource is None:
        return True
    return _attributes_ok(resource.attributes, limits.max_attribute_length, 2**31)


def _scope_ok(scope: InstrumentationScope | None) -> bool:
    if scope is None:
        return True
    return _scalar_ok(scope.name, DEFAULT_NAME_LENGTH) and (
        scope.version is None or _scalar_ok(scope.version, DEFAULT_NAME_LENGTH)
    )


def span_is_clean(span: ReadableSpan, limits: ExportLimits) -> bool:
    """True when ``span`` can be exported as it is."""
    length = limits.max_attribute_length
    if not _scalar_ok(span.name, limits.max_name_length):
        return False
    if not _attributes_ok(span.attributes, length, limits.max_span_attributes):
        return False
    if len(span.events) > limits.max_events or len(span.links) > limits.max_links:
        return False
    for event in span.events:
        if not _scalar_ok(event.name, limits.max_name_length) or not _attributes_ok(
            event.attributes, length, limits.max_event_attributes
        ):
            return False
    for link in span.links:
        if not _attributes_ok(link.attributes, length, limits.max_link_attributes):
            return False
    description = span.status.description
    if description is not None and not _scalar_ok(description, length):
        return False
    return _resource_ok(span.resource, limits) and _scope_ok(span.instrumentation_scope)


def sanitize_span(span: ReadableSpan, limits: ExportLimits) -> ReadableSpan:
    """``span`` itself when clean, else a copy with every value made encodable and bounded."""
    if span_is_clean(span, limits):
        return span
    length = limits.max_attribute_length
    events = [
        Event(
            clean_text(event.name, limits.max_name_length),
            clean_attributes(event.attributes, length, limits.max_event_attributes),
            event.timestamp,
        )
        for event in span.events[: limits.max_events]
    ]
    links = [
        Link(link.context, clean_attributes(link.attributes, length, limits.max_link_attributes))
        for link in span.links[: limits.max_links]
    ]
    status = span.status
    if status.description is not None and not _scalar_ok(status.description, length):
        status = Status(status.status_code, clean_text(status.description, length))
    resource = span.resource
    if not _resource_ok(resource, limits):
        resource = Resource(
            clean_attributes(resource.attributes, length, 2**31), resource.schema_url
        )
    scope = span.instrumentation_scope
    if scope is not None and not _scope_ok(scope):
        scope = InstrumentationScope(
            clean_text(scope.name, DEFAULT_NAME_LENGTH),
            clean_text(scope.version, DEFAULT_NAME_LENGTH) if scope.version else scope.version,
            scope.schema_url,
            scope.attributes,
        )
    return ReadableSpan(
        name=clean_text(span.name, limits.max_name_length),
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=clean_attributes(span.attributes, length, limits.max_span_attributes),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=scope,
    )


def sanitize_spans(spans: Sequence[ReadableSpan], limits: ExportLimits) -> list[ReadableSpan]:
    """Each span made exportable on its own; a span that cannot be read at all is left out.

    One broken span object (a foreign ``ReadableSpan`` subclass that raises, say)
    costs only itself, never its batch.
    """
    cleaned: list[ReadableSpan] = []
    for span in spans:
        try:
            cleaned.append(sanitize_span(span, limits))
        except Exception:
            _logger.debug("a span could not be sanitised and is left out", exc_info=True)
    return cleaned


__all__ = [
    "DEFAULT_ATTRIBUTE_VALUE_LENGTH",
    "DEFAULT_NAME_LENGTH",
    "ExportLimits",
    "clean_attributes",
    "clean_text",
    "quiet_repeated_truncation_warnings",
    "sanitize_span",
    "sanitize_spans",
    "span_is_clean",
]
