"""OTLP JSON lines: spans and metrics written to a local file, one request per line.

Each line is one ``ExportTraceServiceRequest`` (or ``ExportMetricsServiceRequest``)
in the OTLP/JSON encoding: the proto3 JSON mapping with lowerCamelCase keys,
enums as integers and trace/span ids as hex. That is what the collector's
``file`` exporter writes and its ``otlpjsonfile`` receiver reads, so a file made
here can be replayed into a collector, loaded by other OTLP tooling, or turned
into the terminal report with ``techrevati-runtime report PATH``.

Example::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter("spans.jsonl")))
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .forking import after_fork_in_child

_logger = logging.getLogger(__name__)

# OTLP/JSON departs from the plain proto3 mapping in one way: these bytes fields
# are hex, not base64 (they appear on spans, links and metric exemplars).
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _ids_to_hex(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                base64.b64decode(value).hex()
                if key in _ID_KEYS and isinstance(value, str)
                else _ids_to_hex(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_ids_to_hex(item) for item in node]
    return node


def otlp_json(message: Message) -> str:
    """One OTLP request message as a single line of OTLP/JSON (no trailing newline)."""
    as_dict = MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_ids_to_hex(as_dict), separators=(",", ":"), ensure_ascii=False)


def spans_to_json_line(spans: Sequence[ReadableSpan]) -> str:
    """Encode finished spans as one ``ExportTraceServiceRequest`` JSON line."""
    return otlp_json(encode_spans(spans))


def read_json_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each JSON object of an OTLP JSON lines file, skipping blank lines.

    A line that is not valid JSON (a run killed mid-write leaves a torn last line)
    is logged and skipped rather than failing the whole replay.
    """
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                _logger.warning("%s:%d is not JSON; skipped", path, number)
                continue
            if isinstance(value, dict):
                yield value


#: A batch whose line would be longer is written as several lines, so that the
#: report (which skips lines over 16 MiB by default) can always read it back.
MAX_LINE_CHARS = 4 * 1024 * 1024

#: Files hold prompts and tool results when content capture is on: owner only.
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class OutputFileError(OSError):
    """The telemetry file cannot be written (a symbolic link, a full disk, ...)."""


