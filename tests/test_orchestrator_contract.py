"""The 0.1.0 Orchestrator contract (API_CONTRACT.md §13), asserted with values."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from techrevati.runtime import (
    AgentRegistry,
    AgentSession,
    AgentStatus,
    AsyncCircuitBreaker,
    AsyncOrchestrationSession,
    BudgetExceededError,
    CircuitBreaker,
    CircuitOpenError,
    MaxIterationsExceededError,
    ModelPricing,
    OrchestrationSession,
    Orchestrator,
    PolicyAction,
    PolicyActionData,
    PolicyEngine,
    PolicyRule,
    RecoveryContext,
    RingBufferEventSink,
    RingBufferUsageSink,
    TurnTimeoutError,
    UsageSnapshot,
    UsageTracker,
    register_pricing,
)
from techrevati.runtime.policy_engine import RetryExhausted, TimedOut


@pytest.fixture(autouse=True)
def _prices() -> None:
    register_pricing("m", ModelPricing(3.0, 15.0))


def _boom() -> str:
    raise RuntimeError("boom")


def test_agent_session_is_the_same_class() -> None:
    assert AgentSession is Orchestrator


def test_happy_path_emits_exactly_one_completed_event() -> None:
    sink = RingBufferEventSink()
    orch = Orchestrator(role="w", phase="p", event_sink=sink)
    with orch.session() as s:
        result, usage = s.run_turn(lambda: "ok", model="m", usage=UsageSnapshot(1000, 100))
    assert (result, usage) == ("ok", UsageSnapshot(1000, 100))
    assert [e.event.value for e in sink.events] == ["agent.completed"]
    assert sink.events[0].detail is None
    summary = s.summary()
    assert set(summary) == {"worker", "usage", "per_model_cost", "recovery_events", "agent_events"}
    assert summary["worker"]["status"] == "completed"
    assert summary["usage"]["turns"] == 1
    assert summary["per_model_cost"] == {"m": pytest.approx(0.0045)}
    assert s._iteration_count == 1
    assert orch.tracker is s.tracker


def test_failing_turn_records_recovery_then_fails_session() -> None:
    orch = Orchestrator(role="w", phase="p")
    with pytest.raises(RuntimeError, match="boom") as err, orch.session() as s:
        s.run_turn(_boom, model="m")
    assert str(err.value) == "boom"
    assert [(e.event.value, e.detail) for e in s.events] == [
        ("agent.recovery.attempted", "llm_error: recovered"),
        ("agent.failed", "boom"),
    ]
    assert s.events[1].failure_class is not None
    assert s.events[1].failure_class.value == "llm_error"
    assert s.worker.status == AgentStatus.FAILED
    assert s.worker.last_error is not None and "boom" in s.worker.last_error["message"]
    assert s.summary()["usage"]["turns"] == 0  # failed turns are not booked


def test_sync_timeout_raises_promptly_and_chained() -> None:
    orch = Orchestrator(role="w", phase="p")
    with orch.session() as s:
        assert s.run_turn(lambda: "fast", model="m", timeout=5.0)[0] == "fast"
        start = time.monotonic()
        with pytest.raises(TurnTimeoutError) as err:
            s.run_turn(lambda: time.sleep(0.5), model="m", timeout=0.05)
        assert time.monotonic() - start < 0.45
    assert err.value.timeout_seconds == 0.05
    assert isinstance(err.value.__cause__, TimeoutError)
    assert "timeout" in str(err.value)
    assert s.recovery.events == []  # no recovery bookkeeping for timeouts


def test_async_timeout_and_breaker() -> None:
    breaker = AsyncCircuitBreaker("api", failure_threshold=2, recovery_timeout_seconds=60)
    orch = Orchestrator(role="w", phase="p", async_circuit_breaker=breaker)

    async def main() -> None:
        async with orch.asession() as s:
            assert isinstance(s, AsyncOrchestrationSession)
            with pytest.raises(TurnTimeoutError) as err:
                await s.arun_turn(lambda: asyncio.sleep(1), model="m", timeout=0.02)
            assert isinstance(err.value.__cause__, TimeoutError)
            assert not await breaker.is_open()  # one failure of two

            async def fail() -> None:
                raise ConnectionError("connection refused")

            with pytest.raises(ConnectionError):
                await s.arun_turn(fail, model="m")
            # The timeout counted as a breaker failure (our change): two of two, open.
            assert await breaker.is_open()
            with pytest.raises(CircuitOpenError):
                await s.arun_turn(lambda: asyncio.sleep(0), model="m")
            assert [e.detail for e in s.events] == ["provider_failure: recovered"]
            # The refused call never reached the provider: it used no iteration.
            assert s._iteration_count == 2

    asyncio.run(main())


def test_breaker_open_short_circuits_next_session() -> None:
    breaker = CircuitBreaker("api", failure_threshold=2)
    orch = Orchestrator(role="w", phase="p", circuit_breaker=breaker)
    for _ in range(2):
        with pytest.raises(RuntimeError), orch.session() as s:
            s.run_turn(_boom, model="m")
    calls: list[int] = []
    with pytest.raises(CircuitOpenError), orch.session() as s:
        s.run_turn(lambda: calls.append(1), model="m")
    assert calls == []
    assert [e.event.value for e in s.events] == ["agent.failed"]
    assert s.events[0].failure_class is not None
    assert s.events[0].failure_class.value == "llm_error"


def test_cap_sync_async_and_zero() -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=3)
    with orch.session() as s:
        for _ in range(3):
            s.run_turn(lambda: None)
        with pytest.raises(MaxIterationsExceededError) as err:
            s.run_turn(lambda: None)
    assert err.value.max_iterations == 3
    assert "max_iterations=3" in str(err.value)

    async def main() -> None:
        async with Orchestrator(role="w", phase="p", max_iterations=0).asession() as s2:
            with pytest.raises(MaxIterationsExceededError):
                await s2.arun_turn(lambda: asyncio.sleep(0))

    asyncio.run(main())


def test_budget_enforced_and_not() -> None:
    usage_sink = RingBufferUsageSink()
    orch = Orchestrator(
        role="w", phase="p", budget_usd=0.001, enforce_budget=True, usage_sink=usage_sink
    )
    with pytest.raises(BudgetExceededError) as err, orch.session() as s:
        s.run_turn(lambda: None, model="m", usage=UsageSnapshot(1000, 0))
    assert err.value.budget_usd == 0.001
    assert err.value.current_cost_usd > 0.001
    # The contract's words first; then whose budget it was and that the call ran.
    assert str(err.value).startswith("budget exceeded: $0.0030 > $0.0010, the budget of session")
    assert usage_sink.records == [("m", UsageSnapshot(1000, 0), pytest.approx(0.003))]
    budget = [e for e in s.events if e.detail and e.detail.startswith("budget exceeded")]
    assert budget[0].data == {"budget_usd": 0.001}

    relaxed = Orchestrator(role="w", phase="p", budget_usd=0.001)
    with relaxed.session() as s2:
        assert s2.run_turn(lambda: 1, model="m", usage=UsageSnapshot(1000, 0))[0] == 1
    assert s2.worker.status == AgentStatus.COMPLETED


def test_empty_model_not_booked_but_budget_checked() -> None:
    orch = Orchestrator(role="w", phase="p", budget_usd=0.0)
    with orch.session() as s:
        s.run_turn(lambda: None, usage=UsageSnapshot(10, 10))
    assert s.tracker.turns == []
    assert s.summary()["usage"]["turns"] == 0


def test_estimate_usage_used_when_no_explicit_usage() -> None:
    orch = Orchestrator(role="w", phase="p")
    with orch.session() as s:
        _, usage = s.run_turn(
            lambda: "abcd", model="m", estimate_usage=lambda r: UsageSnapshot(len(r), 1)
        )
        _, explicit = s.run_turn(
            lambda: "x",
            model="m",
            usage=UsageSnapshot(7, 7),
            estimate_usage=lambda r: UsageSnapshot(1, 1),
        )
    assert usage == UsageSnapshot(4, 1)
    assert explicit == UsageSnapshot(7, 7)


def test_sink_failures_logged_and_session_completes(caplog: pytest.LogCaptureFixture) -> None:
    class Bad:
        def emit(self, event: object) -> None:
            raise RuntimeError("x")

        def record(self, model: str, usage: UsageSnapshot, cost: float) -> None:
            raise RuntimeError("y")

    caplog.set_level(logging.ERROR, logger="techrevati.runtime.orchestrator")
    orch = Orchestrator(role="w", phase="p", event_sink=Bad(), usage_sink=Bad())  # type: ignore[arg-type]
    with orch.session() as s:
        s.run_turn(lambda: None, model="m", usage=UsageSnapshot(1, 1))
    assert s.worker.status == AgentStatus.COMPLETED
    assert "event_sink.emit raised" in caplog.text
    assert "usage_sink.record raised" in caplog.text


def test_handoff_sync_and_async() -> None:
    registry = AgentRegistry()
    orch = Orchestrator(role="writer", phase="draft", project_id=3, registry=registry)
    with orch.session() as s:
        h = s.handoff_to("editor", reason="review", context=None)
    assert h.context == {}
    assert s.worker.status == AgentStatus.COMPLETED
    target = registry.get(h.target_worker_id)
    assert target is not None and target.status == AgentStatus.INITIALIZING
    completed = [e for e in s.events if e.event.value == "agent.completed"]
    assert len(completed) == 1 and completed[0].detail == "handoff → editor: review"
    assert completed[0].data == {"handoff": h.to_dict()}

    async def main() -> None:
        async with orch.asession() as a:
            h2 = a.handoff_to("critic", reason="check")  # synchronous on the async session
            assert h2.target_role == "critic"

    asyncio.run(main())


def test_pause_for_input_round_trip() -> None:
    orch = Orchestrator(role="w", phase="p")

    async def main() -> str:
        async with orch.asession() as s:

            async def human() -> None:
                await asyncio.sleep(0)
                assert s.worker.status == AgentStatus.WAITING_FOR_INPUT
                with pytest.raises(RuntimeError, match="still pending"):
                    await s.pause_for_input("again?")
                s.provide_input("yes")

            task = asyncio.create_task(human())
            answer = await s.pause_for_input("continue?")
            await task
            assert s.worker.status == AgentStatus.RUNNING
            with pytest.raises(RuntimeError):
                s.provide_input("nobody asked")
        assert s.worker.status == AgentStatus.COMPLETED
        return answer

    assert asyncio.run(main()) == "yes"


def test_policy_elapsed_and_retry_exhausted() -> None:
    rules = [
        PolicyRule("slow", TimedOut(0.0), [PolicyActionData(PolicyAction.ESCALATE)], 1),
        PolicyRule(
            "exhausted", RetryExhausted("llm_error"), [PolicyActionData(PolicyAction.ABORT_PHASE)]
        ),
    ]
    orch = Orchestrator(role="w", phase="p", policy_engine=PolicyEngine(rules), max_iterations=10)
    with orch.session() as s:
        time.sleep(0.01)
        assert [a.action for a in s.evaluate_policy()] == [PolicyAction.ESCALATE]
        assert s.evaluate_policy(elapsed_seconds=0.0) == []
        for _ in range(3):  # LLM_ERROR allows 2 attempts; the 3rd escalates
            with pytest.raises(RuntimeError):
                s.run_turn(_boom, model="m")
        assert [a.action for a in s.evaluate_policy(elapsed_seconds=0.0)] == [
            PolicyAction.ABORT_PHASE
        ]
        assert s.evaluate_gate(None) is None  # type: ignore[arg-type]
    assert [e.detail for e in s.events if "recovery" in e.event.value] == [
        "llm_error: recovered",
        "llm_error: recovered",
        "llm_error: escalation_required",
    ]


def test_cancelled_async_session_marks_worker_cancelled() -> None:
    orch = Orchestrator(role="w", phase="p")
    holder: list[AsyncOrchestrationSession] = []

    async def body() -> None:
        async with orch.asession() as s:
            holder.append(s)
            await s.arun_turn(lambda: asyncio.sleep(5), model="m")

    async def main() -> None:
        task = asyncio.create_task(body())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s = holder[0]
    assert s.worker.status == AgentStatus.CANCELLED
    assert [(e.event.value, e.detail) for e in s.events] == [
        ("agent.failed", "async session cancelled")
    ]
    assert s.recovery.events == []


def test_authorize_without_enforcer_and_direct_construction() -> None:
    registry = AgentRegistry()
    worker = registry.create("w", "p")
    registry.transition(worker.worker_id, AgentStatus.INITIALIZING)
    registry.transition(worker.worker_id, AgentStatus.RUNNING)
    s = OrchestrationSession(
        worker=worker,
        tracker=UsageTracker(),
        recovery=RecoveryContext(),
        registry=registry,
        phase="p",
        role="w",
        project_id=None,
        max_iterations=1,
    )
    outcome = s.authorize("anything")
    assert (outcome.allowed, outcome.reason) == (True, "no enforcer configured")
    assert s.run_turn(lambda: 5, model="m")[0] == 5
    with pytest.raises(MaxIterationsExceededError):
        s.run_turn(lambda: 6, model="m")
    s.complete()
    assert worker.status == AgentStatus.COMPLETED
    assert s.run_tool("t", lambda: "ok") == "ok"


def test_a_session_that_cannot_open_leaves_no_running_worker() -> None:
    """The contract: list_active() never shows a session that is gone."""
    registry = AgentRegistry()
    with pytest.raises(ValueError, match=r"budget_usd must be a finite number in \[0, 1e\+09\]"):
        Orchestrator(role="w", budget_usd=2e9, registry=registry)  # refused up front now
    orch = Orchestrator(role="w", registry=registry)
    orch.budget_usd = float("nan")  # set after construction: refused before any worker
    with pytest.raises(ValueError, match="got nan"), orch.session():
        pass
    assert registry.list_active() == []
    shared = Orchestrator(role="w2", registry=registry, shared=True)  # no session store
    with pytest.raises(ValueError, match="shared=True needs a session store"), shared.session():
        pass
    assert registry.list_active() == []
    [worker] = [w for w in registry.get_by_project(None) if w.role == "w2"]
    assert worker.status == AgentStatus.FAILED
    assert worker.last_error is not None
    assert worker.last_error["message"].startswith(
        "the session could not open: ValueError: shared=True"
    )


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        # context="draft text" failed with "dictionary update sequence element #0".
        ({"context": "draft text"}, "context must be a dict or None, got str: 'draft text'"),
        ({"context": [("a", 1)]}, "context must be a dict or None, got list: [('a', 1)]"),
        ({"reason": None}, "reason must be a string, got NoneType: None"),
    ],
)
def test_handoff_names_a_bad_argument_and_registers_nothing(
    kwargs: dict[str, Any], said: str
) -> None:
    orch = Orchestrator(role="w", phase="p", project_id=1)
    with orch.session() as s:
        arguments: dict[str, Any] = {"reason": "r", **kwargs}
        with pytest.raises(TypeError, match=re.escape(said)):
            s.handoff_to("editor", **arguments)
        assert [w.role for w in orch.registry.get_by_project(1)] == ["w"]
        assert not s.worker.is_terminal
