"""A shared session's limits hold in an HTTP service it calls (uvicorn + ASGI instrumentation,
and an instrumented httpx client carrying W3C trace context and baggage)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fleet.redis_server import RedisServer, free_port
from techrevati.runtime import agent_session
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry import semconv as sc

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"


@pytest.fixture
def service(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TECHREVATI_TEST_REDIS_URL": redis_server.url,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "shared.service:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=TESTS,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"uvicorn did not start (exit {proc.poll()})")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def research(client: httpx.Client, base: str, attempts: int, session: bool) -> dict[str, Any]:
    reply = client.post(f"{base}/research?attempts={attempts}&session={int(session)}")
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    return result


@pytest.mark.parametrize("own_session", [True, False], ids=["service session", "bare calls"])
def test_an_http_service_counts_against_the_callers_shared_session(
    store: RedisSessionStore,
    service: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    own_session: bool,
) -> None:
    provider, exporter = spans
    with httpx.Client(timeout=60) as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
        with agent_session("planner", max_iterations=10, shared=True, tracer_provider=provider):
            outcomes = [research(client, service, 10, own_session) for _ in range(3)]
    assert [o["ran"] for o in outcomes] == [10, 0, 0]
    assert sum(o["refused"] for o in outcomes) == 20
    parent = next(s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent"))
    assert parent.attributes[sc.COST_TREE_USD] == pytest.approx(10.0)
    if own_session:
        assert parent.attributes[sc.SESSION_REMOTE_CHILDREN] == 3
        trace_id = format(parent.context.trace_id, "032x")
        assert {o["trace_id"] for o in outcomes} == {trace_id}
        assert {o["attributes"][sc.SESSION_REMOTE_PARENT_ROLE] for o in outcomes} == {"planner"}


def test_a_request_without_the_baggage_is_not_charged(
    store: RedisSessionStore, service: str
) -> None:
    # Outside any shared session nothing travels: the service runs on its own limits.
    with httpx.Client(timeout=60) as client:
        outcome = research(client, service, 12, True)
    assert outcome["ran"] == 12
    assert sc.SESSION_REMOTE_PARENT_ROLE not in outcome["attributes"]
