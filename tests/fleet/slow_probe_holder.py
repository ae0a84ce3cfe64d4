"""A worker whose model call is its scope's probe and is slow, but alive: it returns.

    python -m tests.fleet.slow_probe_holder URL SCOPE READY_FILE SECONDS PROBE_WAIT_S

Its ``@agent_turn`` knows no usage up front, so it reserves $0 and runs as the
probe of ``slow-probe-model``; once admitted it writes READY_FILE, takes SECONDS
(a reasoning model, a long answer) and returns usage billed $1. Exits 0 when its
call's result was kept, 3 when the fleet budget refused it after it ran (others
ran unreserved beside it and spent the budget).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    ModelPricing,
    agent_session,
    agent_turn,
    register_pricing,
)

MODEL = "slow-probe-model"


def main(url: str, scope: str, ready: str, seconds: float, probe_wait_s: float) -> int:
    register_pricing(MODEL, ModelPricing(1_000_000.0, 0.0))
    fleet = FleetLimits(url, scope=scope, budget_usd=5.0, lease_s=600, probe_wait_s=probe_wait_s)

    @agent_turn(model=MODEL)
    def call() -> dict[str, object]:
        Path(ready).write_text("admitted")
        time.sleep(seconds)
        return {"model": MODEL, "usage": {"prompt_tokens": 1, "completion_tokens": 0}}

    try:
        with agent_session("holder", fleet=fleet):
            call()
    except BudgetExceededError as exc:
        print(f"refused after it ran: {exc}", file=sys.stderr)
        return 3
    finally:
        fleet.flush()
    return 0


if __name__ == "__main__":
    args = sys.argv
    sys.exit(main(args[1], args[2], args[3], float(args[4]), float(args[5])))
