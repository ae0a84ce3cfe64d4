"""Shared pytest fixtures for the techrevati.runtime test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from techrevati.runtime import usage_tracking


@pytest.fixture(autouse=True)
def isolate_pricing_state() -> Iterator[None]:
    """Snapshot and restore the process-wide pricing state around every test.

    ``PRICING_TABLE`` and ``_warned_unpriced_models`` are module globals that the
    library reads live, so they are restored *in place* (never rebound): code
    that captured the objects keeps seeing the same ones.
    """
    table = usage_tracking.PRICING_TABLE
    warned = usage_tracking._warned_unpriced_models
    saved_table = dict(table)
    saved_warned = set(warned)
    try:
        yield
    finally:
        table.clear()
        table.update(saved_table)
        warned.clear()
        warned.update(saved_warned)
