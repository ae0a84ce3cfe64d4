"""Eviction is detected: a Redis under allkeys-lru drops a scope's keys mid-window."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from techrevati.runtime import FleetLimits

from .redis_server import RedisServer


def test_keys_evicted_mid_window_are_logged_and_the_count_restarts(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_server.client()
    client.config_set("maxmemory", "4mb")
    client.config_set("maxmemory-policy", "allkeys-lru")  # what production must not use
    fleet = FleetLimits(redis_server.url, scope="evicted", budget_usd=100.0, window_s=3600)
    for _ in range(3):
        fleet.settle(fleet.reserve("m", 0.5), 0.5)
    assert fleet.usage().calls == 3
    window = fleet.reserve("m", 0.5).window
    base = f"techrevati:fleet:{{evicted}}:{window}"

    junk = b"x" * 1024
    n = 0
    while client.exists(base) and n < 200_000:  # fill Redis until LRU takes the scope's keys
        with client.pipeline(transaction=False) as pipe:
            for i in range(n, n + 500):
                pipe.set(f"junk:{i}", junk)
            pipe.execute()
        n += 500
    assert not client.exists(base), "Redis never evicted the scope's keys"

    with caplog.at_level(logging.ERROR, logger="techrevati.runtime.fleet"):
        fleet.reserve("m", 0.5)
    assert "vanished from Redis mid-window" in caplog.text
    assert "noeviction" in caplog.text
    assert fleet.usage().calls == 1  # what eviction does: the window starts again


def test_concurrent_first_admissions_of_a_window_are_not_an_eviction(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Concurrent first reserves of a fresh window: the one whose script made the keys
    # may be read after another's reply; that used to look like keys that vanished
    # (an ERROR and an eviction count on a healthy noeviction Redis, ~1 scope in 3).
    with caplog.at_level(logging.ERROR, logger="techrevati.runtime.fleet"):
        for n in range(20):
            fleet = FleetLimits(redis_server.url, scope=f"fresh-{n}", budget_usd=1.0, window_s=3600)
            start = threading.Barrier(8)
            holds: list[Any] = []

            def first(
                fleet: FleetLimits = fleet,
                start: threading.Barrier = start,
                holds: list[Any] = holds,
            ) -> None:
                start.wait()
                holds.append(fleet.reserve("m", 0.001))

            threads = [threading.Thread(target=first) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for hold in holds:
                fleet.settle(hold, 0.001)
            assert fleet.usage().calls == 8
    assert "vanished" not in caplog.text
