"""Throughput and ledger correctness under 2 threads and 1,000 asyncio sessions.

Correctness is asserted with exact counts, not timed: every turn booked in the
session ledger (turns, tokens, iterations), cost within float rounding, and the
metric points (token-usage histogram count and sum, duration count, cost sum)
read back from an in-memory metric reader.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

from techrevati.runtime import Orchestrator

from . import harness, ours
from .harness import Bench, Result
from .otelkit import (
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    Floors,
    in_memory_reader,
    meter_provider,
    tracer_provider,
)


def threaded(work: Callable[[int], object], threads: int, per_thread: int) -> Callable[[], float]:
    """A sample: ``threads`` threads each run ``work(per_thread)``; wall time per call."""

    def sample() -> float:
        barrier = threading.Barrier(threads + 1)

        def body() -> None:
            barrier.wait()
            work(per_thread)

        pool = [threading.Thread(target=body) for _ in range(threads)]
        for thread in pool:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in pool:
            thread.join()
        return (time.perf_counter() - start) / (threads * per_thread)

    return sample


class SharedSession:
    """One session whose turns come from several threads at once."""

    def __init__(self, orch: Orchestrator) -> None:
        self._cm = orch.session()
        self.session = self._cm.__enter__()
        self.turns = 0

    def work(self, n: int) -> None:
        run_turn = self.session.run_turn
        for _ in range(n):
            run_turn(ours.model_call, MODEL, ours.USAGE)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def _points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found: list[Any] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def metric_totals(reader: Any) -> dict[str, float]:
    """Token usage (count, input sum, output sum), duration count and cost sum."""
    out = {"input_sum": 0.0, "output_sum": 0.0, "token_count": 0.0, "dur_count": 0.0, "cost": 0.0}
    for point in _points(reader, "gen_ai.client.token.usage"):
        assert isinstance(point, HistogramDataPoint)
        kind = point.attributes.get("gen_ai.token.type")
        out["token_count"] += point.count
        out["input_sum" if kind == "input" else "output_sum"] += point.sum
    for point in _points(reader, "gen_ai.client.operation.duration"):
        assert isinstance(point, HistogramDataPoint)
        out["dur_count"] += point.count
    for point in _points(reader, "techrevati.cost.usd"):
        assert isinstance(point, NumberDataPoint)
        out["cost"] += point.value
    return out


def check_ledger(result: Result, name: str, tracker: Any, iterations: int, turns: int) -> None:
    expected_cost = turns * ours.TURN_COST
    ok = (
        tracker.turn_count == turns
        and iterations == turns
        and tracker.total_input_tokens == turns * INPUT_TOKENS
        and tracker.total_output_tokens == turns * OUTPUT_TOKENS
        and abs(tracker.total_cost() - expected_cost) <= 1e-9 * expected_cost
    )
    result.check(
        name,
        ok,
        f"{tracker.turn_count:,}/{turns:,} turns, {iterations:,} iterations, "
        f"{tracker.total_input_tokens:,}/{turns * INPUT_TOKENS:,} input tokens, "
        f"${tracker.total_cost():.6f}/${expected_cost:.6f}",
    )


def check_metrics(result: Result, name: str, reader: Any, turns: int) -> None:
    got = metric_totals(reader)
    expected_cost = turns * ours.TURN_COST
    ok = (
        got["token_count"] == 2 * turns
        and got["input_sum"] == turns * INPUT_TOKENS
        and got["output_sum"] == turns * OUTPUT_TOKENS
        and got["dur_count"] == turns
        and abs(got["cost"] - expected_cost) <= 1e-9 * expected_cost
    )
    result.check(
        name,
        ok,
        f"token points {got['token_count']:,.0f}/{2 * turns:,}, input sum "
        f"{got['input_sum']:,.0f}/{turns * INPUT_TOKENS:,}, durations {got['dur_count']:,.0f}/"
        f"{turns:,}, cost ${got['cost']:.6f}/${expected_cost:.6f}",
    )


class _DecoratedShared:
    """One ``agent_session`` entered here; decorated turns from threads that copy its context."""

    def __init__(self, tracer_provider: Any, decorated: Any) -> None:
        self.reader = in_memory_reader()
        self._cm = decorated.session(tracer_provider, meter_provider(self.reader))
        self.session = self._cm.__enter__()
        self._context = contextvars.copy_context()
        self._ask = decorated.ask

    def work(self, n: int) -> None:
        ask = self._ask

        def loop() -> None:
            for _ in range(n):
                ask()

        # Context propagation, as the decorators document for threads.
        self._context.copy().run(loop)

    def close(self) -> Any:
        self._cm.__exit__(None, None, None)
        return self.session


def _decorated_threads(tracer_provider: Any, per_thread: int) -> _DecoratedShared | None:
    try:
        from . import decorated
    except ImportError:  # a checkout from before the decorators
        return None
    return _DecoratedShared(tracer_provider, decorated)


def _decorated_async(result: Result, tracer_provider: Any, sessions: int, turns: int) -> None:
    """1,000 concurrent tasks, each in its own session of one ``agent_session`` object."""
    try:
        from . import decorated
    except ImportError:  # a checkout from before the decorators
        return
    reader = in_memory_reader()
    cm = decorated.session(tracer_provider, meter_provider(reader))

    async def one() -> Any:
        async with cm as session:
            for _ in range(turns):
                await decorated.ask_async()
            return session

    async def all_sessions() -> list[Any]:
        return list(await asyncio.gather(*(one() for _ in range(sessions))))

    start = time.perf_counter()
    done = asyncio.run(all_sessions())
    elapsed = time.perf_counter() - start
    total = sessions * turns
    result.add_row(
        "deco_async", "async @agent_turn, 1,000 concurrent agent_sessions", [elapsed / total]
    )
    result.info.append(
        f"asyncio, decorated: {sessions:,} sessions × {turns} turns in {elapsed:.2f} s = "
        f"{total / elapsed:,.0f} turns/s"
    )
    wrong = [s for s in done if s.tracker.turn_count != turns or s._ledger.iterations != turns]
    result.check(
        "1,000 decorated asyncio sessions: ledgers",
        not wrong and len(done) == sessions and len({id(s) for s in done}) == sessions,
        f"{len(done):,} distinct sessions of {turns} turns, {len(wrong)} with a wrong count",
    )
    check_metrics(result, "1,000 decorated asyncio sessions: metric points", reader, total)


class _Summed:
    """The sum of many trackers, read like one (for ``check_ledger``)."""

    def __init__(self, trackers: list[Any]) -> None:
        self.turn_count = sum(t.turn_count for t in trackers)
        self.total_input_tokens = sum(t.total_input_tokens for t in trackers)
        self.total_output_tokens = sum(t.total_output_tokens for t in trackers)
        self._cost = sum(t.total_cost() for t in trackers)

    def total_cost(self) -> float:
        return self._cost


async def _async_sessions(orch: Orchestrator, sessions: int, turns: int) -> list[Any]:
    async def call() -> str:
        await asyncio.sleep(0)  # yield: the 1,000 sessions really interleave
        return "ok"

    async def one() -> Any:
        async with orch.asession() as session:
            for _ in range(turns):
                await session.arun_turn(call, MODEL, ours.USAGE)
            return session

    return list(await asyncio.gather(*(one() for _ in range(sessions))))


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    ours.setup_pricing()
    floors = Floors()
    tp, _ = tracer_provider()
    reader = in_memory_reader()
    mp = meter_provider(reader)
    orch = ours.orchestrator(tp, mp)
    result = Result("concurrency", "2 threads and 1,000 asyncio sessions, µs per call", 0)

    # -- threads: interleaved throughput rounds ---------------------------------
    per_thread = 500 if quick else 2000
    shared = SharedSession(orch)
    own_sessions: list[Any] = []

    def own(n: int) -> None:
        with orch.session() as session:
            for _ in range(n):
                session.run_turn(ours.model_call, MODEL, ours.USAGE)
        own_sessions.append(session)

    benches = [
        Bench("B1", "B, 1 thread", harness.batch(floors.b, per_thread)),
        Bench("B2", "B, 2 threads", threaded(floors.b, 2, per_thread), "B1"),
        Bench("BM1", "BM, 1 thread", harness.batch(floors.bm, per_thread), "B1"),
        Bench("BM2", "BM, 2 threads", threaded(floors.bm, 2, per_thread), "B2"),
        Bench("turn1", "run_turn, 1 thread", harness.batch(shared.work, per_thread), "BM1"),
        Bench(
            "turn2",
            "run_turn, 2 threads, one shared session",
            threaded(shared.work, 2, per_thread),
            "BM2",
        ),
        Bench(
            "turn2own", "run_turn, 2 threads, a session each", threaded(own, 2, per_thread), "BM2"
        ),
    ]
    deco = _decorated_threads(tp, per_thread)
    if deco is not None:
        benches.append(
            Bench(
                "deco2",
                "@agent_turn, 2 threads, one agent_session",
                threaded(deco.work, 2, per_thread),
                "BM2",
            )
        )
    rounds = 3 if quick else 9
    samples = harness.interleave(benches, rounds, warmup=1, progress="threads")
    result.rounds = rounds
    harness.add_rows(result, benches, samples)
    shared_turns = (rounds + 1) * per_thread * 3  # turn1 + 2 threads of turn2, per round
    check_ledger(
        result,
        "2 threads, shared session: ledger",
        shared.session.tracker,
        shared.session._ledger.iterations,
        shared_turns,
    )
    shared.close()
    bad = [s for s in own_sessions if s.tracker.turn_count != per_thread]
    result.check(
        "2 threads, a session each: ledgers",
        not bad and len(own_sessions) == 2 * (rounds + 1),
        f"{len(own_sessions)} sessions, {len(bad)} with a wrong count",
    )
    own_turns = len(own_sessions) * per_thread
    check_metrics(result, "2 threads: metric points", reader, shared_turns + own_turns)
    if deco is not None:
        deco_turns = (rounds + 1) * per_thread * 2
        session = deco.close()
        check_ledger(
            result,
            "@agent_turn, 2 threads, one agent_session: ledger",
            session.tracker,
            session._ledger.iterations,
            deco_turns,
        )
        check_metrics(result, "@agent_turn, 2 threads: metric points", deco.reader, deco_turns)
    for bench in [b.name for b in benches if not b.name.startswith("B")]:
        per_call = harness.median(samples[bench])
        result.info.append(f"{bench}: {1 / per_call:,.0f} turns/s")

    # -- asyncio: 1,000 concurrent sessions -------------------------------------
    sessions, turns = 1000, (5 if quick else 20)
    areader = in_memory_reader()
    aorch = ours.orchestrator(tp, meter_provider(areader))
    start = time.perf_counter()
    done = asyncio.run(_async_sessions(aorch, sessions, turns))
    elapsed = time.perf_counter() - start
    total = sessions * turns
    result.add_row("async", "arun_turn, 1,000 concurrent asyncio sessions", [elapsed / total])
    result.info.append(
        f"asyncio: {sessions:,} sessions × {turns} turns in {elapsed:.2f} s = "
        f"{total / elapsed:,.0f} turns/s (one run, includes session open/close)"
    )
    wrong = [s for s in done if s.tracker.turn_count != turns or s._ledger.iterations != turns]
    result.check(
        "1,000 asyncio sessions: ledgers",
        not wrong and len(done) == sessions,
        f"{len(done):,} sessions of {turns} turns, {len(wrong)} with a wrong count",
    )
    merged = _Summed([s.tracker for s in done])
    check_ledger(result, "1,000 asyncio sessions: summed", merged, total, total)
    check_metrics(result, "1,000 asyncio sessions: metric points", areader, total)
    _decorated_async(result, tp, sessions, turns)
    tp.force_flush()
    result.info.append(f"suite took {time.perf_counter() - started:.0f} s")
    harness.emit(result)


if __name__ == "__main__":
    main()
