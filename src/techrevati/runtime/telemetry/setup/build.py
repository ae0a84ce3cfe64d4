"""Building what an :class:`~.settings.ExportPlan` describes: providers, exporters, pipelines.

Everything here creates objects; deciding what to create is ``settings``'s job.

Example::

    handle = build_telemetry(Settings(service_name="research-agent"))
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from .. import semconv as sc
from ..calls.metrics import count_export_losses
from ..calls.providers import use_by_default
from ..export.forking import (
    SERVICE_INSTANCE_ID,
    ForkSafeMetricExporter,
    ForkSafeSpanExporter,
    new_instance_id,
)
from ..export.jsonl import JsonLinesMetricExporter, JsonLinesSpanExporter
from ..export.log_throttle import throttle_exporter_failures
from ..export.pipeline import BoundedSpanProcessor, FanOutExporter
from ..export.sampling import sampler_from_env
from ..export.sanitize import ExportLimits, quiet_repeated_truncation_warnings
from ..limits.processor import ensure_limits_processor
from ..report.exporter import ReportExporter
from .handle import Destination, TelemetryHandle
from .settings import (
    DEFAULT_EXPORT_TIMEOUT_S,
    GRPC,
    OtlpTarget,
    Settings,
    build_resource,
    plan_export,
)

_logger = logging.getLogger(__name__)


def span_exporter(target: OtlpTarget) -> SpanExporter:
    """The OTLP span exporter for ``target`` (gRPC or HTTP/protobuf)."""
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=target.endpoint, headers=target.headers, timeout=target.timeout
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    url = f"{target.endpoint.rstrip('/')}/v1/traces" if target.endpoint is not None else None
    return HttpSpanExporter(endpoint=url, headers=target.headers, timeout=target.timeout)


def metric_exporter(target: OtlpTarget) -> MetricExporter:
    """The OTLP metric exporter for ``target`` (gRPC or HTTP/protobuf)."""
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=target.endpoint, headers=target.headers, timeout=target.timeout
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    url = f"{target.endpoint.rstrip('/')}/v1/metrics" if target.endpoint is not None else None
    return HttpMetricExporter(endpoint=url, headers=target.headers, timeout=target.timeout)


def _identify(resource: Resource) -> tuple[Resource, str, bool]:
    """Add this run's id and, unless the user set one, a per-process instance id.

    Returns the resource, the run id and whether the instance id is ours (and
    so renewed in each forked worker).
    """
    run_id = new_instance_id().replace("-", "")[:16]
    extra: dict[str, str] = {sc.RUN_ID: run_id}
    ours = SERVICE_INSTANCE_ID not in resource.attributes
    if ours:
        extra[SERVICE_INSTANCE_ID] = new_instance_id()
    return resource.merge(Resource(extra)), run_id, ours


def build_telemetry(settings: Settings) -> TelemetryHandle:
    """Create the providers, exporters and pipelines ``settings`` ask for."""
    resource, run_id, own_instance_id = _identify(build_resource(settings))

    # --- traces -----------------------------------------------------------------------
    limits = ExportLimits.from_env()
    quiet_repeated_truncation_warnings()
    throttle_exporter_failures()
    provider, owns_tracer = _tracer_provider(
        settings.tracer_provider, resource, settings.set_global, limits
    )
    user_provider = not owns_tracer
    if user_provider and (settings.service_name or settings.resource_attributes):
        _logger.warning(
            "configure(): the existing TracerProvider keeps its own resource; "
            "service_name/resource_attributes apply only to providers configure() creates"
        )
    ensure_limits_processor(provider)
    plan = plan_export(settings, user_provider=user_provider)

    pipelines: list[BoundedSpanProcessor] = []
    destinations: list[Destination] = []
    if plan.traces is not None:
        target = plan.traces
        pipelines.append(
            BoundedSpanProcessor(
                ForkSafeSpanExporter(lambda: span_exporter(target)),
                name="otlp",
                max_queue_size=settings.max_queue_size,
                shutdown_timeout_s=settings.shutdown_timeout,
                limits=limits,
            )
        )
        destinations.append(Destination("otlp", plan.traces.shown_as, plan.traces.protocol))

    local_exporters: list[SpanExporter] = []
    spans_writer: JsonLinesSpanExporter | None = None
    if plan.spans_path is not None:
        spans_writer = JsonLinesSpanExporter(plan.spans_path)
        local_exporters.append(spans_writer)
        destinations.append(Destination("file", str(plan.spans_path)))
    # The HTML page at exit needs the spans too when no file keeps them.
    wants_records = plan.keep_report or (settings.report_html is not None and not plan.spans_path)
    report_source = ReportExporter() if wants_records else None
    if report_source is not None:
        local_exporters.append(report_source)
    if local_exporters:
        pipelines.append(
            BoundedSpanProcessor(
                local_exporters[0]
                if len(local_exporters) == 1
                else FanOutExporter(local_exporters),
                name="local",
                max_queue_size=settings.max_queue_size,
                # A file is cheap to write: keep it close to live for people tailing it.
                schedule_delay_millis=1000,
                shutdown_timeout_s=settings.shutdown_timeout,
                limits=limits,
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
    metrics_path = plan.metrics_path
    meters, owns_meter = settings.meter_provider, False
    exporter: MetricExporter | None = None
    metrics_writer: JsonLinesMetricExporter | None = None
    if metrics_path is not None:
        exporter = metrics_writer = JsonLinesMetricExporter(metrics_path)
        destinations.append(Destination("file", str(metrics_path)))
    elif plan.metrics is not None:
        metrics_target = plan.metrics
        exporter = ForkSafeMetricExporter(lambda: metric_exporter(metrics_target))
        destinations.append(Destination("otlp", plan.metrics.shown_as, plan.metrics.protocol))
    if exporter is not None:
        meters, owns_meter = _meter_provider(
            exporter,
            resource,
            settings.set_global,
            settings.metric_export_interval_s,
            settings.timeout,
        )
        if meters is None or not owns_meter:
            metrics_path = metrics_writer = None
    if meters is not None and pipelines:
        # Lost spans as a metric: traces may fail to leave while metrics still do.
        count_export_losses(meters, pipelines)

    handle = TelemetryHandle(
        enabled=True,
        tracer_provider=provider,
        meter_provider=meters,
        owns_tracer_provider=owns_tracer,
        owns_meter_provider=owns_meter,
        pipelines=tuple(pipelines),
        report_source=report_source,
        print_report_at_shutdown=plan.keep_report,
        report_html=Path(settings.report_html) if settings.report_html is not None else None,
        spans_file=plan.spans_path,
        metrics_file=metrics_path,
        destinations=tuple(destinations),
        shutdown_timeout_s=settings.shutdown_timeout,
        spans_exporter=spans_writer,
        metrics_exporter=metrics_writer,
        run_id=run_id if owns_tracer else None,
        renew_instance_id=own_instance_id,
    )
    atexit.register(handle._at_exit)
    # Providers the global accessors do not return (given, or set_global=False): our
    # sessions and decorated calls that name none use them, or their telemetry would
    # go to the global ones (nowhere, when no SDK provider is global).
    use_by_default(
        provider if trace_api.get_tracer_provider() is not provider else None,
        meters if meters is not None and metrics_api.get_meter_provider() is not meters else None,
        lambda: not handle.is_shut_down,
    )
    _logger.info("telemetry configured: %r", handle)
    return handle


def _tracer_provider(
    explicit: SDKTracerProvider | None,
    resource: Resource,
    set_global: bool,
    limits: ExportLimits,
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
        resource=resource,
        sampler=sampler_from_env(),
        span_limits=limits.span_limits(),
        shutdown_on_exit=False,
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


__all__ = ["build_telemetry", "metric_exporter", "span_exporter"]
