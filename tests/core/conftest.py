"""Fixtures for the telemetry-core tests: a real SDK pipeline kept in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import ModelPricing, register_pricing


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()


@pytest.fixture
def priced() -> None:
    """Two priced models (the root conftest restores the price table afterwards)."""
    register_pricing(
        "model-a", ModelPricing(3.0, 15.0, cache_write_per_million=3.75, cache_read_per_million=0.3)
    )
    register_pricing("model-b", ModelPricing(1.0, 2.0))
