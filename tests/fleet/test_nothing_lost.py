"""Nothing booked is lost: pending settlements reach Redis from the background, at
normal exit and on SIGTERM; refusal clean-ups never push settlements out."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest

from techrevati.runtime import FleetLimits, FleetUnavailableError
from techrevati.runtime.fleet import outbox

from .redis_server import RedisServer


def spent_nano(server: RedisServer, scope: str, window: int = 0) -> int:
    value = server.client().hget(f"techrevati:fleet:{{{scope}}}:{window}", "spent")
    return int(value or 0)


def wait_for(predicate: object, what: str, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_an_idle_scope_dropped_at_once_still_books_when_redis_answers_again(
    redis_server: RedisServer,
) -> None:
    fleet = FleetLimits(redis_server.url, scope="idle", budget_usd=10.0, timeout_s=0.2)
    holds = [fleet.reserve("m", 0.1) for _ in range(5)]
    redis_server.pause()
    try:
        for hold in holds:
            fleet.settle(hold, 0.1)  # the first times out, the rest join it in the outbox
        assert fleet.pending_settlements == 5
        del fleet, holds  # a scope built per request, gone before Redis is back
        gc.collect()
    finally:
        redis_server.resume()
    # Nobody calls anything any more: the background flusher books them.
    wait_for(lambda: spent_nano(redis_server, "idle") == 500_000_000, "the flusher")


def test_refusal_clean_ups_never_push_out_settlements(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, aof=True)  # a restart keeps the window's keys
    server.start()
    try:
        fleet = FleetLimits(server.url, scope="crowd", budget_usd=100.0, window_s=3600)
        holds = [fleet.reserve("m", 0.25) for _ in range(4)]
        server.stop()
        for hold in holds:
            fleet.settle(hold, 0.25)
        refused = 0
        for _ in range(4_000):  # 3 clean-ups each: 12,000 > the clean-up bound
            with pytest.raises(FleetUnavailableError):
                fleet.reserve("m", 0.25)
            refused += 1
        assert fleet._outbox.settlements == 4
        assert fleet._outbox.cleanups == outbox.CLEANUPS_MAX
        assert fleet.dropped_settlements == 0
        assert fleet._outbox.dropped[outbox.KIND_CLEANUP] == 3 * refused - outbox.CLEANUPS_MAX
        server.start()
        assert fleet.flush(30.0)
        usage = fleet.usage()
        assert (usage.calls, usage.spent_usd, usage.in_flight) == (4, 1.0, 0)
    finally:
        server.stop()


CHILD = """
import os, signal, sys, time
from techrevati.runtime import FleetLimits, configure
from techrevati.runtime.fleet import outbox

url, redis_pid, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if how == "sigterm":
    configure(service_name="t", spans_file=False, report=False)  # SIGTERM handled by default
# Only the exit paths may deliver: the background flusher, once failed, sleeps an hour.
outbox.RETRY_MIN_S = outbox.RETRY_MAX_S = 3600.0
fleet = FleetLimits(url, scope="exit-" + how, budget_usd=10.0, timeout_s=0.2)
hold = fleet.reserve("m", 0.5)
os.kill(redis_pid, signal.SIGSTOP)
try:
    fleet.settle(hold, 0.5)  # times out: queued
    time.sleep(0.8)  # still frozen: the flusher's first try times out, then it sleeps
finally:
    os.kill(redis_pid, signal.SIGCONT)
time.sleep(0.3)
assert fleet.pending_settlements == 1, fleet.pending_settlements
print("queued", flush=True)
if how == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    raise SystemExit("SIGTERM did not stop the process")
"""


def _child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a Python process of its own, with no OTel exporters."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    )


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_pending_settlements_are_delivered_at_exit_and_on_sigterm(
    redis_server: RedisServer, how: str
) -> None:
    assert redis_server.proc is not None
    proc = _child(CHILD, redis_server.url, str(redis_server.proc.pid), how)
    assert "queued" in proc.stdout, proc.stderr
    expected_rc = -signal.SIGTERM if how == "sigterm" else 0
    assert proc.returncode == expected_rc, proc.stderr
    assert spent_nano(redis_server, f"exit-{how}") == 500_000_000


def test_a_dropped_scope_is_freed_once_nothing_is_pending(redis_server: RedisServer) -> None:
    # The outbox and the flusher hold the store, never the FleetLimits object.
    fleet = FleetLimits(redis_server.url, scope="freed", budget_usd=1.0)
    fleet.settle(fleet.reserve("m", 0.1), 0.1)
    ref = weakref.ref(fleet)
    del fleet
    assert ref() is None  # no cycle: freed at once, without the cycle collector


IN_FLIGHT_CHILD = """
import os, signal, sys, threading, time
from techrevati.runtime import FleetLimits, agent_session, configure

url, how = sys.argv[1], sys.argv[2]
configure(service_name="t", spans_file=False, report=False)  # SIGTERM handled by default
fleet = FleetLimits(url, scope="in-flight-" + how, budget_usd=1.0)
fleet.reserve("m", 0.25)  # a call of our own in flight, never settled here
with agent_session("w", max_iterations=5):
    print("in flight", fleet.usage().in_flight, flush=True)
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise SystemExit("SIGTERM did not stop the process")
"""


@pytest.mark.parametrize("how", ["sigterm", "exit"])
def test_holds_in_flight_are_booked_at_their_reservation_on_sigterm_and_at_exit(
    redis_server: RedisServer, how: str
) -> None:
    # docker stop with a call in flight: its hold kept $0.25 reserved in the scope
    # for the whole lease (10 minutes), refusing other processes' calls meanwhile.
    proc = _child(IN_FLIGHT_CHILD, redis_server.url, how)
    assert "in flight 1" in proc.stdout, proc.stderr
    assert proc.returncode == (-signal.SIGTERM if how == "sigterm" else 0), proc.stderr
    usage = FleetLimits(redis_server.url, scope="in-flight-" + how, budget_usd=1.0).usage()
    assert (usage.in_flight, usage.reserved_usd, usage.spent_usd) == (0, 0.0, 0.25)


def test_settle_in_flight_books_only_the_holds_still_open(redis_server: RedisServer) -> None:
    fleet = FleetLimits(redis_server.url, scope="settle-in-flight", budget_usd=1.0)
    done, open_ = fleet.reserve("m", 0.1), fleet.reserve("m", 0.2)
    fleet.settle(done, 0.05)
    assert fleet.settle_in_flight() == 1
    assert fleet.settle_in_flight() == 0
    fleet.settle(open_, 0.9)  # already booked at its reservation: a second settle does nothing
    usage = fleet.usage()
    assert (usage.calls, usage.in_flight, usage.spent_usd) == (2, 0, pytest.approx(0.25))
