"""OpenTelemetry's real ThreadingInstrumentor with our limits, in its own venv.

Usage: ``python threading_scenario.py``. Prints one JSON line (after
``RESULT_MARK``): what ran and what was refused in threads and executors whose
OpenTelemetry context the instrumentor carried in from a session.
"""

from __future__ import annotations

import json
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techrevati.runtime import (
    MaxIterationsExceededError,
    ModelPricing,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
    tool_call,
)
from techrevati.runtime.telemetry.calls.instrument import current_session

RESULT_MARK = "THREADING-RESULT "


@agent_turn("model-a", usage=UsageSnapshot(1000, 100))
def ask(n: int) -> int:
    return n


@tool_call()
def lookup(term: str) -> str:
    return term


def attempt(n: int) -> str:
    try:
        ask(n)
    except MaxIterationsExceededError:
        return "refused"
    return "ran"


def main() -> None:
    ThreadingInstrumentor().instrument()
    register_pricing("model-a", ModelPricing(3.0, 15.0))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    results: dict[str, Any] = {}

    # The regression of issue 20: 4 turns in one thread under max_iterations=2.
    outcomes: list[str] = []
    with agent_session("w", max_iterations=2, tracer_provider=provider) as session:
        thread = threading.Thread(target=lambda: outcomes.extend(attempt(n) for n in range(4)))
        thread.start()
        thread.join()
    results["thread"] = {
        "outcomes": outcomes,
        "turns": session.tracker.turn_count,
        "cost": round(session.tracker.total_cost(), 9),
    }

    # A thread and an executor in one session under max_iterations=3.
    mixed: list[str] = []
    with agent_session("x", max_iterations=3, tracer_provider=provider) as session:
        thread = threading.Thread(target=lambda: mixed.extend(attempt(n) for n in (1, 2)))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(max_workers=2) as pool:
            mixed.extend(pool.map(attempt, range(3)))
    results["mixed"] = {"outcomes": sorted(mixed), "iterations": session._iteration_count}

    # A tool in an instrumented thread belongs to the session.
    seen: list[bool] = []
    with agent_session("t", tracer_provider=provider) as session:
        thread = threading.Thread(
            target=lambda: seen.append(lookup("x") == "x" and current_session() is session._scope)
        )
        thread.start()
        thread.join()
    tools = [s for s in exporter.get_finished_spans() if s.name == "execute_tool lookup"]
    results["tool"] = {
        "in_session": seen,
        "agent": [str((s.attributes or {}).get("gen_ai.agent.name")) for s in tools],
    }

    # A sub-agent that opens its own session in a pool task: the planner's child (its
    # cap of 3 holds over three sub-agents of 2 calls), with nothing said.
    def sub_agent(topic: int) -> list[str]:
        with agent_session(f"researcher-{topic}", max_iterations=5, tracer_provider=provider):
            return [attempt(n) for n in range(2)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with (
            agent_session("planner", max_iterations=3, tracer_provider=provider),
            ThreadPoolExecutor(max_workers=3) as pool,
        ):
            runs = list(pool.map(sub_agent, range(3)))
    results["sub_agents"] = {
        "outcomes": sorted(o for run in runs for o in run),
        "said": [str(w.message) for w in caught if "was opened on a thread" in str(w.message)],
    }
    print(RESULT_MARK + json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
