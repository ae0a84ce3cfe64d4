"""Fixtures the loop-detection tests share."""

from collections.abc import Iterator

import pytest

from otel_harness import Otel, make_otel


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.shutdown()
