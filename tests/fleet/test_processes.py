"""Fleet limits across real processes (multiprocessing "spawn") and one real redis-server."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from techrevati.runtime import FleetLimits

from . import workers
from .redis_server import RedisServer

CTX = multiprocessing.get_context("spawn")
NANO = 1_000_000_000


def start(target: Callable[..., None], *args: Any) -> Any:
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def collect(results: Any, count: int, limit_s: float = 120.0) -> list[Any]:
    got = []
    deadline = time.monotonic() + limit_s
    while len(got) < count:
        try:
            got.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"only {len(got)} of {count} results arrived") from None
    return got


def join(procs: Iterable[Any]) -> None:
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0, f"worker exited with {proc.exitcode}"


def test_six_processes_never_run_more_than_the_call_cap(redis_server: RedisServer) -> None:
    options = {"scope": "cap", "max_calls": 200}
    barrier, results = CTX.Barrier(6), CTX.Queue()
    procs = [
        start(
            workers.attempts_worker, redis_server.url, options, 60, 0.001, 0.001, barrier, results
        )
        for _ in range(6)
    ]
    reports = collect(results, 6)
    join(procs)

    assert sum(r["ran"] for r in reports) == 200
    assert sum(r["refused_calls"] for r in reports) == 6 * 60 - 200
    assert sum(r["refused_budget"] for r in reports) == 0
    usage = FleetLimits(redis_server.url, **options).usage()  # type: ignore[arg-type]
    assert (usage.calls, usage.in_flight, usage.reserved_usd) == (200, 0, 0.0)
    assert round(usage.spent_usd * NANO) == 200 * 1_000_000

    # Every process counted its refusals and settled spend in the fleet metrics.
    refusals = sum(
        r["metrics"].get("techrevati.fleet.refusals|fleet_calls|cap", 0) for r in reports
    )
    cost = sum(r["metrics"].get("techrevati.fleet.cost||cap", 0) for r in reports)
    assert refusals == 160
    assert cost == pytest.approx(0.2, abs=1e-9)


@pytest.mark.parametrize("expected_usd", [0.03, 0.0], ids=["estimated", "learned"])
def test_a_fleet_budget_overshoots_by_at_most_one_call(
    redis_server: RedisServer, expected_usd: float
) -> None:
    """Known per-call cost $0.03, budget $1.00: exactly ceil(1.00 / 0.03) = 34 calls run.

    With the estimate given, every call reserves its cost; with none, the
    model's first call runs alone as a probe and the rest reserve its learned
    cost. Either way spent + reserved grows by $0.03 per admission, so the
    34th call (0.99 < 1.00) is the one that crosses and the 35th is refused:
    spend ≤ budget + one call, the README's bound.
    """
    options = {"scope": f"budget-{expected_usd}", "budget_usd": 1.0}
    barrier, results = CTX.Barrier(6), CTX.Queue()
    procs = [
        start(
            workers.attempts_worker,
            redis_server.url,
            options,
            20,
            expected_usd,
            0.03,
            barrier,
            results,
        )
        for _ in range(6)
    ]
    reports = collect(results, 6)
    join(procs)

    ran = sum(r["ran"] for r in reports)
    assert ran == 34
    assert sum(r["refused_budget"] for r in reports) == 120 - 34
    usage = FleetLimits(redis_server.url, **options).usage()  # type: ignore[arg-type]
    assert round(usage.spent_usd * NANO) == 34 * 30_000_000
    assert usage.spent_usd <= 1.0 + 0.03
    assert (usage.calls, usage.reserved_usd) == (34, 0.0)
    scope = options["scope"]
    refusals = sum(
        r["metrics"].get(f"techrevati.fleet.refusals|fleet_budget|{scope}", 0) for r in reports
    )
    assert refusals == 120 - 34


def test_a_killed_workers_reservation_frees_after_its_lease(redis_server: RedisServer) -> None:
    """Budget $2.00, calls of $0.50, lease 3 s. A worker reserves $0.50 and is
    killed with SIGKILL mid-call. The others run 3 calls ($0.50 held + $1.50 =
    budget reached) and are refused until the dead worker's lease runs out;
    then exactly one more runs. Its admission time is after the lease end.
    """
    options = {"scope": "crash", "budget_usd": 2.0, "lease_s": 3.0}
    go, stop = CTX.Event(), CTX.Event()
    results, holds = CTX.Queue(), CTX.Queue()
    steady = [
        start(workers.steady_worker, redis_server.url, options, 0.5, go, stop, results)
        for _ in range(2)
    ]
    crasher = start(workers.crashing_worker, redis_server.url, options, 0.5, holds)
    dead_hold = collect(holds, 1)[0]
    os.kill(crasher.pid, signal.SIGKILL)
    crasher.join(timeout=30)
    assert crasher.exitcode == -signal.SIGKILL
    go.set()

    fleet = FleetLimits(redis_server.url, **options)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while fleet.usage().spent_usd < 2.0:
        assert time.monotonic() < deadline, f"the others stalled at {fleet.usage()}"
        time.sleep(0.05)
    stop.set()
    reports = collect(results, 2)
    join(steady)

    admitted = sorted(t for r in reports for t in r["admitted"])
    assert len(admitted) == 4
    # lease_until = admission time + 3 s (Redis clock): the 4th call was admitted
    # only once the killed worker's lease had run out.
    assert admitted[3] >= dead_hold.lease_until + 3.0 - 1e-6
    usage = fleet.usage()
    assert (usage.calls, usage.spent_usd, usage.reserved_usd, usage.in_flight) == (5, 2.0, 0.0, 0)


@pytest.mark.parametrize("mode", ["refuse", "allow"])
def test_redis_stopped_mid_run_then_restarted(redis_server: RedisServer, mode: str) -> None:
    options = {
        "scope": f"outage-{mode}",
        "budget_usd": 1000.0,
        "max_calls": 100_000,
        "on_store_error": mode,
        "timeout_s": 0.3,
    }
    phase, stop, results = CTX.Value("i", 0), CTX.Event(), CTX.Queue()
    procs = [
        start(workers.outage_worker, redis_server.url, options, phase, stop, results)
        for _ in range(3)
    ]
    pids = {p.pid for p in procs}
    seen: list[tuple[Any, ...]] = []

    def wait_for(in_phase: int, outcome: str) -> None:
        deadline = time.monotonic() + 90
        while True:
            per_pid = {
                pid: sum(
                    1 for s in seen if s[0] == pid and s[1] == s[2] == in_phase and s[3] == outcome
                )
                for pid in pids
            }
            if min(per_pid.values()) >= 3:
                return
            assert time.monotonic() < deadline, f"phase {in_phase}: {per_pid}"
            seen.append(results.get(timeout=60))

    down = "unavailable" if mode == "refuse" else "unbacked"
    # Phases 10 and 11 mark the stop and the restart in progress: not judged.
    wait_for(0, "backed")
    phase.value = 10
    redis_server.stop()
    phase.value = 1
    wait_for(1, down)
    phase.value = 11
    redis_server.start()  # same port, empty (no persistence)
    phase.value = 2
    wait_for(2, "backed")
    stop.set()
    while sum(1 for s in seen if s[3] == "done") < 3:
        seen.append(results.get(timeout=60))
    join(procs)

    attempts = [s[:5] for s in seen if s[3] != "done"]
    for _, before, after, outcome, _elapsed in attempts:
        if before == after == 0 or before == after == 2:
            assert outcome == "backed"
        if before == after == 1:
            assert outcome == down
    # Settlements that failed in the outage were retried, none is left waiting.
    done = {s[0]: s for s in seen if s[3] == "done"}
    assert [d[4] for d in done.values()] == [0.0, 0.0, 0.0]
    # Every failed store call was counted in the metric (settlements that failed
    # in the outage may add to the failed admissions).
    for pid, report in done.items():
        failed = sum(1 for s in attempts if s[0] == pid and s[3] == down)
        assert report[5] >= failed > 0
    # The restarted store counts exactly the calls admitted since the restart.
    after_restart = sum(1 for s in attempts if s[2] in (11, 2) and s[3] == "backed")
    usage = FleetLimits(redis_server.url, **options).usage()  # type: ignore[arg-type]
    assert usage.calls == after_restart
    assert round(usage.spent_usd * NANO) == after_restart * 10_000_000
