"""``configure()``: one call that sends this package's telemetry somewhere useful.

Two modes, chosen the way OpenTelemetry users expect:

* **Collector** — an OTLP endpoint is configured (``endpoint=`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``..._TRACES_ENDPOINT`` /
  ``..._METRICS_ENDPOINT``): spans and metrics go out as OTLP, HTTP/protobuf by
  default or gRPC when ``protocol`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` asks.
* **Embedded** — no endpoint anywhere: spans are written as OTLP JSON lines to
  ``./telemetry-out/spans.jsonl`` (metrics next to them) and a per-session report
  is printed when the process exits. No server needed.

Whatever happens to the collector, the agent is not slowed down (export runs on
background threads), memory stays bounded (queues have a cap; drops are counted)
and exit takes at most ``shutdown_timeout`` seconds.

Example::

    from techrevati.runtime import configure

    telemetry = configure(service_name="research-agent")
    ...  # run agents
    print(telemetry.report())   # or just let the process exit
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.util.re import parse_env_headers
from opentelemetry.util.types import AttributeValue

from .content import set_capture_content
from .jsonl import JsonLinesMetricExporter, JsonLinesSpanExporter
from .limits import ensure_limits_processor
from .pipeline import (
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    BoundedSpanProcessor,
    ExportStats,
    FanOutExporter,
    run_all_bounded,
    run_bounded,
)
from .report import ReportExporter, build_report, records_from_file, render_report
from .sampling import sampler_from_env

_logger = logging.getLogger(__name__)

#: Per-request OTLP timeout when neither the caller nor ``OTEL_EXPORTER_OTLP_*TIMEOUT``
#: sets one. The SDK's 10 s, with retries, is what makes exit hang on a dead collector.
DEFAULT_EXPORT_TIMEOUT_S = 3.0
#: Where the embedded mode writes, unless ``spans_file`` or this variable says otherwise.
SPANS_FILE_ENV = "TECHREVATI_SPANS_FILE"
DEFAULT_SPANS_FILE = Path("telemetry-out") / "spans.jsonl"

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"


@dataclass(frozen=True)
class Destination:
    """Where one signal goes: ``"otlp"`` to ``endpoint`` over ``protocol``, or a file."""

    kind: str
    target: str
    protocol: str | None = None


class TelemetryHandle:
    """What :func:`configure` set up, and the controls to flush and stop it.

    Example::

        telemetry = configure()
        telemetry.force_flush()
        print(telemetry.report())
        telemetry.shutdown()   # also runs at exit; bounded either way

        with configure(set_global=False) as local:   # shut down when the block ends
            ...
    """

    def __init__(
        self,
        *,
        enabled: bool,
        tracer_provider: SDKTracerProvider | None = None,
        meter_provider: SDKMeterProvider | None = None,
        owns_tracer_provider: bool = False,
        owns_meter_provider: bool = False,
        pipelines: tuple[BoundedSpanProcessor, ...] = (),
        report_source: ReportExporter | None = None,
        print_report_at_shutdown: bool = False,
        spans_file: Path | None = None,
        metrics_file: Path | None = None,
        destinations: tuple[Destination, ...] = (),
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        report_stream: Callable[[], IO[str]] = lambda: sys.stderr,
    ) -> None:
        self.enabled = enabled
        #: The SDK tracer provider our spans go through (None when disabled).
        self.tracer_provider = tracer_provider
        #: The SDK meter provider our metrics go through (None when off).
        self.meter_provider = meter_provider
        #: The OTLP JSON lines file spans are written to, if any.
        self.spans_file = spans_file
        #: The OTLP JSON lines file metrics are written to, if any.
        self.metrics_file = metrics_file
        #: Where each signal goes, for logs and for people asking "where did it go?".
        self.destinations = destinations
        self._owns_tracer_provider = owns_tracer_provider
        self._owns_meter_provider = owns_meter_provider
        self._pipelines = pipelines
        self._report_source = report_source
        self._print_report_at_shutdown = print_report_at_shutdown
        self._shutdown_timeout_s = shutdown_timeout_s
        self._report_stream = report_stream
        self._lock = threading.Lock()
        self._is_shut_down = False

    def __enter__(self) -> TelemetryHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        where = ", ".join(f"{d.kind}:{d.target}" for d in self.destinations) or "nowhere"
        return f"TelemetryHandle(enabled={self.enabled}, to={where})"

    @property
    def is_shut_down(self) -> bool:
        """True once :meth:`shutdown` ran."""
        return self._is_shut_down

    def stats(self) -> dict[str, ExportStats]:
        """Counters per export pipeline: accepted, exported, failed, dropped, abandoned."""
        return {pipeline.name: pipeline.stats() for pipeline in self._pipelines}

    def force_flush(self, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> bool:
        """Export what is queued now; waits at most ``timeout_s``. True if all finished."""
        tasks: list[tuple[str, Callable[[], object]]] = [
            (pipeline.name, pipeline.flush_blocking) for pipeline in self._pipelines
        ]
        if self.meter_provider is not None and self._owns_meter_provider:
            meter_provider = self.meter_provider
            millis = int(timeout_s * 1000)
            tasks.append(("metrics", lambda: meter_provider.force_flush(millis)))
        return run_all_bounded(tasks, timeout_s, "telemetry flush")

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush and stop everything :func:`configure` started, within ``timeout_s``.

        Providers that belonged to the user are left running; only our
        processors on them are stopped. Budgets and caps keep working after it.
        Idempotent. Then prints the report when ``configure(report=True)`` (the
        embedded default) asked for it. Returns True when everything finished
        inside the bound.
        """
        with self._lock:
            if self._is_shut_down:
                return True
            self._is_shut_down = True
        atexit.unregister(self._at_exit)
        bound = self._shutdown_timeout_s if timeout_s is None else timeout_s
        tasks: list[tuple[str, Callable[[], object]]] = [
            (pipeline.name, _bind_shutdown(pipeline, bound)) for pipeline in self._pipelines
        ]
        if self.meter_provider is not None and self._owns_meter_provider:
            meter_provider = self.meter_provider
            millis = int(bound * 1000)
            tasks.append(("metrics", lambda: meter_provider.shutdown(timeout_millis=millis)))
        finished = run_all_bounded(tasks, bound, "telemetry shutdown")
        if self.tracer_provider is not None and self._owns_tracer_provider:
            # Our pipelines are closed already, so this only stops the limits processor.
            provider = self.tracer_provider
            finished = run_bounded(provider.shutdown, 1.0, "tracer provider shutdown") and finished
        if self._print_report_at_shutdown:
            self._print_report()
        return finished

    def report(self) -> str:
        """The terminal report for the run so far, as text.

        Built from the spans kept in memory (embedded mode or ``report=True``),
        else from the spans file, after a bounded flush of pending spans.
        """
        if self._report_source is not None:
            if not self._is_shut_down:
                self.force_flush(timeout_s=2.0)
            built = self._report_source.build()
        elif self.spans_file is not None and self.spans_file.exists():
            if not self._is_shut_down:
                self.force_flush(timeout_s=2.0)
            built = build_report(records_from_file(self.spans_file))
        else:
            return "no spans were kept for a report: call configure(report=True)\n"
        return render_report(built, source=self._source_line())

    def _source_line(self) -> str | None:
        if self.spans_file is None:
            return None
        return (
            f"{self.spans_file} (OTLP JSON lines; replay with: techrevati-runtime report "
            f"{self.spans_file})"
        )

    def _print_report(self) -> None:
        if self._report_source is None:
            return
        try:
            built = self._report_source.build()
            if built.span_count == 0 and built.evicted == 0:
                return  # a process that ran no agent has nothing worth printing
            stream = self._report_stream()
            stream.write("\n" + render_report(built, source=self._source_line()))
            stream.flush()
        except Exception:  # a closed stream at exit must not turn into a traceback
            _logger.debug("could not print the telemetry report", exc_info=True)

    def _at_exit(self) -> None:
        self.shutdown()


