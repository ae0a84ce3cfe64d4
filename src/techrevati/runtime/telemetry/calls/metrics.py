"""The package's metric instruments, created once per MeterProvider.

Histograms pass the GenAI conventions' bucket advice explicitly, because the
SDK's default buckets (0..10000) are useless for both seconds and tokens.
Labels are bounded on purpose: model, provider, role, tool, outcome, never an id.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    MeterProvider,
    NoOpMeterProvider,
    Observation,
)

# The synchronous gauge's API class is still underscored in opentelemetry-api.
from opentelemetry.metrics import _Gauge as Gauge

from ...version import VERSION
from .. import semconv as sc
from .providers import default_meter_provider

_log = logging.getLogger(__name__)


class CostTotals:
    """Running USD totals per label set, reported by an observable counter.

    A counter is only ever exported as its cumulative value, so keeping the
    running sums here and handing them to the SDK when a reader collects gives
    the same series as a synchronous ``Counter.add`` per model call, for a dict
    update instead of the SDK's per-record bookkeeping (~7 µs on every turn).

    Example::

        totals = CostTotals()
        totals.add(0.0125, {"gen_ai.request.model": "gpt-4o"})
    """

    #: Most label sets kept: the SDK's own limit per instrument, past which it folds
    #: series into one overflow series anyway. Names come from users and responses
    #: (a proxy's arbitrary model strings, a role per request): past it, new label
    #: sets add to that overflow series here, so memory and each collection stay flat.
    MAX_SERIES: ClassVar[int] = 2000
    _OVERFLOW_LABELS: ClassVar[dict[str, str]] = {"otel.metric.overflow": "true"}
    _OVERFLOW: ClassVar[frozenset[tuple[str, str]]] = frozenset(_OVERFLOW_LABELS.items())

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[frozenset[tuple[str, str]], float] = {}
        self._labels: dict[frozenset[tuple[str, str]], dict[str, str]] = {}

    def add(
        self,
        amount: float,
        attributes: Mapping[str, str],
        key: frozenset[tuple[str, str]] | None = None,
    ) -> None:
        """Add ``amount`` USD to the series ``attributes`` (non-positive amounts are ignored).

        ``key``: ``frozenset(attributes.items())`` when the caller keeps it made
        (``ModelLabels.cost_key``), so a call builds no set.
        """
        if not amount > 0:
            return  # a counter never decreases; negative prices are a registration mistake
        if key is None:
            key = frozenset(attributes.items())
        with self._lock:
            total = self._totals.get(key)
            if total is None:
                if len(self._totals) >= self.MAX_SERIES:
                    key, attributes = self._OVERFLOW, self._OVERFLOW_LABELS
                    total = self._totals.get(key)
                if total is None:
                    self._labels[key] = dict(attributes)
                    total = 0.0
            self._totals[key] = total + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The SDK's collection callback: one observation per label set."""
        with self._lock:
            return [Observation(total, self._labels[key]) for key, total in self._totals.items()]


class _FleetUsage(Protocol):
    @property
    def spent_usd(self) -> float: ...


class FleetScopeLike(Protocol):
    """What the fleet gauges read from a fleet scope (``FleetLimits`` has all of it)."""

    scope: str
    budget_usd: float | None
    window_s: float | None

    def usage(self) -> _FleetUsage: ...


