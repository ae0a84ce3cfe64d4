"""Each fleet scope's budget, window and current-window spend as gauges (docs/alerts.md).

The burn-rate alerts divide a scope's spend rate by budget / window, and the
time-to-exhaustion panel needs what the window has spent so far; both read these.
Real redis-server, real OTel SDK (in-memory reader).
"""

from __future__ import annotations

import gc

from otel_harness import Otel, make_otel
from techrevati.runtime import FleetLimits
from techrevati.runtime.telemetry.calls.metrics import instruments_for

from .redis_server import RedisServer

Points = dict[str, list[tuple[dict[str, str], float]]]


def _gauges(otel_points: Points, scope: str) -> dict[str, float]:
    return {
        name: value
        for name, points in otel_points.items()
        for attrs, value in points
        if attrs == {"techrevati.fleet.scope": scope}
    }


def _read(otel: Otel) -> Points:
    names = ("techrevati.fleet.budget", "techrevati.fleet.window", "techrevati.fleet.spent")
    return {n: [(a, p.value) for a, p in otel.metric_points(n)] for n in names}


def test_a_scope_reports_its_budget_window_and_spend_until_closed(
    redis_server: RedisServer,
) -> None:
    otel = make_otel()
    instruments_for(otel.meter_provider)  # the provider's instruments (and gauges) exist
    tenant = FleetLimits(redis_server.url, scope="gauge-t", budget_usd=2.0, window_s=3600)
    unbudgeted = FleetLimits(redis_server.url, scope="gauge-calls", max_calls=5)
    try:
        tenant.settle(tenant.reserve("m", 0.1), 0.5)
        tenant.settle(tenant.reserve("m", 0.1), 0.25)
        seen = _gauges(_read(otel), "gauge-t")
        assert seen == {
            "techrevati.fleet.budget": 2.0,
            "techrevati.fleet.window": 3600.0,
            "techrevati.fleet.spent": 0.75,
        }
        # No budget, no window: nothing to burn, nothing reported.
        assert _gauges(_read(otel), "gauge-calls") == {}
    finally:
        tenant.close()
        unbudgeted.close()
    assert _gauges(_read(otel), "gauge-t") == {}
    otel.shutdown()


def test_a_dropped_scope_is_no_longer_reported(redis_server: RedisServer) -> None:
    otel = make_otel()
    instruments_for(otel.meter_provider)
    FleetLimits(redis_server.url, scope="gauge-dropped", budget_usd=1.0, window_s=60)
    gc.collect()
    assert _gauges(_read(otel), "gauge-dropped") == {}
    otel.shutdown()


def test_a_store_that_does_not_answer_leaves_the_spend_out_not_the_reader(
    redis_server: RedisServer,
) -> None:
    otel = make_otel()
    instruments_for(otel.meter_provider)
    tenant = FleetLimits(
        redis_server.url, scope="gauge-down", budget_usd=1.0, window_s=60, timeout_s=0.2
    )
    redis_server.stop()
    try:
        seen = _gauges(_read(otel), "gauge-down")
        assert seen == {"techrevati.fleet.budget": 1.0, "techrevati.fleet.window": 60.0}
    finally:
        tenant.close()
    otel.shutdown()
