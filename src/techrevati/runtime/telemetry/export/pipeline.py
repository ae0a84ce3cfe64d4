"""Export pipelines that can never stall, bloat or hang the agent that feeds them.

The SDK's ``BatchSpanProcessor`` already exports on its own thread. What it
leaves open, and what this module closes:

* memory: its queue drops spans when full, but logs a warning for every single
  one. Here the number of spans held (queued *or* in an export in flight) has a
  hard cap, drops are counted, and the first drop is logged once;
* poison: one span the encoder cannot take (a lone surrogate, a 65-bit int)
  fails the whole OTLP request. Here every span is sanitised and bounded on
  the export thread first (:mod:`.sanitize`), and a batch the exporter still
  cannot encode is split until the one bad span is alone;
* exit: its ``shutdown`` waits up to 30 s per processor, and with a collector
  that accepts connections but never answers, every queued batch then waits a
  full export timeout. Here shutdown has a deadline: exports that would start
  after it are skipped (and counted), and the wait itself is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .forking import after_fork_in_child
from .sanitize import ExportLimits, sanitize_spans

_logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0


def run_bounded(
    work: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    interrupt: Callable[[], object] | None = None,
) -> bool:
    """Run ``work`` on a helper thread and wait at most ``timeout_s`` for it.

    When ``interrupt`` is given and ``work`` is still busy after 80% of the time,
    it is called once to cut ``work`` short (e.g. an exporter's shutdown, which
    stops its retry back-off). Returns True when ``work`` finished in time. A late
    ``work`` keeps running on its daemon thread and dies with the process; that is
    the price of an exit that cannot hang on a dead collector.
    """
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as error:  # reported below, on the waiting thread
            failure.append(error)

    helper = threading.Thread(target=target, name=f"techrevati-{what}", daemon=True)
    try:
        helper.start()
    except RuntimeError:
        # Late in interpreter shutdown no new thread may start: run it here. The
        # export deadline set by the caller still bounds the time it takes.
        target()
    else:
        timeout_s = max(timeout_s, 0.0)
        if interrupt is None:
            helper.join(timeout_s)
        else:
            helper.join(timeout_s * 0.8)
            if helper.is_alive():
                try:
                    interrupt()
                except Exception:
                    _logger.debug("interrupting %s failed", what, exc_info=True)
                helper.join(timeout_s * 0.2)
        if helper.is_alive():
            # Debug only: the caller gets False, and shutdown sums it up in one line.
            _logger.debug("%s did not finish within %.1f s; giving up on it", what, timeout_s)
            return False
    if failure:
        _logger.warning("%s failed: %r", what, failure[0])
        return False
    return True


def run_all_bounded(
    tasks: Sequence[tuple[str, Callable[[], object]]], timeout_s: float, what: str
) -> bool:
    """Run several tasks in parallel, each on its own helper thread, sharing one deadline.

    In parallel so that a hung trace export cannot eat the time the metrics
    flush needs. True when all finished in time and none raised. The threads
    are all started from this one, one level deep: starting threads from
    threads that are themselves starting is where CPython 3.11 was seen to
    hang (a SIGTERM flush stuck inside ``Thread.start``).
    """
    if not tasks:
        return True
    deadline = time.monotonic() + max(timeout_s, 0.0)
    results: dict[str, bool] = {}
    helpers: list[tuple[str, threading.Thread]] = []

    def run(name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as error:  # reported here, on the helper; never re-raised
            _logger.warning("%s failed: %r", name, error)
            results[name] = False
        else:
            results[name] = True

    for name, work in tasks:
        helper = threading.Thread(
            target=run, args=(name, work), name=f"techrevati-{what}-{name}", daemon=True
        )
        try:
            helper.start()
        except RuntimeError:  # interpreter finalising: fall back to running inline
            results[name] = run_bounded(work, max(0.0, deadline - time.monotonic()), name)
            continue
        helpers.append((name, helper))
    for _name, helper in helpers:
        helper.join(max(0.0, deadline - time.monotonic()))
    late = [name for name, helper in helpers if helper.is_alive()]
    if late:
        _logger.debug(
            "%s: %s still busy after %.1f s; not waiting", what, ", ".join(late), timeout_s
        )
    return not late and all(results.get(name, False) for name, _ in tasks)


@dataclass(frozen=True)
class ExportStats:
    """What happened to the spans one pipeline was given.

    ``dropped`` counts spans refused because the queue was full; ``abandoned``
    counts spans still queued (or in an export that never returned) when
    shutdown gave up on them; ``failed`` counts spans the exporter reported as
    not delivered (e.g. HTTP 503). After shutdown ``pending`` is 0: every
    accepted span is then exported, failed or abandoned.
    """

    name: str
    accepted: int
    exported: int
    failed: int
    dropped: int
    abandoned: int
    pending: int

    @property
    def lost(self) -> int:
        """Spans that never left: dropped, abandoned or failed."""
        return self.dropped + self.abandoned + self.failed


class _TrackingExporter(SpanExporter):
    """Wraps the real exporter: sanitises each span, isolates bad ones, counts outcomes."""

    def __init__(
        self, inner: SpanExporter, owner: BoundedSpanProcessor, limits: ExportLimits
    ) -> None:
        self.inner = inner
        self._owner = owner
        self._limits = limits
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self._raised_once = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        owner = self._owner
        if owner.past_deadline():
            owner.settle(len(spans), abandoned=True)
            return SpanExportResult.FAILURE
        clean = sanitize_spans(spans, self._limits)
        unreadable = len(spans) - len(clean)
        exported = failed = 0
        try:
            exported, failed = self._export_isolating(clean)
        finally:
            owner.settle(exported, exported=True)
            owner.settle(failed + unreadable + (len(clean) - exported - failed), failed=True)
        return SpanExportResult.SUCCESS if exported == len(spans) else SpanExportResult.FAILURE

    def _export_isolating(self, spans: Sequence[ReadableSpan]) -> tuple[int, int]:
        """(exported, failed). When the exporter raises (it could not encode the
        batch), the batch is halved until the span that breaks it is alone, so
        every other span still goes out."""
        if not spans:
            return 0, 0
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the worker thread
            if not self._raised_once:
                self._raised_once = True
                _logger.warning(
                    "span exporter %s raised; exporting the batch in parts to isolate the "
                    "span it cannot take",
                    type(self.inner).__name__,
                    exc_info=True,
                )
            if len(spans) == 1 or self._owner.past_deadline():
                return 0, len(spans)
            middle = len(spans) // 2
            first = self._export_isolating(spans[:middle])
            second = self._export_isolating(spans[middle:])
            return first[0] + second[0], first[1] + second[1]
        if result is SpanExportResult.SUCCESS:
            return len(spans), 0
        return 0, len(spans)

    def shutdown(self) -> None:
        # Called early to cut a stuck export short, then again by the batch
        # processor; the real exporter warns on a second call, so only once.
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedSpanProcessor(SpanProcessor):
    """A batch span processor with a hard memory cap and a deadline at shutdown.

    Spans are exported on the SDK's batch worker thread, never on the thread that
    ends them; ``on_end`` only takes a lock and appends to a queue.

    Example::

        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BoundedSpanProcessor(OTLPSpanExporter(timeout=3), name="otlp", shutdown_timeout_s=5)
        )
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        name: str,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay_millis: float | None = None,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        limits: ExportLimits | None = None,
    ) -> None:
        self.name = name
        self.exporter = exporter
        self._max_pending = max(1, max_queue_size)
        self._shutdown_timeout_s = shutdown_timeout_s
        self._lock = threading.Lock()
        self._pending = 0
        self._accepted = 0
        self._exported = 0
        self._failed = 0
        self._dropped = 0
        self._abandoned = 0
        self._closed = False
        self._settled = False
        self._deadline: float | None = None
        #: What each exported span is cut to (see :mod:`.sanitize`).
        self.limits = limits if limits is not None else ExportLimits.from_env()
        self._tracker = _TrackingExporter(exporter, self, self.limits)
        # The SDK empties its queue in a forked child; our count must follow, or
        # a child forked with a full queue would drop every span it makes.
        after_fork_in_child(self._forget_pending)
        # The inner queue is as large as our cap, so the SDK never drops (and
        # never logs per span): our cap, which also covers in-flight batches,
        # is always reached first.
        self._batch = BatchSpanProcessor(
            self._tracker,
            max_queue_size=self._max_pending,
            max_export_batch_size=min(max_export_batch_size, self._max_pending),
            schedule_delay_millis=schedule_delay_millis,
        )

    # --- the hot path: runs on the caller's thread -----------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        with self._lock:
            if self._closed:
                return
            admitted = self._pending < self._max_pending
            if admitted:
                self._pending += 1
                self._accepted += 1
            else:
                self._dropped += 1
            first_drop = self._dropped == 1 and not admitted
        if admitted:
            self._batch.on_end(span)
        elif first_drop:
            _logger.warning(
                "telemetry export %r is not keeping up (%s): its queue of %d spans is full, "
                "so new spans are dropped. Logged once; the count is in "
                "TelemetryHandle.stats().",
                self.name,
                "the local spans file is written slower than spans arrive"
                if self.name == "local"
                else "collector slow or down?",
                self._max_pending,
            )

    def _forget_pending(self) -> None:
        # The child counts its own spans: the parent's are the parent's to report.
        self._lock = threading.Lock()
        self._pending = self._accepted = self._exported = 0
        self._failed = self._dropped = self._abandoned = 0

    # --- bookkeeping called from the export thread -----------------------------
    def past_deadline(self) -> bool:
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline

    def settle(
        self,
        count: int,
        *,
        exported: bool = False,
        failed: bool = False,
        abandoned: bool = False,
    ) -> None:
        """Count ``count`` spans as having left the queue, one way or the other."""
        if count <= 0:
            return
        with self._lock:
            if self._settled:
                return  # a late export after shutdown gave up: already counted abandoned
            self._pending = max(0, self._pending - count)
            if abandoned:
                self._abandoned += count
            elif failed:
                self._failed += count
            else:
                self._exported += count

    def stats(self) -> ExportStats:
        """A consistent snapshot of this pipeline's counters."""
        with self._lock:
            return ExportStats(
                name=self.name,
                accepted=self._accepted,
                exported=self._exported,
                failed=self._failed,
                dropped=self._dropped,
                abandoned=self._abandoned,
                pending=self._pending,
            )

    # --- lifecycle ---------------------------------------------------------------
    def shutdown(self) -> None:
        self.shutdown_within(self._shutdown_timeout_s)

    def shutdown_within(self, timeout_s: float) -> bool:
        """Flush what can be flushed within ``timeout_s``, then stop. Idempotent."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            # Exports that would start in the last fifth of the budget are skipped.
            self._deadline = time.monotonic() + max(0.0, timeout_s * 0.8)
        finished = run_bounded(
            self._batch.shutdown,
            timeout_s,
            f"{self.name} span export shutdown",
            interrupt=self._tracker.shutdown,
        )
        with self._lock:
            # Whatever is still queued or in flight now will never be reported on.
            self._abandoned += self._pending
            self._pending = 0
            self._settled = True
        return finished

    def flush_blocking(self) -> bool:
        """Export everything queued, on this thread, with no bound of its own."""
        with self._lock:
            if self._closed:
                return False
        return self._batch.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # The SDK's force_flush exports on the calling thread and ignores its
        # timeout; doing it on a helper thread keeps the bound real.
        return run_bounded(
            self.flush_blocking, timeout_millis / 1000.0, f"{self.name} span export flush"
        )


class FanOutExporter(SpanExporter):
    """Hands each batch to several exporters; one failing does not starve the rest."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = tuple(exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = True
        for exporter in self.exporters:
            try:
                ok = exporter.export(spans) is SpanExportResult.SUCCESS and ok
            except Exception:
                _logger.exception("span exporter %s raised", type(exporter).__name__)
                ok = False
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                _logger.exception("span exporter %s failed to shut down", type(exporter).__name__)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(exporter.force_flush(timeout_millis) for exporter in self.exporters)
