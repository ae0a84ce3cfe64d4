"""Shared sessions: each test gets its own real redis-server; the store is uninstalled after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fleet.redis_server import RedisServer
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry.limits import remote


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisSessionStore]:
    installed = RedisSessionStore(redis_server.url)
    remote.install_store(installed)
    try:
        yield installed
    finally:
        remote.install_store(None)


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter
