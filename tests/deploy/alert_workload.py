"""The workload of tests/test_alerts_live.py, a process of its own (fleet metrics go to
the global MeterProvider, which only configure() in a fresh process may own).

* ``alert-hot`` ($10 per 30 days): a dime every half second (up to $5), a burn in the
  thousands;
* ``alert-calm`` ($1,000 per 30 days): one cent, a burn under 1 (must stay quiet);
* breaker ``alert-api`` opened by two failed turns (and held open: 600 s recovery);
* a one-span export queue that bursts of tool spans overflow (spans lost).

Then it stays alive, exporting metrics every second, until its stdin closes (the
test closes it once the alerts fired). It prints ``ready`` when the work is done.

    python tests/deploy/alert_workload.py redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import contextlib
import sys
import threading

from techrevati.runtime import (
    CircuitBreaker,
    CircuitOpenError,
    FleetLimits,
    ModelPricing,
    Orchestrator,
    UsageSnapshot,
    configure,
    register_pricing,
)

MODEL = "alert-model"
MONTH_S = 30 * 86_400
#: $0.10 a call at $1 per million input tokens.
DIME = UsageSnapshot(input_tokens=100_000, output_tokens=0)
CENT = UsageSnapshot(input_tokens=10_000, output_tokens=0)


def _fail() -> None:
    raise RuntimeError("upstream down")


def main(redis_url: str) -> None:
    handle = configure(
        service_name="techrevati-alerts-test",
        spans_file=False,
        report=False,
        metric_export_interval_s=1.0,
        # A one-span export queue: bursts of tool spans overflow it, so spans are lost
        # (techrevati.export.spans_lost) while the metrics still leave.
        max_queue_size=1,
    )
    register_pricing(MODEL, ModelPricing(input_per_million=1.0, output_per_million=1.0))
    hot = FleetLimits(redis_url, scope="alert-hot", budget_usd=10.0, window_s=MONTH_S)
    calm = FleetLimits(redis_url, scope="alert-calm", budget_usd=1000.0, window_s=MONTH_S)
    done = threading.Event()

    def spend() -> None:
        # Spread over many metric exports: rate() needs the counter to grow between
        # samples (a burst before a counter's first export is invisible to it). One
        # session per dime, so no per-session cap ends the spending early.
        for i in range(50):
            with Orchestrator(role="spender", fleet=hot).session() as s:
                s.run_turn(lambda: "ok", model=MODEL, usage=DIME)
                for j in range(5):
                    s.run_tool("burst", lambda: "x", arguments={"i": i, "j": j})
            if done.wait(0.5):
                return

    spender = threading.Thread(target=spend)
    spender.start()
    with Orchestrator(role="saver", fleet=calm).session() as s:
        s.run_turn(lambda: "ok", model=MODEL, usage=CENT)
    breaker = CircuitBreaker("alert-api", failure_threshold=2, recovery_timeout_seconds=600.0)
    # Two failures open it; the third turn is refused by it, which ends the session.
    caller = Orchestrator(role="caller", circuit_breaker=breaker)
    with contextlib.suppress(CircuitOpenError), caller.session() as s:
        for _ in range(3):
            with contextlib.suppress(RuntimeError):
                s.run_turn(_fail, model=MODEL)
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it; the gauges keep being exported meanwhile
    done.set()
    spender.join()
    handle.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
