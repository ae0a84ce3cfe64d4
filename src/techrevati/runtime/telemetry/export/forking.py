"""Telemetry that survives ``fork()``: gunicorn ``--preload``, Celery prefork, multiprocessing.

What the OpenTelemetry SDK already does in a forked child (SDK 1.45, checked in
its source): the batch span processor empties its queue and starts a new worker
thread, the periodic metric reader starts a new ticker thread, and the
providers renew their own locks. What it leaves to us, and this module does:

* **exporters**: an OTLP exporter holds an HTTP session or a gRPC channel whose
  connections the child shares with its parent. :class:`ForkSafeSpanExporter`
  and :class:`ForkSafeMetricExporter` build a fresh exporter in each process
  the first time it exports there.
* **identity**: every process gets its own ``service.instance.id``, so a
  collector never mixes the cumulative metrics of two workers in one series;
  the run id (:data:`~.semconv.RUN_ID`) is kept, so the workers of one run are
  still one run.
* **inherited state**: the child starts with empty metric aggregations (the
  parent's counts stay the parent's), and locks a parent thread held at the
  moment of the fork are renewed.
* **exit**: a ``multiprocessing`` worker ends with ``os._exit()``, which skips
  ``atexit``; :func:`on_multiprocessing_exit` registers a flush that its
  bootstrap runs first. A child made with a bare ``os.fork()`` that leaves
  through ``os._exit()`` must call ``handle.shutdown()`` itself.

Example::

    exporter = ForkSafeSpanExporter(lambda: OTLPSpanExporter(timeout=3))
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_logger = logging.getLogger(__name__)

SERVICE_INSTANCE_ID = "service.instance.id"


def new_instance_id() -> str:
    """A fresh ``service.instance.id`` (a random UUID, as the conventions suggest)."""
    return str(uuid.uuid4())


def after_fork_in_child(method: Callable[[], object]) -> None:
    """Run the bound ``method`` in every child forked from now on, while its object lives.

    Only a weak reference is kept: a handle or exporter that is gone is not kept
    alive by the fork hook, and its hook does nothing.

    Example::

        after_fork_in_child(self._renew_lock)
    """
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.WeakMethod(method)

    def hook() -> None:
        target = ref()
        if target is not None:
            try:
                target()
            except Exception:  # a fork hook must never break the child
                _logger.debug("after-fork hook %r failed", target, exc_info=True)

    os.register_at_fork(after_in_child=hook)


class _PerProcess:
    """An exporter built lazily once per process by ``factory``."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._inner: Any = factory()
        after_fork_in_child(self._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()

    def current(self) -> Any:
        if self._pid == os.getpid():
            return self._inner
        with self._lock:
            if self._pid != os.getpid():
                # The parent's exporter (and its sockets) are left alone: closing
                # them here could cut the parent's connection.
                self._inner = self._factory()
                self._pid = os.getpid()
        return self._inner

    def owned_here(self) -> Any | None:
        """The exporter if it was built in this process, else None."""
        return self._inner if self._pid == os.getpid() else None


class ForkSafeSpanExporter(SpanExporter):
    """A span exporter that is rebuilt by ``factory`` in each process that exports.

    Example::

        ForkSafeSpanExporter(lambda: OTLPSpanExporter(endpoint=url, timeout=3))
    """

    def __init__(self, factory: Callable[[], SpanExporter]) -> None:
        self._exporters = _PerProcess(factory)

    @property
    def inner(self) -> SpanExporter:
        """The exporter this process uses."""
        exporter: SpanExporter = self._exporters.current()
        return exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export(spans)

    def shutdown(self) -> None:
        exporter = self._exporters.owned_here()
        if exporter is not None:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        exporter = self._exporters.owned_here()
        return True if exporter is None else bool(exporter.force_flush(timeout_millis))


class ForkSafeMetricExporter(MetricExporter):
    """A metric exporter that is rebuilt by ``factory`` in each process that exports.

    Example::

        ForkSafeMetricExporter(lambda: OTLPMetricExporter(endpoint=url, timeout=3))
    """

    def __init__(self, factory: Callable[[], MetricExporter]) -> None:
        self._exporters = _PerProcess(factory)
        first: MetricExporter = self._exporters.current()
        super().__init__(
            preferred_temporality=first._preferred_temporality,
            preferred_aggregation=first._preferred_aggregation,
        )

    @property
    def inner(self) -> MetricExporter:
        """The exporter this process uses."""
        exporter: MetricExporter = self._exporters.current()
        return exporter

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        exporter = self._exporters.owned_here()
        return True if exporter is None else bool(exporter.force_flush(timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        exporter = self._exporters.owned_here()
        if exporter is not None:
            exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


# --- state a child must not inherit --------------------------------------------------------
def renew_identity(
    tracer_provider: SDKTracerProvider | None, meter_provider: SDKMeterProvider | None
) -> str:
    """Give this (forked) process its own ``service.instance.id`` on both providers.

    Uses the providers' ``_update_resource``, the hook the SDK itself calls at
    fork for process-dependent resource attributes. Returns the new id.
    """
    instance = new_instance_id()
    update = Resource({SERVICE_INSTANCE_ID: instance})
    for provider in (tracer_provider, meter_provider):
        renew = getattr(provider, "_update_resource", None)
        if callable(renew):
            renew(update)
        elif provider is not None:
            _logger.debug("%r cannot take a new resource after fork", provider)
    return instance


def forget_inherited_metrics(meter_provider: SDKMeterProvider | None) -> bool:
    """Start the child's metric aggregations from zero, and renew their locks.

    Without this, a worker forked from a parent that already counted 10 sessions
    would report those 10 again under its own identity. Reaches into SDK
    internals (checked on 1.45); on a layout it does not know it changes
    nothing and returns False.
    """
    consumer = getattr(meter_provider, "_measurement_consumer", None)
    storages = getattr(consumer, "_reader_storages", None)
    if not isinstance(storages, dict):
        return False
    done = True
    for reader, storage in storages.items():
        matches = getattr(storage, "_instrument_view_instrument_matches", None)
        if isinstance(matches, dict) and hasattr(storage, "_lock"):
            storage._lock = threading.RLock()
            matches.clear()
        else:
            done = False
        if hasattr(reader, "_export_lock"):
            # Held forever in the child if the parent was exporting at the fork.
            reader._export_lock = threading.Lock()
    if consumer is not None and hasattr(consumer, "_lock"):
        consumer._lock = threading.Lock()
    return done


def on_multiprocessing_exit(owner: object, callback: Callable[[Any], object]) -> None:
    """Run ``callback(owner)`` when a ``multiprocessing`` worker forked from now on ends.

    Such workers leave through ``os._exit()`` (no ``atexit``); their bootstrap
    runs multiprocessing's finalizers first, and that is where this goes. The
    registration is made in each worker, after the bootstrap has cleared the
    finalizers it inherited. ``owner`` is held weakly until the fork.
    """
    from multiprocessing import util

    def in_worker(alive: object) -> None:
        util.Finalize(None, callback, args=(alive,), exitpriority=100)

    util.register_after_fork(owner, in_worker)


__all__ = [
    "SERVICE_INSTANCE_ID",
    "ForkSafeMetricExporter",
    "ForkSafeSpanExporter",
    "after_fork_in_child",
    "forget_inherited_metrics",
    "new_instance_id",
    "on_multiprocessing_exit",
    "renew_identity",
]
