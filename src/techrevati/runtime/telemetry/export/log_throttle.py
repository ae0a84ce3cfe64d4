"""The OTLP exporters' failure lines, at most once per message per window, not per batch.

A collector that is down makes the SDK's exporters log every failed batch and
every retry ("Transient error ... retrying", "Failed to export ..."): some
2,000 lines an hour at the default batch rate, burying the one line that says
what is wrong. Each distinct message template is let through once per
``window_s``; the next one after a quiet window says how many were held back.
Nothing else about the exporters changes: they still retry and drop as before,
and the package's own counters still count every span lost.
"""

from __future__ import annotations

import logging
import threading
import time

#: The SDK loggers whose per-batch failure lines are throttled.
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",  # HTTP/protobuf: retries and failures
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",  # gRPC: retries and failures
)
WINDOW_S = 600.0


class OncePerWindow(logging.Filter):
    """Lets each message template through once per ``window_s`` seconds.

    Example::

        logging.getLogger("noisy").addFilter(OncePerWindow(600.0))
    """

    def __init__(self, window_s: float = WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._lock = threading.Lock()
        #: template -> (when it was last let through, how many were held back since)
        self._seen: dict[object, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(record.msg)
            if last is not None and now - last[0] < self.window_s:
                self._seen[record.msg] = (last[0], last[1] + 1)
                return False
            held = last[1] if last is not None else 0
            if len(self._seen) >= 256:
                self._seen.clear()  # bounded: templates, not values, so this is rare
            self._seen[record.msg] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.window_s:g} s)"
        return True


_throttle = OncePerWindow()


def throttle_exporter_failures() -> None:
    """Install the throttle on the OTLP exporters' loggers (idempotent)."""
    for name in EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        if _throttle not in logger.filters:
            logger.addFilter(_throttle)


__all__ = ["EXPORTER_LOGGERS", "OncePerWindow", "throttle_exporter_failures"]
