"""The OTLP exporters' failure lines are throttled per message, not dropped for good."""

from __future__ import annotations

import logging

import pytest

from techrevati.runtime.telemetry.export import log_throttle
from techrevati.runtime.telemetry.export.log_throttle import OncePerWindow


def test_a_collector_that_is_down_is_said_once_per_window(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(log_throttle.time, "monotonic", lambda: clock[0])
    logger = logging.getLogger("test.exporter")
    throttle = OncePerWindow(600.0)
    logger.addFilter(throttle)
    try:
        with caplog.at_level(logging.WARNING, logger="test.exporter"):
            for _ in range(40):  # one line per failed batch, as the SDK logs them
                logger.warning("Failed to export span batch code: %s", 503)
                clock[0] += 5.0  # 200 s in all: inside one window
            logger.warning("Exporter already shutdown, ignoring batch")  # another message
            clock[0] += 600.0
            logger.warning("Failed to export span batch code: %s", 503)
    finally:
        logger.removeFilter(throttle)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.exporter"]
    assert lines == [
        "Failed to export span batch code: 503",
        "Exporter already shutdown, ignoring batch",
        "Failed to export span batch code: 503 (39 more like this in the last 600 s)",
    ]


def test_configure_installs_it_on_the_sdk_exporters_loggers() -> None:
    log_throttle.throttle_exporter_failures()
    log_throttle.throttle_exporter_failures()  # idempotent
    for name in log_throttle.EXPORTER_LOGGERS:
        filters = logging.getLogger(name).filters
        assert filters.count(log_throttle._throttle) == 1
