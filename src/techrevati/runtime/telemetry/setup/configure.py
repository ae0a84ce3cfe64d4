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

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.util.types import AttributeValue

from ...caller import warn_user
from ...frameworks import uninstall_tool_doors
from ..calls.content import set_capture_content
from ..calls.conventions import use_proposed
from ..calls.session import any_open as any_open_session
from ..calls.session import outside_limit_hit
from ..export.pipeline import DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SHUTDOWN_TIMEOUT_S
from ..limits.guard import disable_guard, enable_guard, ensure_guard
from ..limits.ledger import fleet_levels
from ..limits.membership import install_fleet, process_root
from ..limits.remote import SessionStore, check_propagator, install_store
from ..limits.remote import session_store as session_store_in_use
from .autoinstrument import prepare as prepare_instrumentations
from .build import build_telemetry
from .handle import Destination, TelemetryHandle
from .settings import (
    DEFAULT_EXPORT_TIMEOUT_S,
    DEFAULT_SPANS_FILE,
    GRPC,
    HTTP_PROTOBUF,
    SPANS_FILE_ENV,
    Settings,
    sdk_disabled,
)
from .signals import install_sigterm_handler

_logger = logging.getLogger(__name__)

_global_handle: TelemetryHandle | None = None
_global_settings: Settings | None = None
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
    fleet: Any = None,
    instrument: Iterable[str] | None = None,
    handle_sigterm: bool | None = None,
    session_store: Any = None,
    accept_remote_sessions: bool = True,
    report_html: str | os.PathLike[str] | None = None,
    guard: bool = True,
    proposed_conventions: bool | None = None,
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
        protocol: ``"http/protobuf"`` (default) or ``"grpc"``; another value raises ``ValueError``.
        headers: extra request headers, a mapping or ``"k1=v1,k2=v2"``.
        timeout: seconds per export request (default 3), a finite number > 0.
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
            global one. It is not made global; sessions and decorated calls that
            name no provider send their spans to it.
        meter_provider: an SDK meter provider the caller manages; used as is, and
            our metrics go to it.
        set_global: install the providers globally (the normal case). With False,
            nothing global changes and each call builds a fresh, independent set-up;
            the last one built receives, until its shutdown, the telemetry of
            sessions that name no provider.
        max_queue_size: most spans held per export pipeline before new ones drop (an
            int >= 1).
        metric_export_interval_s: how often metrics are exported (default 60 s, or
            ``OTEL_METRIC_EXPORT_INTERVAL``), in seconds > 0.
        shutdown_timeout: the bound, in seconds (finite, > 0), on flushing at shutdown
            and exit.
        fleet: fleet-wide limits (one ``FleetLimits`` or a list) that every model
            call in the process counts against, in a session or not. Applied on
            every call (a repeated ``configure(fleet=...)`` replaces the set).
        instrument: clients to instrument, e.g. ``["openai", "anthropic"]``: switches on
            the instrumentation we recommend for each (see ``autoinstrument``) and the
            client guard that keeps a refused call from being sent. A missing package
            raises ``ImportError`` naming it, before anything is set up.
        handle_sigterm: on SIGTERM (``docker stop``, Kubernetes), end every open session,
            flush, print the report, then pass the signal on (to the previous handler,
            else the default, so the process still exits as killed by SIGTERM). By
            default (None) taken only when SIGTERM has its default action and this runs
            on the main thread; an application's own earlier handler is left alone.
            True also takes it over an earlier handler, which then runs after ours.
            False never touches SIGTERM. A handler installed after ``configure()`` wins.
        session_store: where shared sessions (``agent_session(..., shared=True)``)
            live, so that their limits hold across processes: a ``redis://`` URL, a
            ``redis.Redis`` client or a ``RedisSessionStore``. Every process of the
            tree needs one (the same Redis).
        accept_remote_sessions: False for edge services: W3C baggage from requests
            is then never trusted to name a shared session (strip inbound baggage at
            the edge of your trust boundary as well).
        report_html: at shutdown/exit, also write the run's report as one self-contained
            HTML page to this path (session tree, timelines, cost by model and agent;
            opens from disk, no network). Built from the spans kept in memory when they
            hold the whole run, else from the spans file; bounded in time (at least
            30 s). Off by default.
        guard: the client guard (on by default wherever limits exist: a session with a
            cap or budget, a fleet scope) admits and books every ``openai`` /
            ``anthropic`` request, and stops a refused one before it is sent, even
            with no instrumentation; and in a session with a permission policy or
            guardrails, agent frameworks' own tools (LangChain, the OpenAI Agents SDK,
            pydantic-ai, smolagents) pass them as ``@tool_call`` functions do.
            ``False`` opts out of both for the process.
        proposed_conventions: also write GenAI attributes that are still proposals on
            our spans: ``gen_ai.usage.cost.amount`` / ``.currency`` / ``.source`` (PR #443
            of semantic-conventions-genai) on model calls and sessions, and
            ``gen_ai.agent.iteration_budget.limit`` / ``.consumed`` (issue #425) on
            sessions with ``max_iterations``. Process-wide; None leaves the current
            choice (off unless switched on). Their names may still change; the
            ``techrevati.*`` attributes are written either way.

    Returns:
        The :class:`TelemetryHandle`. A second global call returns the same handle
        and changes nothing, unless that handle was shut down: then new export
        pipelines are set up on the same global providers.
    """
    for name, flag in (("accept_remote_sessions", accept_remote_sessions), ("guard", guard)):
        if not isinstance(flag, bool):
            # "no" is truthy: an edge service would go on trusting inbound baggage.
            raise TypeError(f"configure() {name} must be True or False, got {flag!r}")
    if proposed_conventions is not None and not isinstance(proposed_conventions, bool):
        raise TypeError(
            f"configure() proposed_conventions must be True, False or None, "
            f"got {proposed_conventions!r}"
        )
    settings = Settings(
        service_name=service_name,
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        timeout=timeout,
        capture_content=capture_content,
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
        handle_sigterm=handle_sigterm,
        report_html=report_html,
    )
    if proposed_conventions is not None:
        use_proposed(proposed_conventions)
    switch_on = (
        prepare_instrumentations(instrument, guard=guard) if instrument is not None else None
    )
    if guard:
        enable_guard()
    else:
        relied = disable_guard()
        doors = uninstall_tool_doors()
        if (relied or doors) and any_open_session():
            # Limits were relying on it (a repeated configure(), a library's call): an
            # opt-out, but never a silent one.
            removed = (
                "the client guard for the whole process: bare openai / anthropic calls are "
                "no longer counted or refused by any session's limits, and refusals "
                "producers swallow are no longer relayed"
            )
            if doors:
                removed += (
                    "; and the frameworks' tool doors: agent frameworks' tools no longer "
                    "pass a session's permission policy and guardrails"
                )
            warn_user(
                f"configure(guard=False) removed {removed}",
                RuntimeWarning,
            )
    if fleet is not None:
        install_fleet(fleet_levels(fleet))
        root = process_root()
        if root is not None:
            # Refusals outside every session have no session span: give them their own.
            root.on_limit = outside_limit_hit
        if guard and fleet_levels(fleet):
            ensure_guard()
    if session_store is not None:
        store = session_store_from(session_store, accept_remote=accept_remote_sessions)
        # A call outside every local session under a remote one: refused with a span
        # of its own, as under the process root.
        install_store(store, on_limit=outside_limit_hit)
        if store.accept_remote:
            check_propagator("configure(session_store=...): a shared session of another service")
        if guard:
            # A child process often opens no session of its own: its bare client
            # calls are the remote session's, so the guard is needed here too.
            ensure_guard()
    elif not accept_remote_sessions:
        current = session_store_in_use()
        if current is not None:
            current.accept_remote = False
    handle = configure_with(settings)
    if switch_on is not None:
        switch_on(handle.tracer_provider)
    return handle


def configure_with(settings: Settings) -> TelemetryHandle:
    """:func:`configure` with its arguments gathered in a :class:`~.settings.Settings`."""
    global _global_handle, _global_settings
    with _configure_lock:
        if settings.set_global and _global_handle is not None:
            if not _global_handle.is_shut_down:
                _warn_ignored(settings)
                return _global_handle
            # Global providers can be set once per process: new pipelines go onto
            # the same providers rather than handing back a dead handle.
            _logger.warning(
                "configure(): the earlier telemetry was shut down; setting up new export "
                "pipelines on the existing global providers"
            )
        if settings.capture_content is not None:
            set_capture_content(settings.capture_content)
        if sdk_disabled():
            _logger.info("%s=true: telemetry export is off", OTEL_SDK_DISABLED)
            handle = TelemetryHandle(enabled=False)
        else:
            handle = build_telemetry(settings)
        if settings.handle_sigterm or (settings.handle_sigterm is None and handle.enabled):
            install_sigterm_handler(
                handle, settings.shutdown_timeout, explicit=settings.handle_sigterm is True
            )
        if settings.set_global:
            _global_handle = handle
            _global_settings = settings
        return handle


def session_store_from(value: Any, *, accept_remote: bool) -> SessionStore:
    """``session_store=`` as a store: a URL or a Redis client gets a ``RedisSessionStore``."""
    if all(hasattr(value, name) for name in ("open_shared", "lookup", "close_shared")):
        store: SessionStore = value
        store.accept_remote = accept_remote and store.accept_remote
        return store
    try:
        from ...fleet.sessions import RedisSessionStore
    except ImportError as exc:
        raise ImportError(
            "session_store needs the Redis client: pip install redis "
            "(or, from a clone of this project, pip install '.[redis]')"
        ) from exc
    return RedisSessionStore(value, accept_remote=accept_remote)


def _warn_ignored(settings: Settings) -> None:
    """Say which arguments of a repeated ``configure()`` call had no effect."""
    earlier = _global_settings
    ignored = earlier.overridden_by(settings) if earlier is not None else []
    if not ignored:
        _logger.info("configure() already ran; returning the existing telemetry handle")
        return
    _logger.warning(
        "configure() already ran; this call's %s %s ignored (the first call's set-up stays; "
        "shut the handle down first to configure anew)",
        ", ".join(f"{name}=" for name in ignored),
        "was" if len(ignored) == 1 else "were",
    )


__all__ = [
    "DEFAULT_EXPORT_TIMEOUT_S",
    "DEFAULT_SPANS_FILE",
    "GRPC",
    "HTTP_PROTOBUF",
    "SPANS_FILE_ENV",
    "Destination",
    "Settings",
    "TelemetryHandle",
    "configure",
    "configure_with",
]
