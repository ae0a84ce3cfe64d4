"""The handle ``configure()`` returns: where telemetry goes, and how to flush and stop it.

Example::

    telemetry = configure()
    telemetry.force_flush()
    print(telemetry.report())
    telemetry.shutdown()   # also runs at exit; bounded either way
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

from ..export.forking import (
    after_fork_in_child,
    forget_inherited_metrics,
    on_multiprocessing_exit,
    renew_identity,
)
from ..export.jsonl import JsonLinesMetricExporter, JsonLinesSpanExporter
from ..export.pipeline import (
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    BoundedSpanProcessor,
    ExportStats,
    run_all_bounded,
    run_bounded,
)
from ..report.exporter import (
    ReportExporter,
    RunReport,
    build_report,
    records_from_file,
    render_report,
)
from ..report.html import write_html

_logger = logging.getLogger(__name__)
#: The least time the HTML report gets at exit (more when shutdown_timeout allows more).
HTML_AT_EXIT_MIN_S = 30.0


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
        spans_exporter: JsonLinesSpanExporter | None = None,
        metrics_exporter: JsonLinesMetricExporter | None = None,
        run_id: str | None = None,
        renew_instance_id: bool = False,
        report_html: Path | None = None,
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
        #: The ``techrevati.run.id`` resource attribute of this run (None on a user's provider).
        self.run_id = run_id
        self._spans_exporter = spans_exporter
        self._metrics_exporter = metrics_exporter
        self._renew_instance_id = renew_instance_id
        #: Where the HTML report is written at shutdown (``configure(report_html=...)``).
        self.report_html = report_html
        self._lock = threading.Lock()
        self._is_shut_down = False
        #: True in a process forked after configure(): it does not print the report.
        self._forked_child = False
        #: True in a process that forked workers: its report is read from the spans file.
        self._has_forked = False
        if enabled:
            after_fork_in_child(self._after_fork_in_child)
            if hasattr(os, "register_at_fork"):
                ref = weakref.ref(self)
                os.register_at_fork(after_in_parent=lambda: _mark_forked(ref))
            on_multiprocessing_exit(self, TelemetryHandle.shutdown)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._forked_child = True
        self._has_forked = False
        if self._renew_instance_id:
            renew_identity(
                self.tracer_provider if self._owns_tracer_provider else None,
                self.meter_provider if self._owns_meter_provider else None,
            )
        if self._owns_meter_provider:
            forget_inherited_metrics(self.meter_provider)

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
        for file_exporter in (self._spans_exporter, self._metrics_exporter):
            if file_exporter is not None:
                file_exporter.defer_failure_log()  # said once, in the line below
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
        self._say_what_was_lost()
        if self._print_report_at_shutdown and not self._forked_child:
            self._print_report()
        if self.report_html is not None and not self._forked_child:
            self._write_html(self.report_html)
        return finished

    def _say_what_was_lost(self) -> None:
        """One line at shutdown when telemetry did not leave: how much, and why."""
        spans_error = self._spans_exporter.error if self._spans_exporter else None
        parts: list[str] = []
        lost = 0
        for stats in self.stats().values():
            # Spans still pending here are in an export shutdown gave up on: lost too.
            queued = stats.abandoned + stats.pending
            if not stats.lost + stats.pending:
                continue
            lost += stats.lost + stats.pending
            failed = "refused or failed in export"
            if stats.name == "local" and spans_error is not None:
                failed = f"not written to {self.spans_file}: {spans_error}"
            why = [
                f"{count} {label}"
                for count, label in (
                    (stats.dropped, "dropped on a full queue"),
                    (queued, "still queued at shutdown"),
                    (stats.failed, failed),
                )
                if count
            ]
            parts.append(f"{stats.name}: {', '.join(why)}")
        said = "1 span was dropped" if lost == 1 else f"{lost} spans were dropped"
        line = f"{said} ({'; '.join(parts)})" if lost else ""
        metrics_error = self._metrics_exporter.error if self._metrics_exporter else None
        if metrics_error is not None:
            said = f"metrics not written to {self.metrics_file}: {metrics_error}"
            line = f"{line}; {said}" if line else said
        if line:
            _logger.warning("techrevati telemetry: %s", line)

    def report(self) -> str:
        """The terminal report for the run so far, as text.

        Built from the spans kept in memory (embedded mode or ``report=True``),
        else from the spans file, after a bounded flush of pending spans.
        """
        if not self._is_shut_down:
            self.force_flush(timeout_s=2.0)
        built = self._build_report()
        if built is None:
            return "no spans were kept for a report: call configure(report=True)\n"
        return render_report(built, source=self._source_line())

    def _file_is_readable(self) -> bool:
        exporter = self._spans_exporter
        return (
            self.spans_file is not None
            and (exporter is None or exporter.error is None)
            and self.spans_file.is_file()
        )

    def _build_report(self) -> RunReport | None:
        # After forking workers, only the file has every process's spans.
        from_file = self._has_forked or self._report_source is None
        if from_file and self._file_is_readable():
            assert self.spans_file is not None
            return build_report(records_from_file(self.spans_file, run=self.run_id))
        if self._report_source is not None:
            return self._report_source.build()
        return None

    def _source_line(self) -> str | None:
        if self.spans_file is None:
            return None
        exporter = self._spans_exporter
        if exporter is not None and exporter.error is not None:
            return f"NOT written to {self.spans_file}: {exporter.error}"
        if not self.spans_file.is_file():
            return f"none written to {self.spans_file}"
        run = f" --run {self.run_id}" if self.run_id else ""
        return (
            f"{self.spans_file} (OTLP JSON lines; replay with: {replay_command()} report "
            f"{shlex.quote(str(self.spans_file))}{run})"
        )

    def _print_report(self) -> None:
        try:
            built = self._build_report()
            if built is None or (built.span_count == 0 and built.evicted == 0):
                return  # a process that ran no agent has nothing worth printing
            stream = self._report_stream()
            stream.write("\n" + render_report(built, source=self._source_line()))
            stream.flush()
        except Exception:  # a closed stream at exit must not turn into a traceback
            _logger.debug("could not print the telemetry report", exc_info=True)

    def _write_html(self, path: Path) -> None:
        """The HTML report at exit, bounded in time; a failure is one warning, never an error.

        From the spans kept in memory when they hold the whole run (nothing evicted,
        no forked workers), else from the spans file (every process's spans).
        """
        written: list[int] = []
        failed: list[Exception] = []

        def work() -> None:
            try:
                build()
            except Exception as error:  # said once below, on the exiting thread
                failed.append(error)

        def build() -> None:
            evicted = 0
            totals: RunReport | None = None
            source = self._report_source
            whole = source is not None and not self._has_forked and source.records()[1] == 0
            if source is not None and (whole or not self._file_is_readable()):
                records, evicted = source.records()
                totals = source.build()  # its totals may count more than the records kept
            elif self._file_is_readable():
                assert self.spans_file is not None
                records = list(records_from_file(self.spans_file, run=self.run_id))
            else:
                return
            written.append(
                write_html(
                    path, records, source=self._source_line(), evicted=evicted, report=totals
                )
            )

        bound = max(self._shutdown_timeout_s, HTML_AT_EXIT_MIN_S)
        try:
            if not run_bounded(work, bound, "html report") and not failed:
                replay = f"techrevati-runtime report {self.spans_file} --html {path}"
                _logger.warning(
                    "techrevati telemetry: the HTML report was not written to %s within %.0f s%s",
                    path,
                    bound,
                    f"; make it afterwards with: {replay}" if self.spans_file else "",
                )
                return
            if failed:
                raise failed[0]
            if written:
                stream = self._report_stream()
                stream.write(f"HTML report: {path} ({written[0] / 1024:.0f} KiB)\n")
                stream.flush()
        except Exception as error:  # telemetry never breaks the user's exit
            _logger.warning("techrevati telemetry: HTML report not written to %s: %s", path, error)

    def _at_exit(self) -> None:
        self.shutdown()


def _mark_forked(ref: weakref.ref[TelemetryHandle]) -> None:
    handle = ref()
    if handle is not None:
        handle._has_forked = True


def _bind_shutdown(pipeline: BoundedSpanProcessor, bound: float) -> Callable[[], object]:
    return lambda: pipeline.shutdown_within(bound)


__all__ = ["Destination", "TelemetryHandle"]


def replay_command() -> str:
    """The command that replays a spans file, as it can be typed in this shell.

    ``techrevati-runtime`` when that name on ``PATH`` is this environment's
    script; else the script's full path (a venv whose ``bin`` is not on ``PATH``,
    as under ``make demo``); else this Python with ``-m techrevati.runtime``.

    Example::

        replay_command()   # e.g. '/src/app/.venv/bin/techrevati-runtime'
    """
    name = "techrevati-runtime"
    script = Path(sys.executable).parent / name
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m techrevati.runtime"
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == script.resolve():
        return name
    return shlex.quote(str(script.absolute()))
