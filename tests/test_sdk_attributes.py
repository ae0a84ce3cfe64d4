"""Writing our own values straight into the SDK span's attribute dict stores what the SDK would.

``write_known`` skips the SDK's per-value checks for values we built (typed
``KnownValue``: str, bool, int, float). These tests hold it to
``span.set_attributes`` on the real SDK: the same stored attributes and drop
counts for random such values and random limits, the SDK's own path whenever a
limit applies, and the direct path really taken with the SDK version we pin (a
silent fallback would only cost speed, so it is pinned here rather than
noticed in a benchmark).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext

from techrevati.runtime.telemetry.readings.sdk_attributes import span_attributes, write_known

scalars = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
keys = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])


def _span(limits: SpanLimits, start: dict[str, Any]) -> Any:
    tracer = TracerProvider(span_limits=limits).get_tracer("t")
    return tracer.start_span("s", attributes=start)


def _stored(span: Any) -> tuple[dict[str, Any], int]:
    span.end()
    return dict(span.attributes), span.dropped_attributes


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(keys, scalars, max_size=4),
    written=st.dictionaries(keys, scalars, max_size=5),
    max_attributes=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
    max_length=st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
)
def test_stores_what_set_attributes_stores(
    start: dict[str, Any],
    written: dict[str, Any],
    max_attributes: int | None,
    max_length: int | None,
) -> None:
    limits = SpanLimits(max_span_attributes=max_attributes, max_attribute_length=max_length)
    ours, sdks = _span(limits, start), _span(limits, start)
    write_known(ours, dict(written))
    sdks.set_attributes(dict(written))
    assert _stored(ours) == _stored(sdks)


def test_takes_the_direct_path_on_the_pinned_sdk() -> None:
    span = _span(SpanLimits(), {"gen_ai.request.model": "gpt-4o"})
    calls: list[object] = []
    span.set_attributes = calls.append  # would be the SDK's path
    write_known(span, {"gen_ai.usage.input_tokens": 120, "techrevati.cost.usd": 0.25})
    assert calls == []
    assert dict(span_attributes(span) or {}) == {
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120,
        "techrevati.cost.usd": 0.25,
    }


@pytest.mark.parametrize(
    ("limits", "written"),
    [
        (SpanLimits(max_attribute_length=3), {"model": "gpt-4o"}),  # a length to apply
        (SpanLimits(max_span_attributes=2), {"x": 1, "y": 2}),  # no room for both
    ],
)
def test_hands_limits_to_the_sdk(limits: SpanLimits, written: dict[str, Any]) -> None:
    span = _span(limits, {"first": 1})
    calls: list[object] = []
    span.set_attributes = calls.append
    write_known(span, written)
    assert calls == [written]


def test_an_ended_span_keeps_its_attributes_and_the_sdk_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    span = _span(SpanLimits(), {"first": 1})
    span.end()
    with caplog.at_level(logging.WARNING):
        write_known(span, {"late": 2})
    assert dict(span.attributes) == {"first": 1}
    assert "ended span" in caplog.text


def test_a_span_of_another_shape_goes_through_its_own_method() -> None:
    span = NonRecordingSpan(SpanContext(1, 2, False))
    write_known(span, {"a": 1})  # no error, nothing to store
    assert span_attributes(span) is None
