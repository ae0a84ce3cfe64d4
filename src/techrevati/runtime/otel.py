"""0.1.0-compatible OpenTelemetry sinks: one span per event, usage as metrics.

Sessions already produce proper nested spans and metrics through the telemetry
core; these sinks stay for code written against 0.1.0, which wired
``OpenTelemetrySink`` as the ``event_sink``. The import guard is kept because
users' tests patch ``_OTEL_AVAILABLE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .agent_events import AgentEvent
from .telemetry.calls.content import capture_content
from .telemetry.calls.labels import bounded_name
from .usage_tracking import UsageSnapshot
from .version import VERSION

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter
    from opentelemetry.trace import Tracer

__all__ = ["DEFAULT_PROVIDER_NAME", "OpenTelemetrySink", "OpenTelemetryUsageSink"]

_OTEL_AVAILABLE: bool
_OTEL_IMPORT_ERROR: ImportError | None
try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace

    _OTEL_AVAILABLE, _OTEL_IMPORT_ERROR = True, None
except ImportError as _err:  # pragma: no cover - OTel is a core dependency now
    _OTEL_AVAILABLE, _OTEL_IMPORT_ERROR = False, _err

DEFAULT_PROVIDER_NAME = "techrevati"
_SCOPE = "techrevati.runtime"

_OPERATIONS: dict[str, str] = {
    "agent.started": "create_agent",
    "agent.ready": "create_agent",
    "agent.tool_called": "execute_tool",
    "agent.tool_completed": "execute_tool",
    "phase.started": "invoke_workflow",
    "phase.completed": "invoke_workflow",
}


#: Details the package itself writes that hold no content, by event: kept with capture
#: off. Matched whole, so that text a caller put in an event of the same kind is not.
_HANDOFF = "handoff \u2192 "
_OWN_DETAILS = {
    "agent.failed": re.compile(
        r"budget exceeded: \$[0-9.,]+|cancelled|async session cancelled|session closed early"
        r"|KeyboardInterrupt|SystemExit|CancelledError"
    ),
    "phase.gate_passed": re.compile(r"observed=[A-Z_]+|observed=None"),
    "phase.gate_failed": re.compile(r"observed=[A-Z_]+|observed=None"),
    "agent.recovery.attempted": re.compile(
        r"[a-z_]+: (recovered|partial_recovery|escalation_required)"
    ),
}


def _shown_detail(event: AgentEvent) -> str | None:
    """The part of ``event.detail`` a span may carry: all of it with content capture on.

    With capture off, a detail that may hold user text (an exception's message, a
    handoff's reason, a detail the caller passed) is left out or cut to what is not
    content (a handoff's target role); the package's own details stay.
    """
    detail = event.detail
    if not detail or capture_content():
        return detail
    kind = event.event.value
    if kind == "agent.completed" and detail.startswith(_HANDOFF):
        return _HANDOFF + detail[len(_HANDOFF) :].partition(": ")[0]
    own = _OWN_DETAILS.get(kind)
    return detail if own is not None and own.fullmatch(detail) else None


def _require_otel() -> None:
    # Read the module global at call time: tests patch it after import.
    if not globals()["_OTEL_AVAILABLE"]:
        raise ImportError(
            "OpenTelemetry sink requires the [otel] extra. Install with: pip install "
            "'techrevati-runtime[otel]' from this project's clone or wheel (pip install "
            "'.[otel]'), or the SDK itself: pip install opentelemetry-sdk "
            "opentelemetry-exporter-otlp (on the public index that name is an unrelated "
            "package)"
        ) from globals()["_OTEL_IMPORT_ERROR"]


@dataclass
class OpenTelemetrySink:
    """An ``EventSink`` that turns each ``AgentEvent`` into one short span.

    Example::

        orch = Orchestrator(role="writer", phase="draft", event_sink=OpenTelemetrySink())
    """

    tracer: Tracer | None = None
    provider_name: str = DEFAULT_PROVIDER_NAME
    agent_id: str | None = None

    def __post_init__(self) -> None:
        _require_otel()
        if self.tracer is None:
            self.tracer = _trace.get_tracer(_SCOPE, VERSION)

    def emit(self, event: AgentEvent) -> None:
        """Record ``event`` as a span named ``"<operation> <role>"``."""
        assert self.tracer is not None
        op = _OPERATIONS.get(event.event.value, "invoke_agent")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": self.provider_name,
        }
        role = bounded_name(event.role) if event.role else ""
        if role:
            attributes["gen_ai.agent.name"] = role
        if self.agent_id:
            attributes["gen_ai.agent.id"] = self.agent_id
        if event.phase:
            attributes["techrevati.phase"] = event.phase
        detail = _shown_detail(event)
        if detail:
            attributes["techrevati.detail"] = detail
        if event.failure_class is not None:
            attributes["error.type"] = event.failure_class.value
        for key, value in (event.data or {}).items():
            if isinstance(value, str | int | float | bool):
                attributes[f"techrevati.data.{key}"] = value
        name = f"{op} {role}" if role else op
        with self.tracer.start_as_current_span(name, attributes=attributes):
            pass


@dataclass
class OpenTelemetryUsageSink:
    """A ``UsageSink`` recording token usage and USD cost as OTel metrics.

    Example::

        orch = Orchestrator(role="writer", phase="draft", usage_sink=OpenTelemetryUsageSink())
    """

    meter: Meter | None = None
    provider_name: str = DEFAULT_PROVIDER_NAME
    _tokens: Histogram = field(init=False, repr=False)
    _cost: Counter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _require_otel()
        if self.meter is None:
            self.meter = _metrics.get_meter(_SCOPE, VERSION)
        self._tokens = self.meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens per model call."
        )
        self._cost = self.meter.create_counter(
            "techrevati.cost.usd", unit="USD", description="Model spend in US dollars."
        )

    def record(self, model: str, usage: UsageSnapshot, cost_usd: float) -> None:
        """Record input/output tokens and cost for one turn (zero values are skipped)."""
        base = {
            "gen_ai.provider.name": self.provider_name,
            "gen_ai.request.model": bounded_name(model),
        }
        if usage.input_tokens:
            self._tokens.record(usage.input_tokens, {**base, "gen_ai.token.type": "input"})
        if usage.output_tokens:
            self._tokens.record(usage.output_tokens, {**base, "gen_ai.token.type": "output"})
        if cost_usd:
            self._cost.add(cost_usd, base)
