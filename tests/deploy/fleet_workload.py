"""A fleet workload, run as a process of its own by the collector test.

The fleet level records ``techrevati.fleet.*`` on the global MeterProvider, and
only ``configure()`` in a fresh process may own that, so this runs as a
subprocess with the standard ``OTEL_EXPORTER_OTLP_*`` variables pointing at the
collector. Three scopes, each in two passes with metric exports between them
(so every series grows inside the run and ``rate()`` sees it):

* ``fleet-budget`` ($0.05 a day): one call, then calls until the fleet budget refuses;
* ``fleet-calls`` (2 calls): one call, then calls until the call cap refuses;
* ``fleet-burn`` ($10 a day): the same calls, far from its budget (a time to
  exhaustion above zero);
* ``fleet-down`` (a Redis port nobody listens on, ``on_store_error="allow"``):
  two calls per pass, each counted as a store error; the clean-up queue is cut
  to one entry, so each pass drops one clean-up (``techrevati.fleet.dropped``);
* ``fleet-evict``: one call, its keys deleted mid-window as an evicting Redis
  would, one more call, which counts ``techrevati.fleet.evictions``;
* a shared session (``shared=True``, ``configure(session_store=...)``) with one call
  of its own and one remote session opened under it, as another process would open
  it (a thread carrying only the W3C baggage), so the session-tree names reach Tempo.

It prints, as JSON, what the process itself observed: refusals it caught by
scope and kind, and each reachable scope's spend from ``FleetLimits.usage()``.

    python tests/deploy/fleet_workload.py redis://127.0.0.1:6379/0 redis://127.0.0.1:1/0
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import redis
from opentelemetry import context, propagate

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    configure,
    register_pricing,
)
from techrevati.runtime.fleet import outbox
from techrevati.runtime.pricing import price_call
from techrevati.runtime.telemetry import semconv

SERVICE = "techrevati-fleet-test"
MODEL = "fleet-model"
#: $0.033 a call at the price below.
USAGE = UsageSnapshot(input_tokens=5000, output_tokens=1200)


def _calls(fleet: FleetLimits, n: int, refusals: dict[str, int]) -> None:
    orch = Orchestrator(role="fleet-worker", phase="run", fleet=fleet)
    with orch.session() as session:
        for _ in range(n):
            try:
                session.run_turn(lambda: "ok", model=MODEL, usage=USAGE)
            except BudgetExceededError as err:
                if err.site is not None and err.site.ran:
                    continue  # the call that crossed the budget: it ran, and is booked
                refusals[f"{err.scope}/{semconv.LIMIT_FLEET_BUDGET}"] += 1
                return
            except MaxIterationsExceededError as err:
                refusals[f"{err.scope}/{semconv.LIMIT_FLEET_CALLS}"] += 1
                return


def _shared_tree() -> None:
    def child(carried: context.Context) -> None:
        token = context.attach(carried)
        try:
            with Orchestrator(role="researcher", phase="run").session() as remote:
                remote.run_turn(lambda: "ok", model=MODEL, usage=USAGE)
        finally:
            context.detach(token)

    with Orchestrator(role="planner", phase="run", shared=True).session() as session:
        session.run_turn(lambda: "ok", model=MODEL, usage=USAGE)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        # Only the baggage, as a process that extracted it would see it (its own span aside).
        carried = propagate.extract({k: v for k, v in carrier.items() if k != "traceparent"})
        worker = threading.Thread(target=child, args=(carried,))
        worker.start()
        worker.join(60)


def main(redis_url: str, closed_url: str) -> dict[str, Any]:
    handle = configure(
        service_name=SERVICE,
        spans_file=False,
        report=False,
        metric_export_interval_s=1.0,
        session_store=redis_url,
    )
    register_pricing(MODEL, ModelPricing(input_per_million=3.0, output_per_million=15.0))
    # A window (a day) so the scope reports its budget, window and spend as gauges.
    budget = FleetLimits(redis_url, scope="fleet-budget", budget_usd=0.05, window_s=86_400)
    calls = FleetLimits(redis_url, scope="fleet-calls", max_calls=2)
    # Spends a little of a large daily budget: a time to exhaustion above zero.
    burn = FleetLimits(redis_url, scope="fleet-burn", budget_usd=10.0, window_s=86_400)
    down = FleetLimits(closed_url, scope="fleet-down", on_store_error="allow", timeout_s=0.2)
    refusals = {
        "fleet-budget/" + semconv.LIMIT_FLEET_BUDGET: 0,
        "fleet-calls/" + semconv.LIMIT_FLEET_CALLS: 0,
    }
    # Both "bookings lost" series, for real: keys deleted mid-window (what an
    # evicting Redis does) and a clean-up queue bound shrunk to one entry, so the
    # second refused admission while Redis is down drops the first one's clean-up.
    evict = FleetLimits(redis_url, scope="fleet-evict", max_calls=1_000)
    outbox.CLEANUPS_MAX = 1
    keys = redis.Redis.from_url(redis_url)
    calls_while_down = 0
    for pass_calls in (1, 5):
        _calls(budget, pass_calls, refusals)
        _calls(calls, pass_calls, refusals)
        _calls(down, 2, refusals)
        _calls(burn, pass_calls, refusals)
        calls_while_down += 2
        _calls(evict, 1, refusals)
        keys.delete(*keys.keys("techrevati:fleet:{fleet-evict}:*"))
        _calls(evict, 1, refusals)
        time.sleep(2.5)  # a few metric exports before the next pass
    _shared_tree()
    spent = {fleet.scope: fleet.usage().spent_usd for fleet in (budget, calls, burn)}
    # The evicted scope's store forgot what it had spent; the four calls it settled
    # were booked (and counted by techrevati.fleet.cost) all the same.
    spent[evict.scope] = 4 * price_call(MODEL, USAGE).cost
    handle.shutdown()
    return {
        "refusals": refusals,
        "spent_usd": spent,
        "calls_while_down": calls_while_down,
        # Two calls booked in the shared session's scope: its own and its remote child's.
        "shared_usd": 2 * price_call(MODEL, USAGE).cost,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
