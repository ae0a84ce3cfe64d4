"""The decorator style: an agent written as plain functions, no lambdas.

``@agent_turn`` makes a function one model call (priced from the usage in its
response), ``@tool_call`` makes it one permission-checked tool call, and
``agent_session`` runs them as one agent session with a budget, an iteration
cap and a circuit breaker. The "model" here is a pair of fake functions that
return what the OpenAI API returns (plain dicts of the same shape); swap in
``client.chat.completions.create(...)`` and nothing else changes.

Run it with ``python -m examples.decorated_agent``. ``configure()`` sends the
telemetry to a collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and
otherwise writes the spans to a local file and prints a per-session report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from techrevati.runtime import (
    CircuitBreaker,
    ModelPricing,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    configure,
    register_pricing,
)
from techrevati.runtime.decorators import agent_session, agent_turn, tool_call

MODEL = "gpt-4o-mini"


@agent_turn(MODEL, provider="openai")
def plan(task: str) -> dict[str, Any]:
    """One model call; its usage (4,000 of 5,000 prompt tokens cached) is read from the reply."""
    return {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"message": {"role": "assistant", "content": f"1. define {task} 2. example"}}],
        "usage": {
            "prompt_tokens": 5_000,
            "completion_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 4_000},
        },
    }


@agent_turn(MODEL, provider="openai")
def write(outline: str) -> Iterator[dict[str, Any]]:
    """A streamed model call: one span for the whole stream, priced from its last chunk."""
    for word in ("Retrieval", "-augmented", " generation", " looks things up first."):
        yield {"model": "gpt-4o-mini-2024-07-18", "choices": [{"delta": {"content": word}}]}
    # stream_options={"include_usage": True}: the final chunk carries the usage
    yield {"choices": [], "usage": {"prompt_tokens": 1_200, "completion_tokens": 300}}


@tool_call()
def lookup_term(term: str) -> str:
    """A read-only tool the writer may use."""
    return {"RAG": "retrieval-augmented generation"}.get(term, "unknown")


@tool_call()
def write_db(row: dict[str, str]) -> None:
    """Needs FULL_ACCESS: the writer's call is refused and this body never runs."""
    raise AssertionError("never runs")


def main() -> None:
    telemetry = configure(service_name="decorated-agent")
    register_pricing(
        MODEL,
        ModelPricing(input_per_million=0.15, output_per_million=0.60, cache_read_per_million=0.075),
    )
    permissions = PermissionEnforcer(
        PermissionPolicy(
            role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )

    with agent_session(
        "writer",
        phase="draft",
        permissions=permissions,
        circuit_breaker=CircuitBreaker("openai", failure_threshold=3),
        budget_usd=0.05,
        enforce_budget=True,
        max_iterations=5,
    ) as session:
        outline = plan("RAG")["choices"][0]["message"]["content"]
        fact = lookup_term("RAG")
        try:
            write_db({"draft": outline})
        except PermissionDeniedError as denied:
            print(f"write_db refused: {denied}")
        text = "".join(
            chunk["choices"][0]["delta"]["content"] for chunk in write(outline) if chunk["choices"]
        )
        print(f"plan -> {outline!r}\nlookup -> {fact!r}\nstream -> {text!r}")

    summary = session.summary()
    # summary()'s total_input_tokens is uncached input only (0.1.0's meaning);
    # the report printed at exit shows "input incl. cached".
    print("session usage (total_input_tokens = uncached input):")
    print(json.dumps(summary["usage"], indent=2))
    print(json.dumps(summary["per_model_cost"], indent=2))
    print(f"session cost {session.tracker.format_cost()} of a $0.05 budget")
    telemetry.shutdown()


if __name__ == "__main__":
    main()
