"""Fleet scopes through the core: Orchestrator(fleet=...), agent_session(fleet=...)
and configure(fleet=[...]), with our turns and with the official OpenAI
instrumentation's spans, across sessions and processes.

The only stand-in is the OpenAI API itself (a local HTTP server counting the
requests it gets); Redis, the OTel SDK, the openai client and the
instrumentation are real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fake_openai import FakeOpenAI, instrumented_openai, serve
from techrevati.runtime import (
    BudgetExceededError,
    FleetLimits,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    agent_session,
    agent_turn,
    register_pricing,
)

from . import test_processes as procs
from . import workers
from .redis_server import RedisServer

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-test-2026-01-01",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
}
# 1000 input at $2/M + 100 output at $8/M
PER_CALL = (1000 * 2.0 + 100 * 8.0) / 1e6  # 0.0028
NANO = 1_000_000_000


@pytest.fixture
def fake_api() -> Iterator[FakeOpenAI]:
    with serve(FakeOpenAI(COMPLETION)) as fake:
        yield fake


@pytest.fixture
def instrumented() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with instrumented_openai() as pair:
        yield pair


def limit_events(exporter: InMemorySpanExporter) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for span in exporter.get_finished_spans():
        for event in span.events:
            if event.name == "techrevati.limit.hit":
                found.append((span.name, dict(event.attributes or {})))
    return found


def sessions_calling_openai(
    url: str, provider: TracerProvider, tenant: FleetLimits, roles: tuple[str, ...], calls: int
) -> list[BaseException]:
    """Each role opens a session and makes ``calls`` calls through the real client."""
    client = openai.OpenAI(base_url=url, api_key="test-key", max_retries=0)
    refusals: list[BaseException] = []
    for role in roles:
        orch = Orchestrator(role=role, phase="draft", fleet=tenant, tracer_provider=provider)
        try:
            with orch.session():
                for _ in range(calls):
                    client.chat.completions.create(
                        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
                    )
        except (MaxIterationsExceededError, BudgetExceededError) as err:
            refusals.append(err)
    return refusals


def test_openai_instrumentation_calls_count_against_the_fleet_cap(
    redis_server: RedisServer,
    fake_api: FakeOpenAI,
    instrumented: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = instrumented
    register_pricing("gpt-test", ModelPricing(2.0, 8.0))
    tenant = FleetLimits(redis_server.url, scope="tenant-42", max_calls=3)

    refusals = sessions_calling_openai(fake_api.url, provider, tenant, ("a", "b"), 2)

    assert len(fake_api.requests) == 3  # the 4th request was never sent
    assert len(refusals) == 1
    refused = refusals[0]
    assert isinstance(refused, MaxIterationsExceededError)
    assert (refused.scope, refused.max_iterations) == ("tenant-42", 3)
    usage = tenant.usage()
    assert (usage.calls, usage.reserved_usd, usage.in_flight) == (3, 0.0, 0)
    assert round(usage.spent_usd * NANO) == round(3 * PER_CALL * NANO)
    assert limit_events(exporter) == [
        (
            "invoke_agent b",
            {
                "techrevati.limit.kind": "fleet_calls",
                "techrevati.limit.enforced": True,
                "error.type": "MaxIterationsExceededError",
                "techrevati.fleet.scope": "tenant-42",
                "message": str(refused),
            },
        )
    ]
    chats: list[ReadableSpan] = [
        s for s in exporter.get_finished_spans() if s.name.startswith("chat")
    ]
    assert len(chats) == 3


def test_openai_instrumentation_calls_spend_the_fleet_budget(
    redis_server: RedisServer,
    fake_api: FakeOpenAI,
    instrumented: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Budget $0.0070 at $0.0028 a call: calls 1 and 2 leave $0.0056 committed,
    call 3 crosses ($0.0084, within budget + one call) and call 4 is refused
    before its request is sent."""
    provider, exporter = instrumented
    register_pricing("gpt-test", ModelPricing(2.0, 8.0))
    tenant = FleetLimits(redis_server.url, scope="tenant-7", budget_usd=0.007)

    refusals = sessions_calling_openai(fake_api.url, provider, tenant, ("a", "b"), 2)

    assert len(fake_api.requests) == 3
    assert len(refusals) == 1
    refused = refusals[0]
    assert isinstance(refused, BudgetExceededError)
    assert refused.scope == "tenant-7" and refused.budget_usd == 0.007
    assert round(refused.current_cost_usd * NANO) == round(3 * PER_CALL * NANO)
    usage = tenant.usage()
    assert round(usage.spent_usd * NANO) == round(3 * PER_CALL * NANO)
    assert usage.spent_usd <= 0.007 + PER_CALL
    assert tenant.learned_cost("gpt-test") == pytest.approx(PER_CALL)
    [(span, event)] = limit_events(exporter)
    assert span == "invoke_agent b"
    assert event["techrevati.limit.kind"] == "fleet_budget"
    assert event["techrevati.fleet.scope"] == "tenant-7"


