"""cProfile of the per-turn path: ``session.run_turn`` with metrics on, and the core alone.

    python -m bench.profile                 # 20,000 turns, top 30 by own time
    python -m bench.profile --turns 50000 --sort cumulative --top 40

Three sections: ``session.run_turn``; the core alone, driving
``telemetry.instrument.TurnCall.begin`` / ``finish`` directly (what ``@agent_turn``
and ``run_turn`` share, so the Orchestrator's own share shows as the
difference); and ``@agent_turn`` inside ``agent_session``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
from collections.abc import Callable

from . import ours
from .otelkit import MODEL, meter_provider, tracer_provider


def _profile(title: str, work: Callable[[], None], sort: str, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    print(f"== profile: {title} ==")
    print(out.getvalue().strip())
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--turns", type=int, default=20_000)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--metrics", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)

    from techrevati.runtime.telemetry.calls import instrument as core

    ours.setup_pricing()
    tp, _ = tracer_provider()
    orch = ours.orchestrator(tp, meter_provider() if args.metrics == "on" else None)
    turns = args.turns

    def run_turns() -> None:
        with orch.session() as session:
            run_turn = session.run_turn
            for _ in range(turns):
                run_turn(ours.model_call, MODEL, ours.USAGE)
        tp.force_flush()

    def core_turns() -> None:
        with orch.session() as session:
            scope = session._scope
            begin = core.TurnCall.begin
            usage = ours.USAGE
            for _ in range(turns):
                begin(scope, MODEL).finish(usage)
        tp.force_flush()

    def decorated_turns() -> None:
        from . import decorated

        cm = decorated.session(tp, meter_provider() if args.metrics == "on" else None)
        with cm:
            ask = decorated.ask
            for _ in range(turns):
                ask()
        tp.force_flush()

    run_turns()  # warm caches, imports and the span pipeline
    _profile(
        f"session.run_turn × {turns:,}, metrics {args.metrics}", run_turns, args.sort, args.top
    )
    _profile(
        f"core start_turn/end_turn × {turns:,}, metrics {args.metrics}",
        core_turns,
        args.sort,
        args.top,
    )
    _profile(
        f"@agent_turn × {turns:,}, metrics {args.metrics}", decorated_turns, args.sort, args.top
    )


if __name__ == "__main__":
    main()
