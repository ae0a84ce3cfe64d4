"""techrevati-runtime 0.4.0 from PyPI, measured with the same harness and floors.

Runs in its own venv (``bench/.venv-040``, made by the driver) because 0.4.0 is
imported as ``techrevati.runtime`` too. Floor B and BM are measured here, in
this process, so the comparison with the current package is ratio-to-floor
against ratio-to-floor.

0.4.0 has no turn spans of its own: its telemetry is the ``OpenTelemetrySink``
(session and tool spans from events) and ``OpenTelemetryUsageSink`` (token and
cost metrics per turn). That is its instrumented configuration, and the one
measured here, with the same budget (enforced), cap, permission check and
pricing as the current package's suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from techrevati.runtime import (  # type: ignore[attr-defined]  # 0.4.0's API
    AgentSession,
    CircuitBreaker,
    ModelPricing,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    register_pricing,
)
from techrevati.runtime.otel import OpenTelemetrySink, OpenTelemetryUsageSink

from . import harness, samples
from .harness import Bench, Result
from .otelkit import (
    INPUT_PER_MILLION,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_PER_MILLION,
    OUTPUT_TOKENS,
    Floors,
    meter_provider,
    tracer_provider,
)

TIMED_TURNS = 100
WARM_TURNS = 10
USAGE = UsageSnapshot(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)


def model_call() -> str:
    return "ok"


def tool_call() -> str:
    return "fact"


def agent(tracer: Any, meter: Any, **kwargs: Any) -> Any:
    """0.4.0's instrumented configuration; ``tracer=None`` means no telemetry sinks at all."""
    if tracer is not None:
        kwargs["event_sink"] = OpenTelemetrySink(tracer=tracer, provider_name="bench")
        kwargs["usage_sink"] = OpenTelemetryUsageSink(meter=meter, provider_name="bench")
    return AgentSession(
        role="writer",
        phase="draft",
        budget_usd=1e9,
        enforce_budget=True,
        max_iterations=10**9,
        permissions=PermissionEnforcer(
            PermissionPolicy(
                role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
                tool_requirements={"lookup": PermissionMode.READ_ONLY},
            )
        ),
        **kwargs,
    )


def session_turns(orch: Any, warm: int, timed: int) -> Callable[[], float]:
    return samples.session_turns(orch, (model_call, MODEL, USAGE), warm, timed)


def nth_turns(orch: Any, warm: int, sessions: int) -> Callable[[], float]:
    return samples.nth_turns(orch, (model_call, MODEL, USAGE), warm, sessions)


def session_tools(orch: Any, timed: int) -> Callable[[], float]:
    return samples.session_tools(orch, tool_call, timed)


class DeepSession:
    """One long-lived 0.4.0 session pre-filled to ``depth`` turns; samples extend it."""

    def __init__(self, orch: Any, depth: int, timed: int) -> None:
        self._cm = orch.session()
        self.session = self._cm.__enter__()
        for _ in range(depth):
            self.session.run_turn(model_call, MODEL, USAGE)
        self.timed = timed

    def sample(self) -> float:
        run_turn = self.session.run_turn
        start = time.perf_counter()
        for _ in range(self.timed):
            run_turn(model_call, MODEL, USAGE)
        return (time.perf_counter() - start) / self.timed

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def main() -> None:
    quick = harness.parse_args()
    started = time.perf_counter()
    register_pricing(MODEL, ModelPricing(INPUT_PER_MILLION, OUTPUT_PER_MILLION))
    floors = Floors()
    tp, _ = tracer_provider()
    mp = meter_provider()
    tracer = tp.get_tracer("techrevati.runtime")
    meter = mp.get_meter("techrevati.runtime")
    plain = agent(tracer, meter)
    breaker = agent(tracer, meter, circuit_breaker=CircuitBreaker("model-api"))
    bare = agent(None, None)
    calls = 300 if quick else 500
    deep_depth = 300 if quick else 1000
    deep = DeepSession(plain, deep_depth, 20 if quick else 50)
    benches = [
        Bench("B", "B   raw OTel span, 8 attributes", harness.batch(floors.b, calls)),
        Bench("BM", "BM  B + 4 naive SDK metric records", harness.batch(floors.bm, calls), "B"),
        Bench("turn_first", "0.4.0 run_turn at depth 0 (1st turn)", nth_turns(plain, 0, 50), "B"),
        Bench("turn_d10", "0.4.0 run_turn at depth 10 (11th turn)", nth_turns(plain, 10, 30), "B"),
        Bench(
            "turn_bare_d10",
            "0.4.0 run_turn at depth 10, no telemetry sinks",
            nth_turns(bare, 10, 30),
            "B",
        ),
        Bench(
            "turn_on",
            "0.4.0 run_turn, depth 10–110",
            session_turns(plain, WARM_TURNS, TIMED_TURNS),
            "B",
        ),
        Bench(
            "turn_breaker",
            "0.4.0 run_turn + breaker, depth 10–110",
            session_turns(breaker, WARM_TURNS, TIMED_TURNS),
            "B",
        ),
        Bench("turn_deep", f"0.4.0 run_turn at depth ≈{deep_depth:,}", deep.sample, "B"),
        Bench(
            "tool_on",
            "0.4.0 run_tool + permission",
            session_tools(plain, TIMED_TURNS),
            "B",
        ),
    ]
    rounds = 5 if quick else 15
    samples = harness.interleave(benches, rounds, warmup=1, progress="0.4.0")
    deep.close()
    floors.flush()
    tp.force_flush()
    result = Result("v040", "techrevati-runtime 0.4.0 (PyPI), µs per call", rounds)
    harness.add_rows(result, benches, samples)
    result.info.append(
        f"turn samples: fresh session, {WARM_TURNS} warm turns, {TIMED_TURNS} timed "
        f"(depth {WARM_TURNS}–{WARM_TURNS + TIMED_TURNS}); the deep session starts at "
        f"{deep_depth} and grows by {deep.timed} turns per round; suite took "
        f"{time.perf_counter() - started:.0f} s"
    )
    harness.emit(result)


if __name__ == "__main__":
    main()
