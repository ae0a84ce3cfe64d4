"""Chaos on real processes: 8 workers x 8 threads against one real redis-server (AOF on).

During the run Redis is frozen (SIGSTOP/SIGCONT), restarted, a worker is killed
with ``kill -9``, and every worker's pool (2 connections for 4 threads a scope)
is full. Afterwards, read from Redis itself:

* the budget scope's spend is at most the budget plus the reservations that can
  be in flight when it is crossed (one per spending thread);
* the call-cap scope counted at most its cap, exactly;
* no lease is left once ``lease_s`` has passed;
* each scope's counters equal the sum of the bookings that reached it: every
  logged settlement whose hold is not among the expired (never settled) ones.

About 30 s on 2 busy cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import chaos_worker as w
from .redis_server import RedisServer

PROCESSES = 8
SPENDING_THREADS = PROCESSES * 4
REPO = Path(__file__).resolve().parents[2]


def test_the_fleet_holds_under_chaos(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", aof=True)
    (tmp_path / "redis").mkdir()
    server.start()
    try:
        budget, calls = w.scopes(server.url)
        budget.settle(budget.reserve("m", w.COST), w.COST)  # learned: no probe waits
        logs = [tmp_path / f"worker-{n}.log" for n in range(PROCESSES)]
        deadline = time.time() + 90  # they stop when their scope is spent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.fleet.chaos_worker",
                    server.url,
                    str(log),
                    str(deadline),
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for log in logs
        ]
        # The chaos starts once every worker is calling (imports are slow on busy cores).
        started = time.monotonic()
        while not all(log.exists() and log.stat().st_size for log in logs):
            assert time.monotonic() - started < 60, "the workers did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        server.pause()  # frozen: every call times out, pools fill up
        time.sleep(1.5)
        server.resume()
        time.sleep(0.5)
        server.restart()  # AOF: the counts survive
        time.sleep(1.0)
        workers[0].send_signal(signal.SIGKILL)  # mid-call: its holds are left to their leases
        for proc in workers:
            proc.wait(timeout=60)
        stderr = [proc.stderr.read().decode() if proc.stderr else "" for proc in workers]
        assert [proc.returncode for proc in workers[1:]] == [0] * (PROCESSES - 1), stderr

        time.sleep(w.LEASE_S + 0.5)  # every lease of the killed worker has run out
        client = server.client()
        for _ in range(20):  # each read moves up to 256 expired holds out of the live set
            budget.usage()
            calls.usage()

        lines = [
            line.split() for log in logs if log.exists() for line in log.read_text().splitlines()
        ]
        settled = {parts[1]: int(parts[2]) for parts in lines if parts[0] == "A"}
        admitted = {parts[1] for parts in lines if parts[0] == "B"}
        unavailable = sum(int(parts[1]) for parts in lines if parts[0] == "U")
        left = [int(parts[1]) for parts in lines if parts[0] == "P"]

        b_key, c_key = "techrevati:fleet:{chaos-budget}:0", "techrevati:fleet:{chaos-calls}:0"
        b_expired = {k.decode() for k in client.hkeys(b_key + ":exp")}
        c_live = client.zcard(c_key + ":live")
        b_live = client.zcard(b_key + ":live")
        spent = int(client.hget(b_key, "spent") or 0)
        counted = int(client.hget(c_key, "calls") or 0)

        # No lease left behind.
        assert (b_live, c_live) == (0, 0)
        assert budget.usage().in_flight == calls.usage().in_flight == 0
        assert budget.usage().reserved_usd == calls.usage().reserved_usd == 0.0
        # Counters == the bookings that reached Redis (plus the learning call).
        delivered = sum(nano for hold, nano in settled.items() if hold not in b_expired)
        assert spent == delivered + w.COST_NANO
        # Budget: at most one call per spending thread in flight when it is crossed.
        overshoot = spent - round(w.BUDGET_USD * 1e9)
        assert overshoot <= SPENDING_THREADS * w.COST_NANO, overshoot
        # Calls: the cap holds exactly, and every logged admission is counted.
        assert len(admitted) <= counted <= w.MAX_CALLS
        # The chaos happened: calls were refused while Redis was away, and the run
        # got far (the budget was reached or the cap was).
        assert unavailable > 0
        assert len(left) == PROCESSES - 1  # the killed worker never finished
        c_expired = client.hlen(c_key + ":exp")
        assert len(b_expired) + c_expired > 0  # it died holding calls: their leases freed them
        assert spent >= round(w.BUDGET_USD * 1e9) or counted == w.MAX_CALLS
        print(
            f"chaos: spent ${spent / 1e9:.2f} of ${w.BUDGET_USD} (overshoot "
            f"${max(overshoot, 0) / 1e9:.2f}), {counted}/{w.MAX_CALLS} calls, "
            f"{unavailable} refused while Redis was away, {len(b_expired) + c_expired} holds "
            "expired (kill -9), "
            f"pending at exit {left}"
        )
    finally:
        server.stop()
