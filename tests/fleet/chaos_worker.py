"""One worker process of the chaos test: 8 threads calling through two fleet scopes.

Threads 0-3 spend against the budget scope, threads 4-7 against the call-cap
scope, until their scope refuses for good or the deadline passes. Every hold is
written to this worker's log before it is settled (``A <hold id> <nano>``) or
right after it was admitted (``B <hold id>``), one ``os.write`` per line, so a
``kill -9`` at any moment leaves a log the test can check against Redis.

    python -m tests.fleet.chaos_worker URL LOG DEADLINE_EPOCH
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    FleetUnavailableError,
    MaxIterationsExceededError,
)

COST = 0.01
COST_NANO = 10_000_000
BUDGET_USD = 20.0
MAX_CALLS = 2_000
LEASE_S = 4.0
OPTIONS = {"lease_s": LEASE_S, "timeout_s": 0.3, "max_connections": 2}


def scopes(url: str) -> tuple[FleetLimits, FleetLimits]:
    budget = FleetLimits(url, scope="chaos-budget", budget_usd=BUDGET_USD, **OPTIONS)
    calls = FleetLimits(url, scope="chaos-calls", max_calls=MAX_CALLS, **OPTIONS)
    return budget, calls


def main(url: str, log_path: str, deadline: float) -> None:
    budget, calls = scopes(url)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    unavailable = [0]

    def write(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    def spend() -> None:
        while time.time() < deadline:
            try:
                hold = budget.reserve("m", COST)
            except BudgetExceededError:
                time.sleep(0.2)  # a reservation freed by a lease may let one more in
                if budget.usage().spent_usd >= BUDGET_USD:
                    return
                continue
            except FleetUnavailableError:
                unavailable[0] += 1
                time.sleep(0.05)
                continue
            time.sleep(random.uniform(0.05, 0.25))  # the model call
            write(f"A {hold.hold_id} {COST_NANO}")
            budget.settle(hold, COST)

    def count() -> None:
        while time.time() < deadline:
            try:
                hold = calls.reserve("m", 0.0)
            except MaxIterationsExceededError:
                return
            except FleetUnavailableError:
                unavailable[0] += 1
                time.sleep(0.05)
                continue
            write(f"B {hold.hold_id}")
            time.sleep(random.uniform(0.05, 0.25))
            calls.settle(hold, 0.0)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    threads += [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write(f"U {unavailable[0]}")
    write(f"P {budget.pending_settlements + calls.pending_settlements}")
    os.close(fd)
    # Normal exit: whatever is still pending is delivered by the atexit flush.


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
