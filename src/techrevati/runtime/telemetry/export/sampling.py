"""Sampling that decides what is exported, never what is enforced.

Budgets, iteration caps and the session roll-ups live in span processors, and
processors only see spans that are recorded. A sampler that drops a session
(``OTEL_TRACES_SAMPLER=traceidratio`` with a small ratio, say) would silently
switch enforcement off for it. So the user's sampler still decides which traces
are exported, but a "drop" becomes "record, don't export".

Example::

    provider = TracerProvider(sampler=sampler_from_env())
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_logger = logging.getLogger(__name__)


class RecordForLimits(Sampler):
    """Wraps a sampler so that a DROP decision becomes RECORD_ONLY.

    Unsampled spans still reach span processors (so limits hold) but not
    exporters, which only take sampled spans.
    """

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, result.attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordForLimits{{{self.inner.get_description()}}}"


def _ratio() -> float:
    raw = os.environ.get(OTEL_TRACES_SAMPLER_ARG, "")
    try:
        ratio = float(raw)
    except ValueError:
        if raw:
            _logger.warning("%s=%r is not a number; using 1.0", OTEL_TRACES_SAMPLER_ARG, raw)
        return 1.0
    if not 0.0 <= ratio <= 1.0:
        _logger.warning("%s=%r is outside [0, 1]; using 1.0", OTEL_TRACES_SAMPLER_ARG, raw)
        return 1.0
    return ratio


def sampler_from_env() -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` (and ``_ARG``) ask for, wrapped for limits.

    The standard names are understood: ``always_on``, ``always_off``,
    ``traceidratio`` and their ``parentbased_`` forms (the default is
    ``parentbased_always_on``).
    """
    name = os.environ.get(OTEL_TRACES_SAMPLER, "").strip().lower() or "parentbased_always_on"
    base: Sampler
    if name == "always_on":
        base = ALWAYS_ON
    elif name == "always_off":
        base = ALWAYS_OFF
    elif name == "traceidratio":
        base = TraceIdRatioBased(_ratio())
    elif name == "parentbased_always_off":
        base = ParentBased(ALWAYS_OFF)
    elif name == "parentbased_traceidratio":
        base = ParentBased(TraceIdRatioBased(_ratio()))
    else:
        if name != "parentbased_always_on":
            _logger.warning(
                "%s=%r is not a sampler we know; using parentbased_always_on",
                OTEL_TRACES_SAMPLER,
                name,
            )
        base = ParentBased(ALWAYS_ON)
    return RecordForLimits(base)
