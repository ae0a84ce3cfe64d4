"""The metrics a session records: names, units, label sets and values."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.trace import StatusCode

from otel_harness import Otel
from techrevati.runtime import (
    CircuitBreaker,
    ModelPricing,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
    register_pricing,
)
from techrevati.runtime.telemetry.calls.metrics import CostTotals

FORBIDDEN_LABELS = {"gen_ai.agent.id", "gen_ai.conversation.id", "techrevati.project.id"}


def _units(otel: Otel) -> dict[str, str]:
    data = otel.reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m.unit or ""
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def test_a_session_records_every_metric_with_bounded_labels(otel: Otel) -> None:
    register_pricing("m", ModelPricing(2.0, 4.0))
    breaker = CircuitBreaker("api", failure_threshold=1)
    perms = PermissionEnforcer(
        PermissionPolicy(
            role_configs={"w": RolePermissionConfig("w", PermissionMode.READ_ONLY)},
            tool_requirements={"drop": PermissionMode.FULL_ACCESS},
        )
    )
    orch = Orchestrator(
        role="w",
        phase="p",
        project_id=9,
        circuit_breaker=breaker,
        permissions=perms,
        max_iterations=3,
        provider_name="acme",
        **otel.orch_kwargs(),
    )
    with orch.session() as s:
        s.run_turn(lambda: None, model="m", usage=UsageSnapshot(1000, 500, cache_read_tokens=250))
        s.run_tool("read", lambda: 1)
        with pytest.raises(PermissionDeniedError):
            s.run_tool("drop", lambda: 1)
        with pytest.raises(ConnectionError):
            s.run_turn(lambda: (_ for _ in ()).throw(ConnectionError("refused")), model="m")
    assert _units(otel) == {
        "gen_ai.client.token.usage": "{token}",
        "gen_ai.client.operation.duration": "s",
        "gen_ai.invoke_agent.duration": "s",
        "gen_ai.execute_tool.duration": "s",
        "gen_ai.invoke_agent.inference_calls": "{inference_call}",
        "gen_ai.invoke_agent.tool_calls": "{tool_call}",
        "techrevati.cost.usd": "USD",
        "techrevati.sessions": "{session}",
        "techrevati.tool.calls": "{call}",
        "techrevati.breaker.state": "1",
        "techrevati.recovery.attempts": "{attempt}",
        "techrevati.session.iterations": "{call}",
        "techrevati.token.detail": "{token}",
    }
    tokens = {
        attrs["gen_ai.token.type"]: point.sum
        for attrs, point in otel.metric_points("gen_ai.client.token.usage")
    }
    assert tokens == {"input": 1250, "output": 500}  # semconv input includes cache reads
    assert otel.metric_sum("techrevati.cost.usd") == pytest.approx(s.tracker.total_cost())
    assert otel.metric_sum("techrevati.tool.calls", techrevati__permission__decision="deny") == 1
    assert otel.metric_sum("techrevati.tool.calls", techrevati__permission__decision="allow") == 1
    (state,) = otel.metric_points("techrevati.breaker.state")
    assert state[0] == {"techrevati.breaker.name": "api"} and state[1].value == 2  # open
    errors = [
        attrs
        for attrs, _ in otel.metric_points("gen_ai.client.operation.duration")
        if "error.type" in attrs
    ]
    assert errors == [
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.provider.name": "acme",
            "gen_ai.agent.name": "w",
            "error.type": "ConnectionError",
        }
    ]
    # One point per session: its model calls (the failed one included) and tool calls
    # (the denied one included), labelled as the GenAI conventions' call-count metrics.
    per_session = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "w"}
    for name, calls, bucket in (
        ("gen_ai.invoke_agent.inference_calls", 2, 1),
        ("gen_ai.invoke_agent.tool_calls", 2, 1),
    ):
        ((attrs, point),) = otel.metric_points(name)
        assert attrs == per_session
        assert (point.count, point.sum) == (1, calls)
        assert list(point.explicit_bounds) == [1, 2, 4, 8, 16, 32, 64, 128]
        assert point.bucket_counts[bucket] == 1  # 2 falls in (1, 2]
    for name in _units(otel):
        for attrs, _ in otel.metric_points(name):
            assert not FORBIDDEN_LABELS & set(attrs), (name, attrs)


def test_cost_totals_keep_at_most_the_sdks_series_and_fold_the_rest() -> None:
    # A probe: 20,000 model names (a proxy's, per-customer fine-tunes) kept 20,000
    # running totals (~630 B each) and made each collection build 20,000 observations
    # (1.33 s), which the SDK folded past its 2,000 anyway.
    totals = CostTotals()
    for n in range(CostTotals.MAX_SERIES + 500):
        totals.add(1.0, {"model": f"m{n}"})
    totals.add(1.0, {"model": "m0"})  # a kept series still adds to itself
    seen = {
        tuple(sorted(o.attributes.items())): o.value  # type: ignore[union-attr]
        for o in totals.observe(None)  # type: ignore[arg-type]
    }
    assert len(seen) == CostTotals.MAX_SERIES + 1
    assert seen[(("model", "m0"),)] == 2.0
    assert seen[(("otel.metric.overflow", "true"),)] == 500.0
    assert sum(seen.values()) == CostTotals.MAX_SERIES + 501  # nothing lost


def test_cost_totals_are_cumulative_per_label_set_and_thread_safe() -> None:
    totals = CostTotals()
    a, b = {"model": "a"}, {"model": "b"}

    def work() -> None:
        for _ in range(10_000):
            totals.add(0.5, a)
            totals.add(0.25, dict(b))  # a new dict with the same labels is the same series

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals.add(-3.0, a)  # ignored: a counter never decreases
    totals.add(0.0, {"model": "c"})  # ignored: no empty series
    seen = {o.attributes["model"]: o.value for o in totals.observe(None)}  # type: ignore[arg-type,index]
    assert seen == {"a": 20_000.0, "b": 10_000.0}


def test_exemplars_point_at_the_call_they_measured(otel: Otel) -> None:
    # Metrics are recorded once a call's span has ended; recorded in the context
    # current then, every exemplar named the session span instead of the call.
    from techrevati.runtime import agent_session, agent_turn, tool_call

    @agent_turn("gpt-4o-mini", provider="openai")
    def ask() -> dict[str, object]:
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    @agent_turn("gpt-4o-mini", provider="openai")
    def fails() -> None:
        raise ConnectionError("refused")

    @tool_call()
    def search(query: str) -> str:
        return "found"

    with agent_session("researcher", **otel.orch_kwargs()):
        ask()
        search("y")
        with pytest.raises(ConnectionError):
            fails()
    chats = [s for s in otel.spans("chat ")]
    assert len(chats) == 2
    answered = next(s for s in chats if s.status.status_code != StatusCode.ERROR)
    failed = next(s for s in chats if s.status.status_code == StatusCode.ERROR)
    tool = otel.span("execute_tool search")
    expected = {
        "gen_ai.client.token.usage": {answered.context.span_id},
        "gen_ai.client.operation.duration": {answered.context.span_id, failed.context.span_id},
        "gen_ai.execute_tool.duration": {tool.context.span_id},
        "techrevati.tool.calls": {tool.context.span_id},
    }
    # One collection: a reservoir hands its exemplars to the first collection only.
    data = otel.reader.get_metrics_data()
    assert data is not None
    seen: dict[str, set[int]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                seen[metric.name] = {
                    exemplar.span_id
                    for point in metric.data.data_points
                    for exemplar in point.exemplars
                }
    for name, span_ids in expected.items():
        assert seen[name] == span_ids, name
