"""A worker whose model call is its scope's probe and never returns (killed by the test).

    python -m tests.fleet.probe_holder URL SCOPE READY_FILE

Its ``@agent_turn`` knows no usage up front, so it reserves $0 and runs as the
probe of ``lost-probe-model``; once admitted it writes READY_FILE and hangs, as a
request to a stalled provider does, until the test SIGKILLs it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from techrevati.runtime import (
    FleetLimits,
    ModelPricing,
    agent_session,
    agent_turn,
    register_pricing,
)

MODEL = "lost-probe-model"


def main(url: str, scope: str, ready: str) -> None:
    register_pricing(MODEL, ModelPricing(1_000_000.0, 0.0))
    fleet = FleetLimits(url, scope=scope, budget_usd=5.0, lease_s=600)

    @agent_turn(model=MODEL)
    def call() -> dict[str, object]:
        Path(ready).write_text("admitted")
        time.sleep(3600)
        return {}

    with agent_session("holder", fleet=fleet):
        call()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
