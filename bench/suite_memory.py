"""Retained memory, measured with tracemalloc (a whole process of its own).

* Per turn: 100,000 turns in one session with a ``RingBufferUsageSink`` (the
  tracker then keeps a bounded tail). Ring and tail are filled before the first
  snapshot, so what grows afterwards is what every further turn keeps.
* Per finished session: 10,000 sessions (2 turns and 1 permission-checked tool
  call each) on one Orchestrator, and the same through one ``agent_session``
  with ``@agent_turn`` / ``@tool_call``, measured once their spans are exported
  (BatchSpanProcessor into a dropping exporter, ``force_flush``).

Tracing starts before the warm-up so a replaced ring entry frees what it
displaced; each figure is (snapshot after − snapshot before) / count, with the
largest growing source files listed.
"""

from __future__ import annotations

import contextlib
import gc
import time
import tracemalloc
from collections.abc import Callable

from techrevati.runtime import RingBufferUsageSink

from . import harness, ours
from .harness import Result
from .otelkit import MODEL, meter_provider, tracer_provider


def _settle(flush: Callable[[], object]) -> tracemalloc.Snapshot:
    flush()
    gc.collect()
    return tracemalloc.take_snapshot()


def _growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, count: int) -> list[str]:
    stats = after.compare_to(before, "filename")
    top = sorted(stats, key=lambda s: s.size_diff, reverse=True)[:4]
    lines = []
    for stat in top:
        if stat.size_diff / count < 0.1:
            continue
        name = stat.traceback[0].filename
        short = name.split("site-packages/")[-1].split("/src/")[-1]
        lines.append(f"{short} {stat.size_diff / count:+,.1f} B")
    return lines


def _total(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def per_turn(result: Result, turns: int) -> None:
    tp, _ = tracer_provider()
    orch = ours.orchestrator(tp, meter_provider(), usage_sink=RingBufferUsageSink())
    with orch.session() as session:
        run_turn = session.run_turn
        for _ in range(5000):  # fill the ring (1,000) and the tracker's tail
            run_turn(ours.model_call, MODEL, ours.USAGE)
        before = _settle(tp.force_flush)
        started = time.perf_counter()
        for _ in range(turns):
            run_turn(ours.model_call, MODEL, ours.USAGE)
        seconds = time.perf_counter() - started
        after = _settle(tp.force_flush)
        booked = session.tracker.turn_count
    growth = _total(before, after)
    result.add_row(
        "per_turn",
        f"retained per turn, {turns:,} turns, ring-buffer usage sink",
        [growth / turns],
        unit="B",
    )
    result.check(
        "long session ledger", booked == 5000 + turns, f"{booked:,} turns booked (all counted)"
    )
    top = _growth(before, after, turns)
    result.info.append(
        f"per turn: {growth:+,} B over {turns:,} turns ({seconds:.1f} s under tracemalloc)"
        + (f"; largest: {'; '.join(top)}" if top else "")
    )


def per_session(result: Result, sessions: int, flavour: str) -> None:
    tp, _ = tracer_provider()
    one: Callable[[], object]
    if flavour == "Orchestrator":
        orch = ours.orchestrator(tp, meter_provider())

        def one() -> object:
            with orch.session() as session:
                session.run_turn(ours.model_call, MODEL, ours.USAGE)
                session.run_tool("lookup", ours.tool_call)
                session.run_turn(ours.model_call, MODEL, ours.USAGE)
            return session

        name = "per_session"
    else:
        from . import decorated

        cm = decorated.session(tp, meter_provider())

        def one() -> object:
            with cm as session:
                decorated.ask()
                decorated.lookup()
                decorated.ask()
            return session

        name = "per_session_decorated"

    for _ in range(200):
        one()
    before = _settle(tp.force_flush)
    for _ in range(sessions):
        one()
    after = _settle(tp.force_flush)
    growth = _total(before, after)
    stats = after.compare_to(before, "filename")
    registry = sum(
        s.size_diff for s in stats if s.traceback[0].filename.endswith("agent_lifecycle.py")
    )
    result.add_row(
        name,
        f"retained per finished session: {flavour}, {sessions:,} sessions",
        [growth / sessions],
        unit="B",
    )
    result.add_row(
        name + "_registry",
        "  of which AgentRegistry worker records",
        [registry / sessions],
        unit="B",
    )
    top = _growth(before, after, sessions)
    result.info.append(
        f"per session ({flavour}): {growth:+,} B over {sessions:,} sessions"
        + (f"; largest: {'; '.join(top)}" if top else "")
    )


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    ours.setup_pricing()
    tracemalloc.start()
    result = Result("memory", "retained memory (tracemalloc), bytes", 1)
    per_turn(result, 10_000 if quick else 100_000)
    sessions = 1_000 if quick else 10_000
    per_session(result, sessions, "Orchestrator")
    with contextlib.suppress(ImportError):  # a checkout from before the decorators
        per_session(result, sessions, "agent_session + decorators")
    result.info.append(
        "the AgentRegistry keeps every worker record (API contract: registry.get(worker_id) "
        "works after the session ends), so that part grows by design"
    )
    tracemalloc.stop()
    result.info.append(f"suite took {time.perf_counter() - started:.0f} s")
    harness.emit(result)


if __name__ == "__main__":
    main()
