"""A Redis that hangs (SIGSTOP): every call is bounded by the timeout, logged once per outage."""

from __future__ import annotations

import logging
import time

import pytest

from techrevati.runtime import FleetLimits, FleetUnavailableError

from .redis_server import RedisServer

TIMEOUT_S = 0.3
# Generous on purpose: a hung call would take forever; a bounded one takes
# TIMEOUT_S plus scheduling noise on a busy machine.
BOUND_S = TIMEOUT_S + 2.0

OUTAGE = "store unreachable"
BACK = "store reachable again"


def timed(call: object) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result = call()  # type: ignore[operator]
    except FleetUnavailableError as err:
        result = err
    return result, time.monotonic() - started


def test_a_hung_store_refuses_or_allows_within_the_timeout(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    closed = FleetLimits(redis_server.url, scope="hang", max_calls=100, timeout_s=TIMEOUT_S)
    opened = FleetLimits(
        redis_server.url, scope="hang", max_calls=100, timeout_s=TIMEOUT_S, on_store_error="allow"
    )
    admitted = closed.reserve("m", 0.0)
    in_flight = closed.reserve("m", 0.0)
    opened.usage()  # both scopes hold a pooled connection now

    caplog.set_level(logging.DEBUG, logger="techrevati.runtime.fleet")
    redis_server.pause()
    try:
        for _ in range(3):
            refused, elapsed = timed(lambda: closed.reserve("m", 0.0))
            assert isinstance(refused, FleetUnavailableError) and refused.scope == "hang"
            assert elapsed < BOUND_S
        hold, elapsed = timed(lambda: opened.reserve("m", 0.0))
        assert elapsed < BOUND_S
        assert hold.unbacked  # type: ignore[union-attr]
        opened.settle(hold, 0.5)  # type: ignore[arg-type]  # books nothing, raises nothing
        _, elapsed = timed(lambda: closed.settle(admitted, 0.25))  # never raises
        assert elapsed < BOUND_S
        assert closed.pending_settlements > 0
    finally:
        redis_server.resume()

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # One line per outage and scope object, not one per failed call.
    assert [r.getMessage().count(OUTAGE) for r in warnings] == [1, 1]
    assert "refusing model calls" in warnings[0].getMessage()
    assert "local limits only" in warnings[1].getMessage()

    # The store kept its state (it only hung): the settlement retried after
    # it answers again books exactly once, and the timed-out admissions, if
    # Redis ran them on waking up, are released again.
    opened.usage()
    usage = closed.usage()
    assert closed.pending_settlements == opened.pending_settlements == 0
    assert (usage.calls, usage.spent_usd, usage.in_flight) == (2, 0.25, 1)
    assert [r.getMessage() for r in caplog.records if BACK in r.getMessage()] == [
        f"fleet scope 'hang': {BACK}"
    ] * 2
    closed.settle(in_flight, 0.25)
    assert closed.usage().spent_usd == 0.5
