"""A probe whose process was killed holds the other workers' calls of its model a bounded time.

A model's first call in a scope whose cost nothing tells runs alone (the probe);
the others wait for it to settle. Its worker SIGKILLed mid-call never settles it:
every other worker's call of that model then waited for its lease (600 s by
default), silently. The process running a probe now renews it while its call
runs (every 5 s by default); one not renewed for 3 periods is lost, the next
call probes in its place, and a warning says which model, which scope, how long
and why. (A probe that is only slow is still waited for: ``test_slow_probe.py``.)"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from techrevati.runtime import (
    FleetLimits,
    ModelPricing,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.fleet.beats import BEAT_PERIOD_S, BEATS_MISSED

from .probe_holder import MODEL
from .redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
#: Beyond the bound: a busy machine's process start and the waiter's 0.25 s polls.
MARGIN_S = 20.0


def test_a_killed_probe_holds_another_process_call_only_the_default_wait(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scope = "lost-probe"
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.fleet.probe_holder", redis_server.url, scope, str(ready)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        started = time.monotonic()
        while not ready.exists():
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() - started < 60, "the probe holder was never admitted"
            time.sleep(0.05)
    finally:
        holder.send_signal(signal.SIGKILL)  # mid-call: its probe is never settled
        holder.wait(timeout=10)

    register_pricing(MODEL, ModelPricing(1_000_000.0, 0.0))
    fleet = FleetLimits(redis_server.url, scope=scope, budget_usd=5.0, lease_s=600)
    assert fleet.probe_wait_s is None  # the defaults, not values set for this test

    @agent_turn(model=MODEL)
    def call() -> dict[str, object]:
        return {"model": MODEL, "usage": {"prompt_tokens": 1, "completion_tokens": 0}}

    done: list[float] = []

    def other_worker() -> None:
        began = time.monotonic()
        with agent_session("other", fleet=fleet):
            call()
        done.append(time.monotonic() - began)

    caplog.set_level(logging.WARNING, logger="techrevati.runtime.fleet")
    # A thread, so a wait for the whole lease fails this test instead of hanging it.
    thread = threading.Thread(target=other_worker, daemon=True)
    thread.start()
    bound = BEATS_MISSED * BEAT_PERIOD_S + MARGIN_S  # 15 s unrenewed, plus the margin
    thread.join(bound)
    assert done, f"still waiting after {bound:.0f} s (600 s before)"
    assert done[0] <= bound
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lost = [m for m in warnings if "did not settle within" in m]
    assert len(lost) == 1, warnings  # none before
    assert f"model {MODEL!r}" in lost[0] and f"scope {scope!r}" in lost[0]
    assert "its process stopped renewing it (crashed or killed)" in lost[0]
    assert "waited" in lost[0]
    assert not [m for m in warnings if "still running" in m], warnings
    usage = fleet.usage()
    assert fleet.learned_cost(MODEL) == 1.0  # the call ran as the probe and taught its cost
    assert (usage.calls, usage.spent_usd) == (2, 1.0)