class FleetScopes:
    """Every live fleet scope of this process, reported as three gauges per scope.

    Alert rules need a scope's budget ``B`` and window ``W`` next to its spend rate
    (burn = spend rate / (B / W), docs/alerts.md); the time-to-exhaustion panel
    also needs what the scope has spent in its current window, which only the
    store knows, so it is read (one bounded Redis call per scope) when a reader
    collects, on the reader's thread, never on the agent's. Scopes are held
    weakly: a ``FleetLimits`` the program drops stops being reported.

    Example::

        fleet_scopes.track(tenant)   # FleetLimits does this itself
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: weakref.WeakSet[FleetScopeLike] = weakref.WeakSet()

    def track(self, scope: FleetScopeLike) -> None:
        """Report ``scope``'s budget, window and spend while it is alive."""
        with self._lock:
            self._scopes.add(scope)

    def forget(self, scope: FleetScopeLike) -> None:
        """Stop reporting ``scope`` (it was closed)."""
        with self._lock:
            self._scopes.discard(scope)

    def _live(self) -> dict[str, FleetScopeLike]:
        with self._lock:
            scopes = list(self._scopes)
        # Several FleetLimits of one scope in a process are one scope: one series each.
        return {s.scope: s for s in scopes}

    def observe_budget(self, options: CallbackOptions) -> Iterable[Observation]:
        """The budget gauge's callback: USD per window, scopes with a budget only."""
        return [
            Observation(s.budget_usd, {sc.FLEET_SCOPE: name})
            for name, s in self._live().items()
            if s.budget_usd is not None
        ]

    def observe_window(self, options: CallbackOptions) -> Iterable[Observation]:
        """The window gauge's callback: seconds, scopes with windows only."""
        return [
            Observation(s.window_s, {sc.FLEET_SCOPE: name})
            for name, s in self._live().items()
            if s.window_s is not None
        ]

    def observe_spent(self, options: CallbackOptions) -> Iterable[Observation]:
        """The spent gauge's callback: the current window's settled USD, from the store.

        A scope whose store does not answer is left out of this collection (the
        store error is counted by the scope itself); metrics never raise.
        """
        found = []
        for name, s in self._live().items():
            if s.budget_usd is None:
                continue
            try:
                spent = s.usage().spent_usd
            except Exception:  # telemetry never breaks anything, not even the reader
                _log.debug("fleet scope %r: spent gauge skipped", name, exc_info=True)
                continue
            found.append(Observation(spent, {sc.FLEET_SCOPE: name}))
        return found


#: The process-wide registry the fleet gauges read (``FleetLimits.__init__`` adds to it).
fleet_scopes = FleetScopes()


