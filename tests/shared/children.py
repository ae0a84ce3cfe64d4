"""What a child process runs under a shared session of its parent.

Used by the multiprocessing test (spawned processes), the ASGI service and the
Celery worker alike: configure the session store from the URL, then make model
calls, in a session of its own or bare, under the context the transport carried.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from techrevati.runtime import (
    BudgetExceededError,
    MaxIterationsExceededError,
    ModelPricing,
    UsageSnapshot,
    agent_session,
    agent_turn,
    configure,
    register_pricing,
)

#: $1 per input token: one call with one input token costs exactly $1.
MODEL = "shared-test-model"
register_pricing(MODEL, ModelPricing(input_per_million=1_000_000.0, output_per_million=0.0))

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


def set_up(url: str) -> None:
    """What every process of the tree does once: name the same Redis."""
    configure(session_store=url, spans_file=False, report=False, metrics=False)


@agent_turn(MODEL, usage=UsageSnapshot(input_tokens=1, output_tokens=0))
def one_call() -> str:
    return "ok"


def calls(attempts: int, *, own_session: bool) -> dict[str, Any]:
    """``attempts`` model calls; counts what ran and which refusal stopped the rest."""
    outcome: dict[str, Any] = {"ran": 0, "refused": 0, "errors": [], "messages": []}

    def run() -> None:
        for _ in range(attempts):
            try:
                one_call()
            except (MaxIterationsExceededError, BudgetExceededError) as exc:
                outcome["refused"] += 1
                outcome["errors"].append(type(exc).__name__)
                outcome["messages"].append(str(exc))
            else:
                outcome["ran"] += 1

    if own_session:
        with agent_session("researcher", tracer_provider=_provider) as session:
            run()
            left = session.remaining()
            outcome["remaining"] = (left.calls, left.budget_usd, left.limit)
        session_span = next(
            s for s in _exporter.get_finished_spans() if s.name.startswith("invoke_agent")
        )
        outcome["trace_id"] = format(session_span.context.trace_id, "032x")
        outcome["attributes"] = {k: v for k, v in (session_span.attributes or {}).items()}
    else:
        run()
    return outcome


def process_main(
    url: str, carrier: dict[str, str], attempts: int, own_session: bool, results: Any
) -> None:
    """A spawned process: extract the carried context, attach it, call."""
    from opentelemetry import context, propagate

    set_up(url)
    token = context.attach(propagate.extract(carrier))
    try:
        results.put(calls(attempts, own_session=own_session))
    except BaseException as exc:  # report, so the parent fails with the reason
        results.put({"crash": repr(exc)})
    finally:
        context.detach(token)


def hang_in_a_call(url: str, carrier: dict[str, str], started: Any) -> None:
    """Admitted under the remote session, then stuck in the call until killed."""
    import time

    from opentelemetry import context, propagate

    set_up(url)
    context.attach(propagate.extract(carrier))

    @agent_turn(MODEL, usage=UsageSnapshot(input_tokens=1, output_tokens=0))
    def stuck() -> str:
        started.set()
        time.sleep(600)
        return "never"

    stuck()


def bare_client_main(
    url: str, carrier: dict[str, str], api_url: str, attempts: int, results: Any
) -> None:
    """A spawned process that opens no session: a bare ``openai`` client under the context."""
    from opentelemetry import context, propagate, trace

    from techrevati.runtime.telemetry import semconv as sc

    try:
        set_up(url)
        exporter = InMemorySpanExporter()
        trace.get_tracer_provider().add_span_processor(  # type: ignore[attr-defined]
            SimpleSpanProcessor(exporter)
        )
        import openai

        client = openai.OpenAI(base_url=api_url, api_key="k", max_retries=0)
        outcome: dict[str, Any] = {"ran": 0, "refused": 0, "errors": [], "messages": []}
        token = context.attach(propagate.extract(carrier))
        try:
            for _ in range(attempts):
                try:
                    client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}]
                    )
                except (MaxIterationsExceededError, BudgetExceededError) as exc:
                    outcome["refused"] += 1
                    outcome["errors"].append(type(exc).__name__)
                    outcome["messages"].append(str(exc))
                else:
                    outcome["ran"] += 1
        finally:
            context.detach(token)
        outcome["limit_hits"] = sum(
            1
            for span in exporter.get_finished_spans()
            for event in span.events
            if event.name == sc.EVENT_LIMIT_HIT
        )
        results.put(outcome)
    except BaseException as exc:  # report, so the parent fails with the reason
        results.put({"crash": repr(exc)})
