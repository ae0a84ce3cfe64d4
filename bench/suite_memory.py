"""Retained memory: resident set size (RSS) over long runs, and tracemalloc per call.

RSS (issue 13, point 6), each scenario in a fresh subprocess without
tracemalloc: after a warm-up (rings, tails, allocator pools and the registry's
finished window all full), RSS is read, the scenario runs 200,000 times, spans
are flushed, and RSS is read again. Target: within 10 MB.

* ``orchestrator``: one reused ``Orchestrator``, one session per request
  (2 turns and 1 permission-checked tool call each).
* ``agent_session``: a new ``agent_session`` per request with ``@agent_turn`` /
  ``@tool_call`` inside it (the way a request handler would write it).
* ``long_session``: turns in one long session with a ``RingBufferUsageSink``.

tracemalloc, below, attributes what remains to source files:

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
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

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

    # Past two sweeps of the registry (1,024 finished workers kept, swept at
    # about twice that), so what follows only oscillates within that window.
    for _ in range(2500):
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


# --- RSS over long runs (each scenario in its own process) ---------------------

RSS_SCENARIOS = ("orchestrator", "agent_session", "long_session", "embedded_report")
RSS_LIMIT_MB = 10.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size (Linux ``/proc/self/statm``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_workload(scenario: str) -> tuple[Callable[[], object], Callable[[], object], str]:
    """(one request, flush, what one request is) for a scenario."""
    tp, _ = tracer_provider()
    mp = meter_provider()
    if scenario == "orchestrator":
        orch = ours.orchestrator(tp, mp)

        def one() -> object:
            with orch.session() as session:
                session.run_turn(ours.model_call, MODEL, ours.USAGE)
                session.run_tool("lookup", ours.tool_call)
                session.run_turn(ours.model_call, MODEL, ours.USAGE)
            return None

        return one, tp.force_flush, "sessions"
    if scenario == "agent_session":
        from . import decorated

        def one() -> object:
            with decorated.session(tp, mp):
                decorated.ask()
                decorated.lookup()
                decorated.ask()
            return None

        return one, tp.force_flush, "sessions"
    if scenario == "long_session":
        orch = ours.orchestrator(tp, mp, usage_sink=RingBufferUsageSink())
        cm = orch.session()
        session = cm.__enter__()  # stays open for the whole process
        run_turn = session.run_turn

        def one() -> object:
            return run_turn(ours.model_call, MODEL, ours.USAGE)

        return one, tp.force_flush, "turns"
    if scenario == "embedded_report":
        # configure()'s embedded mode with the exit report on: the report keeps a
        # bounded sample of spans and folds older traces into totals (report/fold.py).
        from techrevati.runtime import agent_session, configure

        from . import decorated

        handle = configure(service_name="bench-report", spans_file=False, set_global=False)

        def one() -> object:
            with agent_session("writer", tracer_provider=handle.tracer_provider):
                decorated.ask()
                decorated.lookup()
                decorated.ask()
            return None

        return one, handle.force_flush, "sessions"
    raise ValueError(f"unknown RSS scenario {scenario!r}; expected one of {RSS_SCENARIOS}")


def rss_scenario(scenario: str, count: int, warm: int) -> dict[str, object]:
    """Run one scenario in this process and return its RSS figures (bytes)."""
    ours.setup_pricing()
    one, flush, unit = _rss_workload(scenario)
    for _ in range(warm):
        one()
    flush()
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    for _ in range(count):
        one()
    seconds = time.perf_counter() - started
    flush()
    gc.collect()
    after = rss_bytes()
    return {
        "scenario": scenario,
        "count": count,
        "warm": warm,
        "unit": unit,
        "before": before,
        "after": after,
        "seconds": seconds,
    }


def rss_suite(result: Result, count: int, warm: int) -> None:
    for scenario in RSS_SCENARIOS:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.suite_memory", "--rss", scenario, str(count), str(warm)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        growth = (figures["after"] - figures["before"]) / 1e6
        result.add_row(
            f"rss_{scenario}",
            f"RSS growth, {scenario}, {count:,} {figures['unit']} after {warm:,} warm-up",
            [growth * 1e6],
            unit="B",
        )
        result.check(
            f"RSS flat: {scenario}",
            growth <= RSS_LIMIT_MB,
            f"{figures['before'] / 1e6:.1f} MB -> {figures['after'] / 1e6:.1f} MB "
            f"({growth:+.2f} MB over {count:,} {figures['unit']}, limit {RSS_LIMIT_MB:.0f} MB; "
            f"{figures['seconds']:.0f} s)",
        )


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--rss":
        scenario, count, warm = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(rss_scenario(scenario, count, warm)))
        return
    quick = harness.parse_args()
    started = time.perf_counter()
    result = Result("memory", "retained memory (RSS over long runs; tracemalloc), bytes", 1)
    rss_suite(result, *((20_000, 5_000) if quick else (200_000, 20_000)))
    ours.setup_pricing()
    tracemalloc.start()  # after the RSS runs, which must not pay for it
    per_turn(result, 10_000 if quick else 100_000)
    sessions = 1_000 if quick else 10_000
    per_session(result, sessions, "Orchestrator")
    with contextlib.suppress(ImportError):  # a checkout from before the decorators
        per_session(result, sessions, "agent_session + decorators")
    result.info.append(
        "the AgentRegistry keeps active workers and the 1,024 most recently finished "
        "(swept when it doubles), so its part oscillates around zero once warm"
    )
    tracemalloc.stop()
    result.info.append(f"suite took {time.perf_counter() - started:.0f} s")
    harness.emit(result)


if __name__ == "__main__":
    main()
