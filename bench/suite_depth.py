"""Turn cost against session depth: 10, 1,000 and 100,000 earlier turns (20,000 if quick).

Every session here enforces a budget and an iteration cap, so each turn runs
the admission check and the post-turn budget check that 0.4.0 made O(turns).
Depth 10 and 1,000 are fresh sessions pre-filled before every sample; the
100,000-deep session is filled once and grows by the timed turns of each round.
Metrics on, the user's SDK providers, spans exported to a dropping exporter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import harness, ours
from .harness import Bench, Result
from .otelkit import MODEL, Floors, meter_provider, tracer_provider


class DeepSession:
    """One long-lived session pre-filled to ``depth`` turns; samples extend it."""

    def __init__(self, orch: Any, depth: int, timed: int) -> None:
        self._cm = orch.session()
        self.session = self._cm.__enter__()
        run_turn = self.session.run_turn
        for _ in range(depth):
            run_turn(ours.model_call, MODEL, ours.USAGE)
        self.timed = timed

    def sample(self) -> float:
        run_turn = self.session.run_turn
        start = time.perf_counter()
        for _ in range(self.timed):
            run_turn(ours.model_call, MODEL, ours.USAGE)
        return (time.perf_counter() - start) / self.timed

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def fresh(orch: Any, depth: int, timed: int) -> Callable[[], float]:
    return ours.session_turns(orch, depth, timed)


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    ours.setup_pricing()
    floors = Floors()
    tp, _ = tracer_provider()
    mp = meter_provider()
    orch = ours.orchestrator(tp, mp)
    timed = 100 if quick else 200
    deep_depth = 20_000 if quick else 100_000
    fill_started = time.perf_counter()
    deep = DeepSession(orch, deep_depth, timed)
    tp.force_flush()
    fill_seconds = time.perf_counter() - fill_started
    benches = [
        Bench("B", "B   raw OTel span, 8 attributes", harness.batch(floors.b, timed)),
        Bench("depth_10", "run_turn at depth 10", fresh(orch, 10, timed), "B"),
        Bench("depth_1000", "run_turn at depth 1,000", fresh(orch, 1000, timed), "depth_10"),
        Bench("depth_deep", f"run_turn at depth {deep_depth:,}", deep.sample, "depth_10"),
    ]
    rounds = 5 if quick else 15
    samples = harness.interleave(benches, rounds, warmup=1, progress="depth")
    final_depth = deep.session.tracker.turn_count
    deep.close()
    tp.force_flush()
    result = Result("depth", "turn cost against session depth, µs per turn", rounds)
    harness.add_rows(result, benches, samples)
    result.check(
        "deep session ledger",
        final_depth == deep_depth + (rounds + 1) * timed,
        f"{final_depth:,} turns booked, expected {deep_depth + (rounds + 1) * timed:,}",
    )
    result.info.append(
        f"filling the {deep_depth:,}-turn session took {fill_seconds:.1f} s "
        f"({fill_seconds / deep_depth * 1e6:.0f} µs/turn including span export); "
        f"{timed} timed turns per sample; suite took {time.perf_counter() - started:.0f} s"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
