"""Caps and budgets hold when no span processor sees our spans (fresh processes).

Each case runs in its own interpreter: ``OTEL_SDK_DISABLED`` and the global
tracer provider are process-wide and set once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from techrevati.runtime import (BudgetExceededError, MaxIterationsExceededError,
        ModelPricing, Orchestrator, UsageSnapshot, agent_session, agent_turn, register_pricing)

    register_pricing("usd-1", ModelPricing(1_000_000.0, 0.0))
    setup = sys.argv[1]
    kwargs = {}
    if setup == "noop":
        from opentelemetry.trace import NoOpTracerProvider
        kwargs["tracer_provider"] = NoOpTracerProvider()
    elif setup == "always_off":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
        trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_OFF))

    out = {}
    ran = []
    orch = Orchestrator(role="w", phase="p", max_iterations=3, **kwargs)
    with orch.session() as s:
        for _ in range(6):
            try:
                s.run_turn(lambda: ran.append(1), model="usd-1", usage=UsageSnapshot())
            except MaxIterationsExceededError:
                pass
    out["cap_ran"], out["cap_iterations"] = len(ran), s._iteration_count

    budget_ran = []
    orch = Orchestrator(role="w", phase="p", budget_usd=1.5, enforce_budget=True, **kwargs)
    with orch.session() as s:
        for _ in range(6):
            try:
                s.run_turn(lambda: budget_ran.append(1), model="usd-1", usage=UsageSnapshot(1, 0))
            except BudgetExceededError:
                pass
    out["budget_ran"], out["spent"] = len(budget_ran), s.tracker.total_cost()

    @agent_turn("usd-1", usage=UsageSnapshot(1, 0))
    def ask():
        return "ok"

    nested = []
    with agent_session("parent", max_iterations=2, **kwargs):
        with agent_session("child", **kwargs):
            for _ in range(5):
                try:
                    ask()
                    nested.append(1)
                except MaxIterationsExceededError:
                    pass
    out["child_ran"] = len(nested)
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("setup", ["sdk_disabled", "noop", "always_off"])
def test_limits_hold_without_a_recording_processor(setup: str) -> None:
    env = dict(os.environ)
    if setup == "sdk_disabled":
        env["OTEL_SDK_DISABLED"] = "true"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, setup],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "cap_ran": 3,
        "cap_iterations": 3,
        "budget_ran": 2,
        "spent": 2.0,
        "child_ran": 2,
    }
