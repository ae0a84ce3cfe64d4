"""A slow probe, alive, is waited for: the calls waiting for it never run unreserved.

A model's first call in a scope whose cost nothing tells runs alone (its probe);
the others wait for it to settle, then reserve what it cost. The waits were cut
to ``probe_wait_s`` (30 s by default) to bound a killed probe, and a call whose
wait ran out ran unreserved: with a $5 budget, $1 calls and a probe taking 40 s,
nine waiting workers all ran at ~31 s and $10 was spent (the probe's own result
refused after it ran), where $5 had been before. And the probe's age was derived
from the waiter's ``lease_s``: a waiter with a longer lease took it over at once.

Now the probe's process renews it while its call runs; a renewed probe is waited
for however slow (one WARNING says it is slow, not lost), and its age is its own.
Here: ``probe_wait_s=2`` and a 5 s probe in another process, nine $1 waiters.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    ModelPricing,
    agent_session,
    agent_turn,
    register_pricing,
)

from .probe_holder import SLOW_MODEL as MODEL
from .redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
PROBE_S = 5.0
WAITERS = 9


@pytest.mark.parametrize(
    ("lease_s", "probe_wait_s"),
    [(600.0, 2.0), (3600.0, None)],
    ids=["slow-probe", "longer-lease-waiter"],
)
def test_a_slow_probe_is_waited_for_and_the_budget_holds(
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    lease_s: float,
    probe_wait_s: float | None,
) -> None:
    scope = "slow-probe"
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fleet.probe_holder",
            redis_server.url,
            scope,
            str(ready),
            str(PROBE_S),
            "2.0",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = time.monotonic()
        while not ready.exists():
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() - started < 60, "the probe holder was never admitted"
            time.sleep(0.05)

        register_pricing(MODEL, ModelPricing(1_000_000.0, 0.0))
        fleet = FleetLimits(
            redis_server.url,
            scope=scope,
            budget_usd=5.0,
            lease_s=lease_s,
            probe_wait_s=probe_wait_s,
        )
        ran: list[int] = []
        refused: list[int] = []

        def worker(i: int) -> None:
            @agent_turn(model=MODEL)
            def call() -> dict[str, object]:
                ran.append(i)
                time.sleep(0.2)
                return {"model": MODEL, "usage": {"prompt_tokens": 1, "completion_tokens": 0}}

            try:
                with agent_session(f"w{i}", fleet=fleet):
                    call()
            except BudgetExceededError:
                refused.append(i)

        caplog.set_level(logging.WARNING, logger="techrevati.runtime.fleet")
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WAITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads), "waiters still waiting after 60 s"
        code = holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    err = holder.stderr.read() if holder.stderr else ""
    usage = fleet.usage()
    # Before: 9 ran (unreserved at 2 s, or the longer-lease waiter took the probe over
    # at once), $10 / $6 spent, and the probe's own result refused after it ran.
    assert code == 0, err  # the probe's result was kept
    assert (len(ran), len(refused)) == (4, 5), (ran, refused)  # 4 reserved $1 after it
    assert usage.spent_usd == 5.0 and usage.calls == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert not [m for m in warnings if "stopped renewing" in m], warnings  # not lost
    if probe_wait_s is not None:
        slow = [m for m in warnings if "is still running after" in m]
        assert len(slow) >= 1, warnings
        assert "(slow)" in slow[0] and f"model {MODEL!r}" in slow[0]
        assert "keeps waiting" in slow[0]
