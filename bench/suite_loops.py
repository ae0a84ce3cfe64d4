"""What loop detection and wrap-up cost per call, one process, paired per round.

Rows (every one sampled once per round, rounds interleaved):

* ``turn_off`` / ``turn_guard`` / ``turn_wrap`` — ``session.run_turn`` (metrics on,
  enforced budget, cap) with ``loop_guard=None``, with the default guard, and with
  the default guard plus ``wrap_up_at=0.8`` (never reached: the check itself is
  what is measured). The last two are compared with the first: a turn fingerprints
  nothing, so the target is "nothing measurable" (a ratio indistinguishable from 1).
* ``tool_off`` / ``tool_guard`` — ``session.run_tool`` with ``arguments={"q": i}``
  (a new call each time: progress, so the guard never warns), without and with the
  default guard: the price of one fingerprint per tool call.
* ``fingerprint`` — ``LoopWatch.key`` plus ``LoopWatch.record`` for the same small
  arguments and result, alone, against the raw span floor B.
* ``fingerprint_rows`` / ``fingerprint_20mb`` — ``LoopWatch.key`` for arguments past
  the bound: a list of a million ints (not compared: past ``MAX_VALUES``) and a
  20 MB ``bytearray`` (hashed, never copied; a ``bytes`` caches its hash, a
  ``bytearray`` cannot, so this is the worst case), against ``fingerprint``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from techrevati.runtime import LoopGuard
from techrevati.runtime.telemetry.limits.loops import LoopWatch

from . import harness, ours
from .harness import Bench, Result
from .otelkit import Floors, meter_provider, tracer_provider

TIMED = 100
WARM = 10


def _tools(orch: object, timed: int) -> Callable[[], float]:
    def tool() -> str:
        return "fact"

    def sample() -> float:
        with orch.session() as session:  # type: ignore[attr-defined]
            run_tool = session.run_tool
            start = time.perf_counter()
            for i in range(timed):
                run_tool("lookup", tool, arguments={"q": i})
            elapsed = time.perf_counter() - start
        return elapsed / timed

    return sample


def _fingerprints(n: int) -> Callable[[], float]:
    def sample() -> float:
        watch = LoopWatch(LoopGuard(on_loop="warn"))
        key, record = watch.key, watch.record
        start = time.perf_counter()
        for i in range(n):
            k = key("lookup", {"q": i})
            assert k is not None
            record(k, "lookup", "fact")
        return (time.perf_counter() - start) / n

    return sample


def _big_keys(arguments: dict[str, object], n: int) -> Callable[[], float]:
    def sample() -> float:
        key = LoopWatch(LoopGuard(on_loop="warn")).key
        start = time.perf_counter()
        for _ in range(n):
            key("upload", arguments)
        return (time.perf_counter() - start) / n

    return sample


def build(quick: bool) -> tuple[list[Bench], Callable[[], None]]:
    ours.setup_pricing()
    floors = Floors()
    tp, _ = tracer_provider()
    mp = meter_provider()
    calls = 300 if quick else 500
    off = ours.orchestrator(tp, mp, loop_guard=None)
    guard = ours.orchestrator(tp, mp)  # the default: LoopGuard(on_loop="warn")
    wrap = ours.orchestrator(tp, mp, wrap_up_at=0.8)
    benches = [
        Bench("B", "B   raw OTel span, 8 attributes", harness.batch(floors.b, calls)),
        Bench("turn_off", "run_turn, loop_guard=None", ours.session_turns(off, WARM, TIMED), "B"),
        Bench(
            "turn_guard",
            "run_turn, default loop guard",
            ours.session_turns(guard, WARM, TIMED),
            "turn_off",
        ),
        Bench(
            "turn_wrap",
            "run_turn, default loop guard + wrap_up_at=0.8",
            ours.session_turns(wrap, WARM, TIMED),
            "turn_off",
        ),
        Bench("tool_off", "run_tool(arguments=...), loop_guard=None", _tools(off, TIMED), "B"),
        Bench(
            "tool_guard",
            "run_tool(arguments=...), default loop guard",
            _tools(guard, TIMED),
            "tool_off",
        ),
        Bench("fingerprint", "LoopWatch.key + record, small arguments", _fingerprints(calls), "B"),
        Bench(
            "fingerprint_rows",
            "LoopWatch.key, a list of 1M ints",
            _big_keys({"data": list(range(1_000_000))}, calls),
            "fingerprint",
        ),
        Bench(
            "fingerprint_20mb",
            "LoopWatch.key, a 20 MB bytearray",
            _big_keys({"data": bytearray(20_000_000)}, 3),
            "fingerprint",
        ),
    ]

    def flush() -> None:
        floors.flush()
        tp.force_flush()

    return benches, flush


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    benches, flush = build(quick)
    rounds = 5 if quick else 15
    samples = harness.interleave(benches, rounds, warmup=1, progress="loops")
    flush()
    result = Result("loops", "loop guard and wrap-up, µs per call", rounds)
    harness.add_rows(result, benches, samples)
    result.info.append(
        f"turn samples: fresh session, {WARM} warm turns, {TIMED} timed; tool samples: "
        f"{TIMED} calls with new arguments each; suite took {time.perf_counter() - started:.0f} s"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
