"""Worker processes for the fleet tests (started with multiprocessing "spawn").

Each worker builds its own ``FleetLimits`` from the URL, as a separate
uvicorn/Celery worker would, and reports what it saw through a queue.
"""

from __future__ import annotations

import os
import time
from typing import Any

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    FleetUnavailableError,
    MaxIterationsExceededError,
)


def _metric_totals(reader: Any) -> dict[str, float]:
    """Sum of every fleet metric point per (metric name, limit kind)."""
    totals: dict[str, float] = {}
    data = reader.get_metrics_data()
    if data is None:
        return totals
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if not metric.name.startswith("techrevati.fleet."):
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    key = metric.name + "|" + str(attrs.get("techrevati.limit.kind", ""))
                    key += "|" + str(attrs.get("techrevati.fleet.scope"))
                    totals[key] = totals.get(key, 0.0) + point.value
    return totals


def _metrics() -> Any:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def attempts_worker(
    url: str,
    options: dict[str, Any],
    attempts: int,
    expected_usd: float,
    cost_usd: float,
    barrier: Any,
    results: Any,
) -> None:
    """``attempts`` model calls: admit, run a short body, settle at ``cost_usd``."""
    reader = _metrics()
    fleet = FleetLimits(url, **options)
    ran = refused_calls = refused_budget = 0
    barrier.wait()
    for _ in range(attempts):
        try:
            hold = fleet.reserve("gpt-4o-mini", expected_usd)
        except MaxIterationsExceededError as err:
            assert err.scope == fleet.scope
            refused_calls += 1
            continue
        except BudgetExceededError as err:
            assert err.scope == fleet.scope
            refused_budget += 1
            continue
        ran += 1  # the body runs only after admission
        time.sleep(0.002)
        fleet.settle(hold, cost_usd)
    results.put(
        {
            "pid": os.getpid(),
            "ran": ran,
            "refused_calls": refused_calls,
            "refused_budget": refused_budget,
            "metrics": _metric_totals(reader),
        }
    )


def crashing_worker(url: str, options: dict[str, Any], expected_usd: float, results: Any) -> None:
    """Reserve, report the hold, then hang mid-call until killed with SIGKILL."""
    fleet = FleetLimits(url, **options)
    hold = fleet.reserve("gpt-4o-mini", expected_usd)
    results.put(hold)
    while True:
        time.sleep(1)


def steady_worker(
    url: str,
    options: dict[str, Any],
    expected_usd: float,
    go: Any,
    stop: Any,
    results: Any,
) -> None:
    """Call until told to stop; report the lease deadline of every admitted call."""
    fleet = FleetLimits(url, **options)
    admitted: list[float] = []
    refused = 0
    go.wait()
    while not stop.is_set():
        try:
            hold = fleet.reserve("gpt-4o-mini", expected_usd)
        except BudgetExceededError:
            refused += 1
            time.sleep(0.02)
            continue
        admitted.append(hold.lease_until)
        fleet.settle(hold, expected_usd)
    results.put({"admitted": admitted, "refused": refused})


def outage_worker(
    url: str,
    options: dict[str, Any],
    phase: Any,
    stop: Any,
    results: Any,
) -> None:
    """Call in a loop while the test stops and restarts Redis.

    Every attempt is reported with the phase it started and ended in (0 before
    the outage, 1 Redis down, 2 after the restart), its outcome and duration.
    """
    reader = _metrics()
    fleet = FleetLimits(url, **options)
    while not stop.is_set():
        before = phase.value
        started = time.monotonic()
        try:
            hold = fleet.reserve("gpt-4o-mini", 0.01)
        except FleetUnavailableError as err:
            assert err.scope == fleet.scope
            outcome = "unavailable"
        else:
            outcome = "backed" if hold.backed else "unbacked"
            fleet.settle(hold, 0.01)
        elapsed = time.monotonic() - started
        results.put((os.getpid(), before, phase.value, outcome, elapsed))
        time.sleep(0.01)
    errors = _metric_totals(reader).get(f"techrevati.fleet.store_errors||{fleet.scope}", 0.0)
    results.put((os.getpid(), -1, -1, "done", float(fleet.pending_settlements), errors))


#: What one turn of ``orchestrator_worker`` costs: 1000 in + 100 out at $2 / $8 per M.
TURN_COST = (1000 * 2.0 + 100 * 8.0) / 1e6


def orchestrator_worker(
    url: str, options: dict[str, Any], attempts: int, barrier: Any, results: Any
) -> None:
    """``attempts`` sessions of one turn each, through Orchestrator(fleet=...)."""
    from techrevati.runtime import ModelPricing, Orchestrator, UsageSnapshot, register_pricing

    register_pricing("gpt-test", ModelPricing(2.0, 8.0))
    fleet = FleetLimits(url, **options)
    orch = Orchestrator(role="worker", phase="p", fleet=fleet)
    ran = refused = 0
    scopes: set[str] = set()
    usage = UsageSnapshot(input_tokens=1000, output_tokens=100)

    def body() -> str:
        nonlocal ran
        ran += 1
        time.sleep(0.001)
        return "ok"

    barrier.wait()
    for _ in range(attempts):
        try:
            with orch.session() as session:
                session.run_turn(body, model="gpt-test", usage=usage)
        except MaxIterationsExceededError as err:
            refused += 1
            scopes.add(str(err.scope))
    results.put({"ran": ran, "refused": refused, "scopes": sorted(scopes)})