def open_for_append(path: Path) -> int:
    """Open ``path`` to append, owner-only, never through a symbolic link.

    A directory that does not exist yet is created ``0700``; a new file is
    ``0600``, and an existing one of ours that is wider is narrowed to it. Every
    run and every forked worker appends (``O_APPEND``, so one ``write`` lands
    whole); nothing is ever truncated. Raises :class:`OutputFileError` with a
    message naming the path.
    """
    if path.is_symlink():
        raise OutputFileError(
            f"{path} is a symbolic link; telemetry refuses to write through it "
            "(remove it or choose another file)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    except (FileExistsError, NotADirectoryError):
        # mkdir says "File exists" when a file stands where a folder must be.
        raise OutputFileError(
            f"cannot open {path}: {_not_a_folder(path.parent)} is a file, not a directory"
        ) from None
    except OSError as error:
        raise OutputFileError(f"cannot open {path}: {error.strerror or error}") from None
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP:  # planted between the check and the open
            raise OutputFileError(
                f"{path} is a symbolic link; telemetry refuses to write through it"
            ) from None
        raise OutputFileError(f"cannot open {path}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
    except OSError:
        pass  # narrowing is best effort; the file is still ours to append to
    return fd


def _not_a_folder(folder: Path) -> Path:
    """The first of ``folder`` and its parents that exists as something else than a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate if not candidate.is_dir() else folder
    return folder


class _LineWriter:
    """Appends whole lines to a file opened on first use, from any thread or process.

    The first failure is logged as one line (no traceback); later ones are only
    counted, so a full disk cannot flood the log. :attr:`error` keeps the first
    reason, so nobody is told to replay a file that was not written.
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.lines_written = 0
        self.lines_lost = 0
        #: Why writing failed, the first time it did (None while all is well).
        self.error: str | None = None
        #: Log the first failure when it happens (off at shutdown: the exit line says it).
        self.log_failures = True
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # The descriptor is shared with the parent and opened O_APPEND, so both
        # can keep appending; only a lock the parent held at the fork is renewed.
        self._lock = threading.Lock()
        self.lines_written = 0
        self.lines_lost = 0

    def write(self, line: str) -> bool:
        data = (line + "\n").encode("utf-8", "replace")
        with self._lock:
            if self._closed:
                return False
            try:
                if self._fd is None:
                    self._fd = open_for_append(self.path)
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as error:
                self.lines_lost += 1
                reason = str(error) if isinstance(error, OutputFileError) else error.strerror
                if self.error is None:
                    self.error = reason or repr(error)
                    if self.log_failures:
                        _logger.error(
                            "techrevati telemetry: %s not written: %s", self.what, self.error
                        )
                return False
            self.lines_written += 1
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


class _FileState:
    """What a file exporter tells the handle about its file."""

    _writer: _LineWriter

    @property
    def path(self) -> Path:
        """The file written to."""
        return self._writer.path

    @property
    def error(self) -> str | None:
        """Why the file could not be written, if it could not (the first reason)."""
        return self._writer.error

    @property
    def lines_written(self) -> int:
        """Lines (batches) this process appended."""
        return self._writer.lines_written

    def defer_failure_log(self) -> None:
        """Stop logging failures as they happen: the caller reports them itself."""
        self._writer.log_failures = False


class JsonLinesSpanExporter(_FileState, SpanExporter):
    """A span exporter that appends each batch to ``path`` as one OTLP JSON line.

    The file is opened at the first export (a run that records nothing leaves
    no file behind) and only ever appended to: earlier runs stay, told apart by
    their resource (``techrevati.run.id``), and forked workers append to the
    same file. See :func:`open_for_append` for permissions and symbolic links.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._writer = _LineWriter(path, "spans")
        self._encode_failed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        written = [self._write(line) for line in self._lines(spans)]  # every line, always
        ok = all(written)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _write(self, line: str | None) -> bool:
        return line is not None and self._writer.write(line)

    def _lines(self, spans: Sequence[ReadableSpan]) -> Iterator[str | None]:
        """One line per batch; halves when a line would pass MAX_LINE_CHARS (so the
        report can read it back) or when one span cannot be encoded (so only that
        span is lost; None stands for it)."""
        try:
            line = spans_to_json_line(spans)
        except Exception:  # an odd attribute must not kill the export thread
            if len(spans) == 1:
                if not self._encode_failed:
                    self._encode_failed = True
                    _logger.exception("could not encode a span as OTLP JSON; it is left out")
                yield None
                return
            line = None
        if line is not None and (len(line) <= MAX_LINE_CHARS or len(spans) == 1):
            yield line
            return
        middle = len(spans) // 2
        yield from self._lines(spans[:middle])
        yield from self._lines(spans[middle:])

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonLinesMetricExporter(_FileState, MetricExporter):
    """A metric exporter that appends each collection as one OTLP JSON line.

    Cumulative temporality (the SDK default) is kept, so the last line of the
    file holds the run's totals.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._writer = _LineWriter(path, "metrics")

    def export(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,
        **kwargs: Any,
    ) -> MetricExportResult:
        if not metrics_data.resource_metrics:
            return MetricExportResult.SUCCESS
        try:
            line = otlp_json(encode_metrics(metrics_data))
        except Exception:
            _logger.exception("could not encode metrics as OTLP JSON")
            return MetricExportResult.FAILURE
        ok = self._writer.write(line)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._writer.close()


__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "MAX_LINE_CHARS",
    "JsonLinesMetricExporter",
    "JsonLinesSpanExporter",
    "OutputFileError",
    "open_for_append",
    "otlp_json",
    "read_json_lines",
    "spans_to_json_line",
]
