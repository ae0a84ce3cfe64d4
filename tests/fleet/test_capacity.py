"""Capacity is not an outage: many threads on a healthy Redis see no store error."""

from __future__ import annotations

import threading

import pytest

from techrevati.runtime import FleetLimits, FleetUnavailableError, MaxIterationsExceededError

from .redis_server import RedisServer

THREADS = 256
CALLS = 4


@pytest.mark.parametrize("on_store_error", ["refuse", "allow"])
def test_256_threads_see_no_refusal_and_no_unlimited_call(
    redis_server: RedisServer, on_store_error: str
) -> None:
    # redis-py's default pool stopped at 100 connections: the 101st concurrent
    # call was a "Too many connections" store error (refused, or run unlimited).
    fleet = FleetLimits(
        redis_server.url,
        scope=f"crowd-{on_store_error}",
        budget_usd=1_000.0,
        max_calls=THREADS * CALLS + 1,
        on_store_error=on_store_error,  # type: ignore[arg-type]
        max_connections=64,  # fewer than the threads: callers wait for a connection
    )
    fleet.settle(fleet.reserve("m", 0.001), 0.001)  # learned: no probe wait below
    start = threading.Barrier(THREADS)
    problems: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait()
        for _ in range(CALLS):
            try:
                hold = fleet.reserve("m", 0.001)
            except FleetUnavailableError as err:
                with lock:
                    problems.append(f"refused: {err}")
                continue
            if hold.unbacked:
                with lock:
                    problems.append("ran without a fleet limit")
            fleet.settle(hold, 0.001)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    usage = fleet.usage()
    assert (usage.calls, usage.in_flight) == (THREADS * CALLS + 1, 0)
    with pytest.raises(MaxIterationsExceededError):
        fleet.reserve("m", 0.001)  # the cap is exactly full