def test_orchestrator_sessions_in_four_processes_share_one_cap(redis_server: RedisServer) -> None:
    options = {"scope": "orch-cap", "max_calls": 50}
    barrier, results = procs.CTX.Barrier(4), procs.CTX.Queue()
    started = [
        procs.start(workers.orchestrator_worker, redis_server.url, options, 30, barrier, results)
        for _ in range(4)
    ]
    reports = procs.collect(results, 4)
    procs.join(started)

    assert sum(r["ran"] for r in reports) == 50
    assert sum(r["refused"] for r in reports) == 4 * 30 - 50
    assert all(r["scopes"] == ["orch-cap"] for r in reports if r["refused"])
    usage = FleetLimits(redis_server.url, **options).usage()  # type: ignore[arg-type]
    assert (usage.calls, usage.in_flight) == (50, 0)
    assert round(usage.spent_usd * NANO) == 50 * round(workers.TURN_COST * NANO)


def test_a_failed_turn_stays_counted_and_frees_its_reservation(redis_server: RedisServer) -> None:
    tenant = FleetLimits(redis_server.url, scope="fail", budget_usd=1.0, max_calls=10)
    orch = Orchestrator(role="w", phase="p", fleet=tenant)

    def boom() -> str:
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError), orch.session() as session:
        session.run_turn(boom, model="gpt-4o-mini")
    usage = tenant.usage()
    assert (usage.calls, usage.spent_usd, usage.reserved_usd, usage.in_flight) == (1, 0.0, 0.0, 0)


def test_agent_session_fleet_counts_decorated_turns(redis_server: RedisServer) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    register_pricing("gpt-test", ModelPricing(2.0, 8.0))
    tenant = FleetLimits(redis_server.url, scope="writers", max_calls=2)
    bodies: list[str] = []

    @agent_turn(provider="openai")
    def ask(prompt: str) -> dict[str, Any]:
        bodies.append(prompt)
        return {"model": "gpt-test", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    with (
        pytest.raises(MaxIterationsExceededError) as refused,
        agent_session("writer", fleet=tenant, tracer_provider=provider),
    ):
        for prompt in ("one", "two", "three"):
            ask(prompt)
    assert bodies == ["one", "two"]  # the third body never ran
    assert refused.value.scope == "writers"
    usage = tenant.usage()
    assert usage.calls == 2
    assert round(usage.spent_usd * NANO) == round(2 * PER_CALL * NANO)
    [(span, event)] = limit_events(exporter)
    assert span == "invoke_agent writer"
    assert (event["techrevati.limit.kind"], event["techrevati.fleet.scope"]) == (
        "fleet_calls",
        "writers",
    )


CONFIGURE_SCRIPT = """
import json, sys
import openai
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from techrevati.runtime import (
    BudgetExceededError, FleetLimits, MaxIterationsExceededError, ModelPricing, configure,
    register_pricing,
)

redis_url, api_url, spans = sys.argv[1:4]
register_pricing("gpt-test", ModelPricing(2.0, 8.0))
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
per_user = FleetLimits(redis_url, scope="user-1", budget_usd=0.007)
tenant = FleetLimits(redis_url, scope="tenant", max_calls=100)
handle = configure(service_name="fleet-e2e", spans_file=spans, report=False, metrics=False,
                   fleet=[per_user, tenant])
OpenAIInstrumentor().instrument()
client = openai.OpenAI(base_url=api_url, api_key="test-key", max_retries=0)
outcomes = []
for _ in range(5):  # no session anywhere: configure(fleet=...) counts every call
    try:
        client.chat.completions.create(model="gpt-test",
                                       messages=[{"role": "user", "content": "hi"}])
        outcomes.append("ok")
    except (BudgetExceededError, MaxIterationsExceededError) as err:
        outcomes.append(f"{type(err).__name__}:{err.scope}")
points = {}
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for metric in sm.metrics:
            for point in metric.data.data_points:
                if metric.name.startswith("techrevati.fleet."):
                    attrs = dict(point.attributes)
                    key = "|".join([metric.name, attrs["techrevati.fleet.scope"],
                                    attrs.get("techrevati.limit.kind", "")])
                    points[key] = point.value
handle.shutdown()
print(json.dumps({
    "outcomes": outcomes,
    "tenant": [tenant.usage().calls, tenant.usage().spent_usd],
    "user": [per_user.usage().calls, per_user.usage().spent_usd],
    "metrics": points,
}))
"""


def test_configure_fleet_counts_every_openai_call_in_the_process(
    redis_server: RedisServer, fake_api: FakeOpenAI, tmp_path: Path
) -> None:
    """configure() is process-wide, so it runs in a fresh interpreter."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CONFIGURE_SCRIPT,
            redis_server.url,
            fake_api.url,
            str(tmp_path / "spans.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # $0.0028 a call against $0.007: the 3rd crosses, the 4th and 5th are refused unsent.
    assert report["outcomes"] == ["ok"] * 3 + ["BudgetExceededError:user-1"] * 2
    assert len(fake_api.requests) == 3
    spent = round(3 * PER_CALL * NANO)
    assert report["user"][0] == report["tenant"][0] == 3
    assert round(report["user"][1] * NANO) == round(report["tenant"][1] * NANO) == spent
    metrics = report["metrics"]
    assert metrics["techrevati.fleet.refusals|user-1|fleet_budget"] == 2
    assert round(metrics["techrevati.fleet.cost|user-1|"] * NANO) == spent
    assert round(metrics["techrevati.fleet.cost|tenant|"] * NANO) == spent
