"""Fixtures for the decorator tests: a real SDK pipeline kept in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import ModelPricing, register_pricing
from techrevati.runtime.telemetry.calls.content import set_capture_content


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


@pytest.fixture(autouse=True)
def priced() -> None:
    """Prices with distinct cache rates (the root conftest restores the table)."""
    register_pricing(
        "model-a", ModelPricing(3.0, 15.0, cache_write_per_million=3.75, cache_read_per_million=0.3)
    )
    register_pricing("model-b", ModelPricing(1.0, 2.0))


@pytest.fixture
def capture() -> Iterator[None]:
    set_capture_content(True)
    yield
    set_capture_content(None)


@pytest.fixture(autouse=True)
def no_capture_leak() -> Iterator[None]:
    yield
    set_capture_content(None)
