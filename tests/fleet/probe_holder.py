"""A worker whose model call is its scope's probe: it hangs (lost), or is slow but returns.

    python -m tests.fleet.probe_holder URL SCOPE READY_FILE                        # lost
    python -m tests.fleet.probe_holder URL SCOPE READY_FILE SECONDS PROBE_WAIT_S   # slow

Its ``@agent_turn`` knows no usage up front, so it reserves $0 and runs as the
probe of its model; once admitted it writes READY_FILE. Lost (``MODEL``): it
hangs, as a request to a stalled provider does, until the test SIGKILLs it.
Slow (``SLOW_MODEL``): it takes SECONDS (a reasoning model, a long answer) and
returns usage billed $1; it exits 0 when its call's result was kept, 3 when the
fleet budget refused it after it ran (others ran unreserved beside it and spent
the budget).
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

MODEL = "lost-probe-model"
SLOW_MODEL = "slow-probe-model"


def main(
    url: str, scope: str, ready: str, seconds: float | None, probe_wait_s: float | None
) -> int:
    model = MODEL if seconds is None else SLOW_MODEL
    register_pricing(model, ModelPricing(1_000_000.0, 0.0))
    options = {} if probe_wait_s is None else {"probe_wait_s": probe_wait_s}
    fleet = FleetLimits(url, scope=scope, budget_usd=5.0, lease_s=600, **options)

    @agent_turn(model=model)
    def call() -> dict[str, object]:
        Path(ready).write_text("admitted")
        if seconds is None:
            time.sleep(3600)  # killed by the test long before
            return {}
        time.sleep(seconds)
        return {"model": model, "usage": {"prompt_tokens": 1, "completion_tokens": 0}}

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
    slow = len(args) > 4
    sys.exit(
        main(
            args[1],
            args[2],
            args[3],
            float(args[4]) if slow else None,
            float(args[5]) if slow else None,
        )
    )