class _PipelineStats(Protocol):
    @property
    def dropped(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def abandoned(self) -> int: ...


class PipelineLike(Protocol):
    """What the lost-spans counter reads from an export pipeline (``BoundedSpanProcessor``)."""

    name: str

    def stats(self) -> _PipelineStats: ...


class ExportLosses:
    """Spans one MeterProvider's process could not export, as a counter per pipeline and reason.

    The export pipelines already count what they lose (queue full, export failed,
    abandoned at shutdown); this reports those counts, read when a reader collects,
    so an alert sees lost spans even when traces cannot leave but metrics can.
    Pipelines are held weakly.

    Example::

        count_export_losses(meter_provider, [pipeline])   # configure() does this
    """

    REASONS = ("dropped", "failed", "abandoned")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipelines: weakref.WeakSet[PipelineLike] = weakref.WeakSet()

    def track(self, pipeline: PipelineLike) -> None:
        with self._lock:
            self._pipelines.add(pipeline)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The counter's callback: every reason of every pipeline, zeros included."""
        with self._lock:
            pipelines = list(self._pipelines)
        totals: dict[tuple[str, str], int] = {}
        for pipeline in pipelines:
            stats = pipeline.stats()
            for reason in self.REASONS:
                key = (pipeline.name, reason)
                totals[key] = totals.get(key, 0) + int(getattr(stats, reason))
        return [
            Observation(count, {sc.EXPORT_PIPELINE: name, sc.EXPORT_REASON: reason})
            for (name, reason), count in totals.items()
        ]


# One counter per MeterProvider, however often configure() adds pipelines to it.
_losses: weakref.WeakKeyDictionary[MeterProvider, ExportLosses] = weakref.WeakKeyDictionary()
_losses_lock = threading.Lock()


def count_export_losses(provider: MeterProvider, pipelines: Iterable[PipelineLike]) -> None:
    """Report the spans ``pipelines`` lose through ``provider``'s lost-spans counter."""
    with _losses_lock:
        losses = _losses.get(provider)
        if losses is None:
            losses = _losses[provider] = ExportLosses()
            provider.get_meter(sc.INSTRUMENTATION_SCOPE, VERSION).create_observable_counter(
                sc.METRIC_EXPORT_SPANS_LOST,
                callbacks=[losses.observe],
                unit="{span}",
                description="Spans this process could not export, by pipeline and reason.",
            )
    for pipeline in pipelines:
        losses.track(pipeline)


@dataclass(frozen=True, slots=True)
class Instruments:
    """Every instrument the core records to."""

    token_usage: Histogram
    operation_duration: Histogram
    agent_duration: Histogram
    tool_duration: Histogram
    cost: CostTotals
    sessions: Counter
    tool_calls: Counter
    breaker_state: Gauge
    limit_hits: Counter
    guardrail_violations: Counter
    recovery_attempts: Counter
    budget_utilization: Histogram
    session_iterations: Histogram
    token_detail: Counter
    calls_without_usage: Counter
    unpriced_calls: Counter
    fleet_cost: Counter
    fleet_refusals: Counter
    fleet_store_errors: Counter
    loop_detections: Counter
    agent_inference_calls: Histogram
    agent_tool_calls: Histogram
    remote_sessions: Counter
    remote_unknown: Counter
    fleet_dropped: Counter
    fleet_evictions: Counter
    #: False when nothing can ever read these instruments: the global provider
    #: is still the API's unset proxy, or a no-op provider was passed. The
    #: per-call paths (a turn, a tool call) then skip recording altogether.
    live: bool = True


def _build(provider: MeterProvider | None) -> Instruments:
    meter = (
        provider.get_meter(sc.INSTRUMENTATION_SCOPE, VERSION)
        if provider is not None
        else metrics.get_meter(sc.INSTRUMENTATION_SCOPE, VERSION)
    )
    tokens = list(sc.TOKEN_BUCKETS)
    seconds = list(sc.DURATION_BUCKETS)
    cost = CostTotals()
    meter.create_observable_counter(
        sc.METRIC_COST,
        callbacks=[cost.observe],
        unit="USD",
        description="Model spend in US dollars.",
    )
    meter.create_observable_gauge(
        sc.METRIC_FLEET_BUDGET,
        callbacks=[fleet_scopes.observe_budget],
        unit="USD",
        description="Each fleet scope's budget per window, in US dollars.",
    )
    meter.create_observable_gauge(
        sc.METRIC_FLEET_WINDOW,
        callbacks=[fleet_scopes.observe_window],
        unit="s",
        description="Each fleet scope's window length.",
    )
    meter.create_observable_gauge(
        sc.METRIC_FLEET_SPENT,
        callbacks=[fleet_scopes.observe_spent],
        unit="USD",
        description="What each fleet scope has spent in its current window (read from the store).",
    )
    counts = list(sc.CALL_COUNT_BUCKETS)
    return Instruments(
        token_usage=meter.create_histogram(
            sc.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Tokens used per model call, by token type.",
            explicit_bucket_boundaries_advisory=tokens,
        ),
        operation_duration=meter.create_histogram(
            sc.METRIC_OPERATION_DURATION,
            unit="s",
            description="Duration of model calls.",
            explicit_bucket_boundaries_advisory=seconds,
        ),
        agent_duration=meter.create_histogram(
            sc.METRIC_AGENT_DURATION,
            unit="s",
            description="Duration of agent sessions.",
            explicit_bucket_boundaries_advisory=list(sc.AGENT_DURATION_BUCKETS),
        ),
        tool_duration=meter.create_histogram(
            sc.METRIC_TOOL_DURATION,
            unit="s",
            description="Duration of tool calls, denied ones included.",
            explicit_bucket_boundaries_advisory=seconds,
        ),
        cost=cost,
        sessions=meter.create_counter(
            sc.METRIC_SESSIONS, unit="{session}", description="Finished sessions by outcome."
        ),
        tool_calls=meter.create_counter(
            sc.METRIC_TOOL_CALLS,
            unit="{call}",
            description="Tool calls by permission decision.",
        ),
        breaker_state=meter.create_gauge(
            sc.METRIC_BREAKER_STATE,
            unit="1",
            description="Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        ),
        limit_hits=meter.create_counter(
            sc.METRIC_LIMIT_HITS,
            unit="{hit}",
            description="Budget and iteration-cap hits.",
        ),
        guardrail_violations=meter.create_counter(
            sc.METRIC_GUARDRAIL_VIOLATIONS,
            unit="{violation}",
            description="Tool calls blocked by a guardrail.",
        ),
        recovery_attempts=meter.create_counter(
            sc.METRIC_RECOVERY_ATTEMPTS,
            unit="{attempt}",
            description="Recovery bookkeeping after failed turns.",
        ),
        budget_utilization=meter.create_histogram(
            sc.METRIC_BUDGET_UTILIZATION,
            unit="1",
            description="Spent / limit of each session with a budget, at its end.",
            explicit_bucket_boundaries_advisory=list(sc.UTILIZATION_BUCKETS),
        ),
        session_iterations=meter.create_histogram(
            sc.METRIC_SESSION_ITERATIONS,
            unit="{call}",
            description="Model calls admitted per session, at its end.",
            explicit_bucket_boundaries_advisory=list(sc.ITERATION_BUCKETS),
        ),
        token_detail=meter.create_counter(
            sc.METRIC_TOKEN_DETAIL,
            unit="{token}",
            description="Cache-read, cache-write and reasoning tokens (subsets of input/output).",
        ),
        calls_without_usage=meter.create_counter(
            sc.METRIC_CALLS_WITHOUT_USAGE,
            unit="{call}",
            description="Model calls whose response carried no token usage (booked at $0).",
        ),
        unpriced_calls=meter.create_counter(
            sc.METRIC_UNPRICED_CALLS,
            unit="{call}",
            description="Model calls of models with no known price (booked at $0).",
        ),
        fleet_cost=meter.create_counter(
            sc.METRIC_FLEET_COST,
            unit="USD",
            description="USD settled into fleet-wide budgets, per fleet scope.",
        ),
        fleet_refusals=meter.create_counter(
            sc.METRIC_FLEET_REFUSALS,
            unit="{call}",
            description="Calls refused by fleet limits, per scope and limit kind.",
        ),
        fleet_store_errors=meter.create_counter(
            sc.METRIC_FLEET_STORE_ERRORS,
            unit="{error}",
            description="Fleet store (Redis) calls that failed or timed out, per scope.",
        ),
        loop_detections=meter.create_counter(
            sc.METRIC_LOOP_DETECTIONS,
            unit="{detection}",
            description="Tool-call loops detected (refused under LoopGuard(on_loop='raise')).",
        ),
        agent_inference_calls=meter.create_histogram(
            sc.METRIC_AGENT_INFERENCE_CALLS,
            unit="{inference_call}",
            description="Model calls made in one agent invocation (session), failed ones included.",
            explicit_bucket_boundaries_advisory=counts,
        ),
        agent_tool_calls=meter.create_histogram(
            sc.METRIC_AGENT_TOOL_CALLS,
            unit="{tool_call}",
            description="Tool calls made in one agent invocation (session), denied ones included.",
            explicit_bucket_boundaries_advisory=counts,
        ),
        remote_sessions=meter.create_counter(
            sc.METRIC_REMOTE_SESSIONS,
            unit="{session}",
            description="Sessions opened under a shared session of another process.",
        ),
        remote_unknown=meter.create_counter(
            sc.METRIC_REMOTE_UNKNOWN,
            unit="{request}",
            description="Requests naming a shared session the store does not know (ignored).",
        ),
        fleet_dropped=meter.create_counter(
            sc.METRIC_FLEET_DROPPED,
            unit="{finish}",
            description="Fleet settlements or clean-ups dropped before reaching Redis.",
        ),
        fleet_evictions=meter.create_counter(
            sc.METRIC_FLEET_EVICTIONS,
            unit="{window}",
            description="Fleet windows whose keys vanished from Redis while in use.",
        ),
    )


try:
    # The global provider before set_meter_provider(): a proxy whose instruments
    # record nothing until a real provider is set.
    from opentelemetry.metrics._internal import _PROXY_METER_PROVIDER

    _UNSET: MeterProvider | None = _PROXY_METER_PROVIDER
except ImportError:  # the API moved it: treat the global provider as always live
    _UNSET = None

_global: Instruments | None = None
_global_quiet: Instruments | None = None
# Weak: a provider the user drops (per test, per tenant) must not be kept alive here.
_cache: weakref.WeakKeyDictionary[MeterProvider, Instruments] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def instruments_for(provider: MeterProvider | None = None) -> Instruments:
    """The instruments for ``provider`` (when None, the global one, or while none is
    set, the provider of a live ``configure()`` set-up that is not global), made once.

    With no provider given they are the global proxy's instruments. While no
    global MeterProvider is set, the copy returned says ``live=False``, so turns
    and tool calls skip recording; a session opened after the user sets one
    records (the instruments themselves are the same, and forward then).
    """
    global _global, _global_quiet
    if provider is None and _UNSET is not None and metrics.get_meter_provider() is _UNSET:
        provider = default_meter_provider()  # no global one: a configure() set-up's
    if provider is None:
        if _global is None:
            with _lock:
                if _global is None:
                    _global = _build(None)
                    _global_quiet = replace(_global, live=False)
        if _UNSET is not None and metrics.get_meter_provider() is _UNSET:
            assert _global_quiet is not None
            return _global_quiet
        return _global
    found = _cache.get(provider)
    if found is not None:
        return found
    with _lock:
        found = _cache.get(provider)
        if found is None:
            found = _build(provider)
            if isinstance(provider, NoOpMeterProvider):
                found = replace(found, live=False)
            _cache[provider] = found
        return found