def _bind_shutdown(pipeline: BoundedSpanProcessor, bound: float) -> Callable[[], object]:
    return lambda: pipeline.shutdown_within(bound)


# --- resolving settings ---------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _protocol(explicit: str | None, signal_var: str) -> str:
    raw = explicit or os.environ.get(signal_var) or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
    value = (raw or HTTP_PROTOBUF).strip().lower()
    if value in (GRPC, HTTP_PROTOBUF):
        return value
    _logger.warning(
        "OTLP protocol %r is not supported here (only grpc and http/protobuf); using %s",
        value,
        HTTP_PROTOBUF,
    )
    return HTTP_PROTOBUF


def _timeout(explicit: float | None, signal_var: str) -> float | None:
    if explicit is not None:
        return explicit
    if os.environ.get(signal_var) or os.environ.get(OTEL_EXPORTER_OTLP_TIMEOUT):
        return None  # the exporter reads the variable itself
    return DEFAULT_EXPORT_TIMEOUT_S


def _headers(headers: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if headers is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_*HEADERS itself
    parsed = parse_env_headers(headers, liberal=True) if isinstance(headers, str) else headers
    # gRPC metadata keys must be lower case; HTTP does not care.
    return {key.lower(): value for key, value in parsed.items()}


def _base_endpoint(endpoint: str | None) -> str | None:
    """The base URL, forgiving a signal path pasted in (``.../v1/traces``)."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    return base


def _signal_endpoint(endpoint: str | None, signal_var: str, path: str, protocol: str) -> str:
    """The endpoint one exporter will use, for the handle and logs."""
    if endpoint is not None:
        return endpoint if protocol == GRPC else f"{endpoint.rstrip('/')}/{path}"
    specific = os.environ.get(signal_var)
    if specific:
        return specific
    base = os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    if protocol == GRPC:
        return base or "http://localhost:4317"
    return f"{(base or 'http://localhost:4318').rstrip('/')}/{path}"


def _span_exporter(
    endpoint: str | None, protocol: str, headers: dict[str, str] | None, timeout: float | None
) -> SpanExporter:
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    url = f"{endpoint.rstrip('/')}/v1/traces" if endpoint is not None else None
    return HttpSpanExporter(endpoint=url, headers=headers, timeout=timeout)


def _metric_exporter(
    endpoint: str | None, protocol: str, headers: dict[str, str] | None, timeout: float | None
) -> MetricExporter:
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    url = f"{endpoint.rstrip('/')}/v1/metrics" if endpoint is not None else None
    return HttpMetricExporter(endpoint=url, headers=headers, timeout=timeout)


def _spans_path(spans_file: str | os.PathLike[str] | bool | None, embedded: bool) -> Path | None:
    if spans_file is False or (spans_file is None and not embedded):
        return None
    if spans_file is None or spans_file is True:
        return Path(os.environ.get(SPANS_FILE_ENV) or DEFAULT_SPANS_FILE)
    return Path(spans_file)


# --- configure ---------------------------------------------------------------------------
_global_handle: TelemetryHandle | None = None
_configure_lock = threading.Lock()


def configure(
    *,
    service_name: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    timeout: float | None = None,
    capture_content: bool | None = None,
    spans_file: str | os.PathLike[str] | bool | None = None,
    report: bool | None = None,
    metrics: bool = True,
    resource_attributes: Mapping[str, AttributeValue] | None = None,
    tracer_provider: SDKTracerProvider | None = None,
    meter_provider: SDKMeterProvider | None = None,
    set_global: bool = True,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    metric_export_interval_s: float | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> TelemetryHandle:
    """Set up OpenTelemetry tracing and metrics for techrevati-runtime agents.

    Every argument is optional; the standard ``OTEL_*`` variables fill the gaps
    (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT/_PROTOCOL/_HEADERS/_TIMEOUT``,
    ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_SDK_DISABLED``), and an explicit argument
    wins over its variable.

    Example::

        telemetry = configure(service_name="research-agent")   # embedded: file + report
        telemetry = configure(endpoint="http://127.0.0.1:4318")  # or a collector

    Args:
        service_name: ``service.name`` of the resource.
        endpoint: OTLP base URL, e.g. ``http://collector:4318`` (HTTP; ``/v1/traces``
            and ``/v1/metrics`` are appended) or ``http://collector:4317`` (gRPC).
            With no endpoint here or in the environment, the embedded mode is used.
        protocol: ``"http/protobuf"`` (default) or ``"grpc"``.
        headers: extra request headers, a mapping or ``"k1=v1,k2=v2"``.
        timeout: seconds per export request (default 3).
        capture_content: record prompts, completions and tool arguments/results on
            spans. Off unless this or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
            turns it on.
        spans_file: write spans as OTLP JSON lines to this path (True: the default
            path, False: never). The embedded mode writes ``./telemetry-out/spans.jsonl``
            (or ``$TECHREVATI_SPANS_FILE``) unless told ``False``.
        report: print the per-session report to stderr at shutdown/exit. Defaults to
            on in the embedded mode and off when exporting to a collector.
        metrics: also set up a meter provider (OTLP, or a metrics file when embedded).
        resource_attributes: extra resource attributes.
        tracer_provider: an SDK provider to add our processors to, instead of the
            global one. It is not made global.
        meter_provider: an SDK meter provider the caller manages; used as is.
        set_global: install the providers globally (the normal case). With False,
            nothing global changes and each call builds a fresh, independent set-up.
        max_queue_size: most spans held per export pipeline before new ones drop.
        metric_export_interval_s: how often metrics are exported (default 60 s, or
            ``OTEL_METRIC_EXPORT_INTERVAL``).
        shutdown_timeout: the bound, in seconds, on flushing at shutdown and exit.

    Returns:
        The :class:`TelemetryHandle`. A second global call returns the same handle
        and changes nothing, unless that handle was shut down: then new export
        pipelines are set up on the same global providers.
    """
    global _global_handle
    with _configure_lock:
        if set_global and _global_handle is not None:
            if not _global_handle.is_shut_down:
                _logger.info("configure() already ran; returning the existing telemetry handle")
                return _global_handle
            # Global providers can be set once per process: new pipelines go onto
            # the same providers rather than handing back a dead handle.
            _logger.warning(
                "configure(): the earlier telemetry was shut down; setting up new export "
                "pipelines on the existing global providers"
            )
        if capture_content is not None:
            set_capture_content(capture_content)
        if _env_true(OTEL_SDK_DISABLED):
            _logger.info("%s=true: telemetry export is off", OTEL_SDK_DISABLED)
            handle = TelemetryHandle(enabled=False)
        else:
            handle = _build(
                service_name=service_name,
                endpoint=endpoint,
                protocol=protocol,
                headers=headers,
                timeout=timeout,
                spans_file=spans_file,
                report=report,
                metrics=metrics,
                resource_attributes=resource_attributes,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                set_global=set_global,
                max_queue_size=max_queue_size,
                metric_export_interval_s=metric_export_interval_s,
                shutdown_timeout=shutdown_timeout,
            )
        if set_global:
            _global_handle = handle
        return handle


def _endpoint_configured(endpoint: str | None) -> bool:
    return bool(
        endpoint
        or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        or os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        or os.environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
    )


def _exporter_wanted(variable: str) -> bool:
    value = os.environ.get(variable, "otlp").strip().lower()
    if value in ("", "otlp"):
        return True
    if value == "none":
        return False
    _logger.warning("%s=%r is not supported here; using otlp", variable, value)
    return True


def _build(
    *,
    service_name: str | None,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | str | None,
    timeout: float | None,
    spans_file: str | os.PathLike[str] | bool | None,
    report: bool | None,
    metrics: bool,
    resource_attributes: Mapping[str, AttributeValue] | None,
    tracer_provider: SDKTracerProvider | None,
    meter_provider: SDKMeterProvider | None,
    set_global: bool,
    max_queue_size: int,
    metric_export_interval_s: float | None,
    shutdown_timeout: float,
) -> TelemetryHandle:
    embedded = not _endpoint_configured(endpoint)
    endpoint = _base_endpoint(endpoint)
    attributes: dict[str, AttributeValue] = dict(resource_attributes or {})
    if service_name:
        attributes[SERVICE_NAME] = service_name
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; explicit wins.
    resource = Resource.create(attributes)
    header_map = _headers(headers)

    # --- traces -----------------------------------------------------------------------
    provider, owns_tracer = _tracer_provider(tracer_provider, resource, set_global)
    user_provider = not owns_tracer
    if user_provider and (service_name or resource_attributes):
        _logger.warning(
            "configure(): the existing TracerProvider keeps its own resource; "
            "service_name/resource_attributes apply only to providers configure() creates"
        )
    ensure_limits_processor(provider)

    pipelines: list[BoundedSpanProcessor] = []
    destinations: list[Destination] = []
    # On a provider the user set up, their exporters are already in place; ours is
    # added only when they explicitly pass an endpoint, so nothing is sent twice.
    want_otlp_traces = not embedded and _exporter_wanted(OTEL_TRACES_EXPORTER)
    if user_provider:
        want_otlp_traces = endpoint is not None
    if want_otlp_traces:
        trace_protocol = _protocol(protocol, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        exporter = _span_exporter(
            endpoint,
            trace_protocol,
            header_map,
            _timeout(timeout, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT),
        )
        pipelines.append(
            BoundedSpanProcessor(
                exporter,
                name="otlp",
                max_queue_size=max_queue_size,
                shutdown_timeout_s=shutdown_timeout,
            )
        )
        destinations.append(
            Destination(
                "otlp",
                _signal_endpoint(
                    endpoint, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "v1/traces", trace_protocol
                ),
                trace_protocol,
            )
        )

    spans_path = _spans_path(spans_file, embedded and not user_provider)
    keep_report = report if report is not None else (embedded and not user_provider)
    local_exporters: list[SpanExporter] = []
    if spans_path is not None:
        local_exporters.append(JsonLinesSpanExporter(spans_path))
        destinations.append(Destination("file", str(spans_path)))
    report_source = ReportExporter() if keep_report else None
    if report_source is not None:
        local_exporters.append(report_source)
    if local_exporters:
        pipelines.append(
            BoundedSpanProcessor(
                local_exporters[0]
                if len(local_exporters) == 1
                else FanOutExporter(local_exporters),
                name="local",
                max_queue_size=max_queue_size,
                # A file is cheap to write: keep it close to live for people tailing it.
                schedule_delay_millis=1000,
                shutdown_timeout_s=shutdown_timeout,
            )
        )
    for pipeline in pipelines:
        provider.add_span_processor(pipeline)
    if user_provider and pipelines:
        _logger.info(
            "configure(): added techrevati processors (limits, %s) to the existing "
            "TracerProvider instead of replacing it",
            ", ".join(p.name for p in pipelines),
        )
    elif user_provider:
        _logger.info(
            "configure(): added the techrevati limits processor to the existing TracerProvider"
        )

    # --- metrics ------------------------------------------------------------------------
    metrics_path: Path | None = None
    meters, owns_meter = meter_provider, False
    if meters is None and metrics:
        metric_exporter: MetricExporter | None = None
        if embedded and spans_path is not None:
            metrics_path = spans_path.with_name("metrics.jsonl")
            metric_exporter = JsonLinesMetricExporter(metrics_path)
            destinations.append(Destination("file", str(metrics_path)))
        elif not embedded and _exporter_wanted(OTEL_METRICS_EXPORTER):
            metric_protocol = _protocol(protocol, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
            metric_exporter = _metric_exporter(
                endpoint,
                metric_protocol,
                header_map,
                _timeout(timeout, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT),
            )
            destinations.append(
                Destination(
                    "otlp",
                    _signal_endpoint(
                        endpoint, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "v1/metrics", metric_protocol
                    ),
                    metric_protocol,
                )
            )
        if metric_exporter is not None:
            meters, owns_meter = _meter_provider(
                metric_exporter, resource, set_global, metric_export_interval_s, timeout
            )
            if meters is None:
                metrics_path = None

    handle = TelemetryHandle(
        enabled=True,
        tracer_provider=provider,
        meter_provider=meters,
        owns_tracer_provider=owns_tracer,
        owns_meter_provider=owns_meter,
        pipelines=tuple(pipelines),
        report_source=report_source,
        print_report_at_shutdown=keep_report,
        spans_file=spans_path,
        metrics_file=metrics_path,
        destinations=tuple(destinations),
        shutdown_timeout_s=shutdown_timeout,
    )
    atexit.register(handle._at_exit)
    _logger.info("telemetry configured: %r", handle)
    return handle


def _tracer_provider(
    explicit: SDKTracerProvider | None, resource: Resource, set_global: bool
) -> tuple[SDKTracerProvider, bool]:
    """The provider to attach to and whether configure() created (and so owns) it."""
    if explicit is not None:
        return explicit, False
    if set_global:
        current = trace_api.get_tracer_provider()
        if isinstance(current, SDKTracerProvider):
            return current, False
        if not isinstance(current, trace_api.ProxyTracerProvider):
            _logger.warning(
                "configure(): the global TracerProvider is a %s, not an SDK one; techrevati "
                "cannot add its processors to it, so its spans use a provider of its own",
                type(current).__name__,
            )
            set_global = False
    # Exit is handled by the handle, with a bound; the SDK's own hook waits up to 30 s.
    provider = SDKTracerProvider(
        resource=resource, sampler=sampler_from_env(), shutdown_on_exit=False
    )
    if set_global:
        trace_api.set_tracer_provider(provider)
    return provider, True


def _meter_provider(
    exporter: MetricExporter,
    resource: Resource,
    set_global: bool,
    interval_s: float | None,
    timeout: float | None,
) -> tuple[SDKMeterProvider | None, bool]:
    if set_global:
        current = metrics_api.get_meter_provider()
        if isinstance(current, SDKMeterProvider):
            # An SDK MeterProvider cannot take new readers after construction.
            _logger.info("configure(): keeping the existing MeterProvider and its exporters")
            exporter.shutdown()
            return current, False
    reader = PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=interval_s * 1000 if interval_s is not None else None,
        export_timeout_millis=(timeout or DEFAULT_EXPORT_TIMEOUT_S) * 1000 + 1000,
    )
    provider = SDKMeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    if set_global:
        metrics_api.set_meter_provider(provider)
        if metrics_api.get_meter_provider() is not provider:
            _logger.warning("configure(): a non-SDK MeterProvider is global; metrics not set up")
            provider.shutdown(timeout_millis=1000)
            return None, False
    return provider, True
