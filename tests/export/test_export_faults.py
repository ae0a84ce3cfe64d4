"""A collector that is down, failing (503) or hanging must never hurt the agent.

Three promises, each measured: span creation on the caller's thread keeps its
latency (the export never runs there), memory stays bounded (a queue cap, drops
counted and logged once), and shutdown returns within its bound.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from otlp_receiver import HttpReceiver, closed_port

from techrevati.runtime.telemetry.setup.configure import TelemetryHandle, configure

FAULTS = ["down", "503", "hang"]


@pytest.fixture(autouse=True)
def fast_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Export every 50 ms instead of every 5 s, so a short test reaches the exporter.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


@contextmanager
def collector(fault: str) -> Iterator[tuple[str, HttpReceiver | None]]:
    """An endpoint that is healthy (``"ok"``) or has the given fault."""
    if fault == "down":
        yield f"http://127.0.0.1:{closed_port()}", None
        return
    with HttpReceiver(mode=fault) as receiver:
        yield receiver.endpoint, receiver


def _spans(handle: TelemetryHandle, sessions: int) -> float:
    """Make ``sessions`` session spans with one child each; seconds spent on this thread."""
    assert handle.tracer_provider is not None
    tracer = handle.tracer_provider.get_tracer("fault-test")
    started = time.perf_counter()
    for index in range(sessions):
        with (
            tracer.start_as_current_span("invoke_agent worker", attributes={"i": index}),
            tracer.start_as_current_span("chat m", attributes={"gen_ai.usage.input_tokens": 5}),
        ):
            pass
    return time.perf_counter() - started


def _configure(endpoint: str, **overrides: object) -> TelemetryHandle:
    options: dict[str, object] = {
        "endpoint": endpoint,
        "set_global": False,
        "metrics": False,
        "timeout": 1.0,
        "shutdown_timeout": 1.5,
    }
    options.update(overrides)
    return configure(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", FAULTS)
def test_caller_latency_unchanged_and_export_never_on_caller_thread(
    fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_threads: set[int] = set()
    real_export = OTLPSpanExporter.export

    def spying_export(self: OTLPSpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        export_threads.add(threading.get_ident())
        return real_export(self, spans)

    monkeypatch.setattr(OTLPSpanExporter, "export", spying_export)

    # Warm both paths first so the comparison is not about first-call costs.
    timings: dict[str, float] = {}
    for label, mode in (("healthy", "ok"), ("faulty", fault)):
        with collector(mode) as (endpoint, receiver):
            handle = _configure(endpoint)
            try:
                _spans(handle, 50)
                time.sleep(0.2)  # an export to the faulty collector is now in flight
                timings[label] = min(_spans(handle, 200) for _ in range(3))
                if receiver is not None:
                    receiver.received.wait_for(lambda r: r.attempts >= 1, timeout=5)
            finally:
                assert handle.shutdown(timeout_s=1.5) or mode == "hang"
            if label == "faulty":
                stats = handle.stats()["otlp"]
                assert stats.exported == 0
                assert stats.failed + stats.abandoned > 0

    assert export_threads, "the exporter was never called"
    assert threading.get_ident() not in export_threads
    # Same order of magnitude; the bound is loose because CI machines are noisy.
    assert timings["faulty"] < timings["healthy"] * 4 + 0.05, timings


@pytest.mark.parametrize("fault", FAULTS)
def test_queue_is_capped_and_drops_are_counted_and_logged_once(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="techrevati.runtime.telemetry.export.pipeline")
    with collector(fault) as (endpoint, _receiver):
        handle = _configure(endpoint, max_queue_size=50, timeout=2.0)
        try:
            _spans(handle, 250)  # 500 spans
            stats = handle.stats()["otlp"]
        finally:
            handle.shutdown(timeout_s=2)
    assert stats.accepted + stats.dropped == 500
    assert stats.pending <= 50
    assert stats.dropped >= 400
    drops = [r for r in caplog.records if "queue of 50 spans is full" in r.getMessage()]
    assert len(drops) == 1


def test_memory_stays_bounded_while_the_collector_hangs() -> None:
    with collector("hang") as (endpoint, _receiver):
        handle = _configure(endpoint, max_queue_size=100, timeout=5.0)
        try:
            _spans(handle, 100)  # fill the queue and warm caches before measuring
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            _spans(handle, 2500)  # 5000 spans: ~10 MB if they were all kept
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            stats = handle.stats()["otlp"]
        finally:
            handle.shutdown(timeout_s=1.5)
    assert stats.pending <= 100
    assert stats.dropped >= 5000
    assert after - before < 1_000_000, f"grew by {after - before} bytes"


@pytest.mark.parametrize("fault", FAULTS)
def test_shutdown_returns_within_its_bound(fault: str) -> None:
    with collector(fault) as (endpoint, receiver):
        # The SDK defaults here (10 s timeout, 30 s shutdown wait) would take ~30 s.
        handle = _configure(endpoint, timeout=10.0, shutdown_timeout=1.5)
        _spans(handle, 600)  # more than two batches queued
        if receiver is not None:  # an export is in flight (not merely queued) at shutdown
            receiver.received.wait_for(lambda r: r.attempts >= 1, timeout=10)
        else:
            time.sleep(0.2)
        started = time.monotonic()
        finished = handle.shutdown()
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"shutdown took {elapsed:.2f} s"
    # Refused or failing requests end once retries are cut short; only a request
    # the collector never answers is left behind (on a daemon thread).
    assert finished is (fault != "hang")
    stats = handle.stats()["otlp"]
    assert stats.exported == 0
    assert stats.accepted == 1200


def test_process_exit_is_bounded_with_default_settings_and_a_hanging_collector() -> None:
    """The whole path a user gets: configure() with defaults, no shutdown call, exit."""
    script = textwrap.dedent(
        """
        import atexit, sys, time
        marks = {}
        # Registered first, so it runs last: after configure()'s own exit hook.
        atexit.register(lambda: print(f"EXIT_HOOKS {time.monotonic() - marks['end']:.3f}"))
        from opentelemetry import trace
        from techrevati.runtime.telemetry.setup.configure import configure
        handle = configure(metrics=True)
        assert configure() is handle  # idempotent
        tracer = trace.get_tracer("exit-test")
        for i in range(1500):
            with tracer.start_as_current_span("invoke_agent a"):
                with tracer.start_as_current_span("chat m"):
                    pass
        time.sleep(0.3)
        marks["end"] = time.monotonic()
        """
    )
    with collector("hang") as (endpoint, receiver):
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "PYTHONUNBUFFERED": "1"}
        env.pop("OTEL_BSP_SCHEDULE_DELAY", None)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        wall = time.monotonic() - started
        assert receiver is not None and receiver.received.attempts >= 1
    assert done.returncode == 0, done.stderr
    exit_hooks = float(done.stdout.split("EXIT_HOOKS ")[1].split()[0])
    # DEFAULT_SHUTDOWN_TIMEOUT_S is 5 s; allow scheduling slack, not the SDK's 30 s.
    assert exit_hooks < 6.5, done.stdout
    assert wall < 15, wall
    # Nothing reached the hanging collector: every span is accounted for in one exit line.
    lines = [line for line in done.stderr.splitlines() if "spans were dropped" in line]
    assert len(lines) == 1, done.stderr
    match = re.fullmatch(
        r"techrevati telemetry: (\d+) spans were dropped \(otlp: (\d+) dropped on a full "
        r"queue, (\d+) still queued at shutdown(?:, (\d+) refused or failed in export)?\)",
        lines[0],
    )
    assert match is not None, lines[0]
    total, full, queued, failed = (int(group or 0) for group in match.groups())
    assert total == full + queued + failed == 3000
    assert queued + failed == 2048  # the queue's cap: what it held when the collector hung


def test_a_forked_child_starts_with_an_empty_queue() -> None:
    with collector("hang") as (endpoint, _receiver):
        handle = _configure(endpoint, max_queue_size=10)
        try:
            _spans(handle, 10)  # the parent's queue is full
            assert handle.stats()["otlp"].pending == 10
            pid = os.fork()
            if pid == 0:  # the child: its spans must be queued, not dropped
                before = handle.stats()["otlp"]
                _spans(handle, 1)
                after = handle.stats()["otlp"]
                ok = after.pending == 2 and after.dropped == before.dropped
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
        finally:
            handle.shutdown(timeout_s=1.5)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(("sessions", "said"), [(0, "1 span was"), (1, "3 spans were")])
def test_the_lost_spans_line_counts_one_span_in_the_singular(
    sessions: int, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A probe: one session span left queued for a collector that never answers was
    # said as "1 spans were dropped".
    caplog.set_level(logging.WARNING, logger="techrevati.runtime.telemetry.setup.handle")
    with collector("hang") as (endpoint, _receiver):
        handle = _configure(endpoint, shutdown_timeout=0.5)
        _spans(handle, sessions)
        assert handle.tracer_provider is not None
        with handle.tracer_provider.get_tracer("fault-test").start_as_current_span("only"):
            pass
        handle.shutdown()
    lost = 2 * sessions + 1
    [line] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert line == f"techrevati telemetry: {said} dropped (otlp: {lost} still queued at shutdown)"
