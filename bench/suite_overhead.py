"""Per-call overhead of a turn and a tool call against the raw-OTel floors, one process.

Rows (every one sampled once per round, rounds interleaved):

* B, BM — the floors (see ``otelkit``); and a span shaped as a turn's (4
  attributes at start, 6 written at its end), the SDK work a turn cannot avoid.
* ``session.run_turn`` — budget enforced, iteration cap, priced usage, our limits
  processor, on the user's SDK providers; metrics on (against BM) and off
  (no MeterProvider configured: against B). Each sample is a fresh session,
  10 warm turns, then 100 timed turns (depth 10–110), the same shape the 0.4.0
  suite uses.
* ``@agent_turn`` — the decorator in an ``agent_session``, same configuration.
* ``session.run_tool`` / ``@tool_call`` with a permission check, against B.
* The same with no OpenTelemetry configured by the user: the package's private
  fallback provider (limits processor only), against B.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import harness, ours
from .harness import Bench, Result
from .otelkit import Floors, meter_provider, tracer_provider

TIMED_TURNS = 100
WARM_TURNS = 10


def _decorator_benches(tp: object, mp: object, calls: int) -> list[Bench]:
    try:
        from . import decorated
    except ImportError:  # a checkout from before the decorators
        return []
    return decorated.overhead_benches(tp, mp, calls, WARM_TURNS, TIMED_TURNS)


def build(quick: bool) -> tuple[list[Bench], Callable[[], None]]:
    ours.setup_pricing()
    floors = Floors()
    tp, _ = tracer_provider()
    mp = meter_provider()
    calls = 300 if quick else 500
    on = ours.orchestrator(tp, mp)
    off = ours.orchestrator(tp, None)
    fallback = ours.orchestrator(None, None)
    benches = [
        Bench("B", "B   raw OTel span, 8 attributes", harness.batch(floors.b, calls)),
        Bench("BM", "BM  B + 4 naive SDK metric records", harness.batch(floors.bm, calls), "B"),
        Bench(
            "BM_bare",
            "BM with no parent span (no exemplars)",
            harness.batch(floors.bm_bare, calls),
            "B",
        ),
        Bench(
            "turn_shape",
            "B shaped as a turn: 4 + 6 attributes, no techrevati",
            harness.batch(floors.turn_shape, calls),
            "B",
        ),
        Bench(
            "turn_on",
            "session.run_turn, metrics on, depth 10–110",
            ours.session_turns(on, WARM_TURNS, TIMED_TURNS),
            "BM",
        ),
        Bench(
            "turn_first",
            "session.run_turn at depth 0 (1st turn)",
            ours.nth_turns(on, 0, 50),
            "BM",
        ),
        Bench(
            "turn_d10",
            "session.run_turn at depth 10 (11th turn)",
            ours.nth_turns(on, 10, 30),
            "BM",
        ),
        Bench(
            "turn_off_d10",
            "session.run_turn at depth 10, metrics off",
            ours.nth_turns(off, 10, 30),
            "B",
        ),
        Bench(
            "turn_off",
            "session.run_turn, metrics off",
            ours.session_turns(off, WARM_TURNS, TIMED_TURNS),
            "B",
        ),
        Bench(
            "tool_on",
            "session.run_tool + permission, metrics on",
            ours.session_tools(on, TIMED_TURNS),
            "B",
        ),
        Bench(
            "tool_off",
            "session.run_tool + permission, metrics off",
            ours.session_tools(off, TIMED_TURNS),
            "B",
        ),
        Bench(
            "turn_fallback",
            "session.run_turn, no OTel configured",
            ours.session_turns(fallback, WARM_TURNS, TIMED_TURNS),
            "B",
        ),
        Bench(
            "tool_fallback",
            "session.run_tool + permission, no OTel configured",
            ours.session_tools(fallback, TIMED_TURNS),
            "B",
        ),
    ]
    benches += _decorator_benches(tp, mp, calls)

    def flush() -> None:
        floors.flush()
        tp.force_flush()

    return benches, flush


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    benches, flush = build(quick)
    rounds = 5 if quick else 15
    samples = harness.interleave(benches, rounds, warmup=1, progress="overhead")
    flush()
    result = Result("overhead", "per-call overhead, µs per call", rounds)
    harness.add_rows(result, benches, samples)
    result.info.append(
        f"turn samples: fresh session, {WARM_TURNS} warm turns, {TIMED_TURNS} timed "
        f"(depth {WARM_TURNS}–{WARM_TURNS + TIMED_TURNS}); suite took "
        f"{time.perf_counter() - started:.0f} s"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
