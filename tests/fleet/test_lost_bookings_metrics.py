"""The two "bookings lost" counters count, against a real Redis.

``techrevati.fleet.evictions``: a window whose keys vanished mid-window (what an
evicting Redis does); ``techrevati.fleet.dropped``: a clean-up dropped because
its queue was full while the store was down. The live collector test charts the
same counters, but its workload's exports are too few to show a rate reliably,
so the counting itself is asserted here.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from techrevati.runtime import FleetLimits, ModelPricing, Orchestrator, UsageSnapshot
from techrevati.runtime.fleet import health, outbox
from techrevati.runtime.telemetry.calls import metrics as metrics_module
from techrevati.runtime.usage_tracking import register_pricing

from .redis_server import RedisServer

MODEL = "lost-bookings-model"


def _totals(reader: InMemoryMetricReader) -> dict[str, float]:
    totals: dict[str, float] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    totals[metric.name] = totals.get(metric.name, 0.0) + point.value
    return totals


def _calls(fleet: FleetLimits, n: int) -> None:
    with Orchestrator(role="w", phase="run", fleet=fleet).session() as session:
        for _ in range(n):
            session.run_turn(lambda: "ok", model=MODEL, usage=UsageSnapshot(5000, 1200))


def test_evicted_windows_and_dropped_cleanups_are_counted(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_pricing(MODEL, ModelPricing(input_per_million=3.0, output_per_million=15.0))
    reader = InMemoryMetricReader()
    built = metrics_module.instruments_for(MeterProvider(metric_readers=[reader]))

    def ours(_provider: Any) -> Any:
        return built

    monkeypatch.setattr(health, "instruments_for", ours)
    monkeypatch.setattr(outbox, "instruments_for", ours)
    monkeypatch.setattr(outbox, "CLEANUPS_MAX", 1)
    evict = FleetLimits(redis_server.url, scope="lost-evict", max_calls=1_000)
    down = FleetLimits(
        "redis://127.0.0.1:1/0", scope="lost-down", on_store_error="allow", timeout_s=0.2
    )
    keys = redis.Redis.from_url(redis_server.url)
    for _ in range(2):
        _calls(down, 2)
        _calls(evict, 1)
        keys.delete(*keys.keys("techrevati:fleet:{lost-evict}:*"))
        _calls(evict, 1)
    totals = _totals(reader)
    assert totals["techrevati.fleet.evictions"] == 2
    assert totals["techrevati.fleet.dropped"] >= 1
