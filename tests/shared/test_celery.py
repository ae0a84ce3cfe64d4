"""A shared session's limits hold in Celery tasks it queues (a real worker, Redis broker)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fleet.redis_server import RedisServer
from techrevati.runtime import agent_session
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry import semconv as sc

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"


@pytest.fixture
def celery_app(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("TECHREVATI_TEST_REDIS_URL", redis_server.url)
    monkeypatch.delenv("TECHREVATI_TEST_CELERY_WORKER", raising=False)
    sys.modules.pop("shared.celery_app", None)
    module = importlib.import_module("shared.celery_app")
    env = {
        **os.environ,
        "TECHREVATI_TEST_CELERY_WORKER": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "shared.celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        cwd=TESTS,
        env=env,
    )
    try:
        # The worker is ready when it answers a ping.
        deadline = time.monotonic() + 90
        while not module.app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start (exit {worker.poll()})")
        yield module
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        sys.modules.pop("shared.celery_app", None)


@pytest.fixture
def celery_tracing(spans: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[None]:
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=spans[0])
    try:
        yield
    finally:
        instrumentor.uninstrument()


def test_celery_tasks_count_against_the_producers_shared_session(
    store: RedisSessionStore,
    celery_app: ModuleType,
    celery_tracing: None,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    with agent_session("planner", max_iterations=10, shared=True, tracer_provider=provider):
        pending = [celery_app.research.delay(10, True) for _ in range(3)]
        outcomes: list[dict[str, Any]] = [result.get(timeout=120) for result in pending]
    assert sum(o["ran"] for o in outcomes) == 10
    assert sum(o["refused"] for o in outcomes) == 20
    parent = next(s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent"))
    assert parent.attributes[sc.COST_TREE_USD] == pytest.approx(10.0)
    assert parent.attributes[sc.SESSION_REMOTE_CHILDREN] == 3
    trace_id = format(parent.context.trace_id, "032x")
    assert {o["trace_id"] for o in outcomes} == {trace_id}
