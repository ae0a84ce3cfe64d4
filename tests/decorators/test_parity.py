"""A decorated turn or tool inside agent_session is indistinguishable from run_turn / run_tool.

The same script runs twice, once through the Orchestrator's methods and once
through the decorators, each on its own in-memory pipeline; spans, metrics,
ledger, events and limits must come out equal (ids and timings aside).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from otel_harness import Otel, make_otel
from techrevati.runtime import (
    AsyncCircuitBreaker,
    BudgetExceededError,
    CircuitBreaker,
    CircuitOpenError,
    GuardrailOutcome,
    GuardrailViolatedError,
    MaxIterationsExceededError,
    Orchestrator,
    PermissionDeniedError,
    PermissionEnforcer,
    PermissionMode,
    PermissionPolicy,
    RolePermissionConfig,
    UsageSnapshot,
)
from techrevati.runtime.decorators import agent_session, agent_turn, tool_call

U1 = UsageSnapshot(
    input_tokens=1000, output_tokens=100, cache_write_tokens=2000, cache_read_tokens=4000
)
U2 = UsageSnapshot(input_tokens=3000, output_tokens=0)
COST_U1 = (1000 * 3.0 + 100 * 15.0 + 2000 * 3.75 + 4000 * 0.3) / 1e6  # 0.0132
COST_U2 = 3000 * 3.0 / 1e6  # 0.009: U1 + U2 crosses the 0.02 budget
IDS = {"gen_ai.agent.id", "gen_ai.conversation.id"}
WORKER_ID = re.compile(r"\([\w.-]+-[0-9a-f]{8}\)")


@dataclass
class _NoSecrets:
    name: str = "no_secrets"

    def check_pre(self, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed=True)

    def check_post(self, value: object, *, role: str, tool: str) -> GuardrailOutcome:
        return GuardrailOutcome(allowed="secret" not in str(value), reason="leaks a secret")


def _options(otel: Otel, breaker: object, *, async_: bool) -> dict[str, Any]:
    perms = PermissionEnforcer(
        PermissionPolicy(
            role_configs={"writer": RolePermissionConfig("writer", PermissionMode.READ_ONLY)},
            tool_requirements={"write_db": PermissionMode.FULL_ACCESS},
        )
    )
    return {
        "phase": "draft",
        "project_id": 7,
        "permissions": perms,
        "guardrails": [_NoSecrets()],
        "budget_usd": 0.02,
        "enforce_budget": True,
        "max_iterations": 10,
        "provider_name": "openai",
        ("async_circuit_breaker" if async_ else "circuit_breaker"): breaker,
        **otel.kwargs(),
    }


def _boom() -> Any:
    raise RuntimeError("model said no")


def _script(
    turn: Callable[[UsageSnapshot | None], Any],
    tool: Callable[[str, str], Any],
    reset: Callable[[], None],
) -> list[str]:
    """One session's worth of calls; returns what each call did."""
    log: list[str] = []

    def attempt(label: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            log.append(f"{label}:ok")
        except (
            RuntimeError,
            CircuitOpenError,
            BudgetExceededError,
            PermissionDeniedError,
            GuardrailViolatedError,
        ) as exc:
            log.append(f"{label}:{type(exc).__name__}")

    attempt("turn1", lambda: turn(U1))
    attempt("turn2", lambda: turn(None))  # fails
    attempt("lookup", lambda: tool("lookup", "RAG"))
    attempt("write_db", lambda: tool("write_db", "never"))
    attempt("leaky", lambda: tool("leaky", "a secret"))
    attempt("turn3", lambda: turn(None))  # fails, opens the breaker (threshold 2)
    attempt("turn4", lambda: turn(U1))  # refused by the open breaker
    reset()
    attempt("turn5", lambda: turn(U2))  # crosses the budget
    attempt("turn6", lambda: turn(U2))  # refused by the budget
    return log


def _orchestrator_run(otel: Otel) -> tuple[list[str], Any]:
    breaker = CircuitBreaker("model-api", failure_threshold=2)
    orch = Orchestrator(role="writer", **_options(otel, breaker, async_=False))
    with orch.session() as session:
        log = _script(
            lambda u: session.run_turn(
                (lambda: u) if u is not None else _boom, model="model-a", usage=u
            ),
            lambda name, value: session.run_tool(name, lambda: value),
            breaker.reset,
        )
    return log, session


def _decorated_run(otel: Otel) -> tuple[list[str], Any]:
    breaker = CircuitBreaker("model-api", failure_threshold=2)

    @agent_turn("model-a")
    def call_model(u: UsageSnapshot | None) -> UsageSnapshot:
        if u is None:
            _boom()
        assert u is not None
        return u  # the usage is read from the result

    tools = {name: tool_call(name)(lambda value: value) for name in ("lookup", "write_db", "leaky")}
    with agent_session("writer", **_options(otel, breaker, async_=False)) as session:
        log = _script(call_model, lambda name, value: tools[name](value), breaker.reset)
    return log, session


async def _aorchestrator_run(otel: Otel) -> tuple[list[str], Any]:
    breaker = AsyncCircuitBreaker("model-api", failure_threshold=2)
    orch = Orchestrator(role="writer", **_options(otel, breaker, async_=True))
    log: list[str] = []
    async with orch.asession() as session:

        async def turn(u: UsageSnapshot | None) -> Any:
            async def fn() -> Any:
                return u if u is not None else _boom()

            return await session.arun_turn(fn, model="model-a", usage=u)

        async def tool(name: str, value: str) -> Any:
            async def fn() -> str:
                return value

            return await session.arun_tool(name, fn)

        log = await _ascript(turn, tool, breaker.reset)
    return log, session


async def _adecorated_run(otel: Otel) -> tuple[list[str], Any]:
    breaker = AsyncCircuitBreaker("model-api", failure_threshold=2)

    @agent_turn("model-a")
    async def call_model(u: UsageSnapshot | None) -> UsageSnapshot:
        if u is None:
            _boom()
        assert u is not None
        return u

    def make_tool(name: str) -> Callable[[str], Awaitable[str]]:
        @tool_call(name)
        async def tool(value: str) -> str:
            return value

        return tool

    tools = {name: make_tool(name) for name in ("lookup", "write_db", "leaky")}
    async with agent_session("writer", **_options(otel, breaker, async_=True)) as session:
        log = await _ascript(call_model, lambda n, v: tools[n](v), breaker.reset)
    return log, session


async def _ascript(
    turn: Callable[[UsageSnapshot | None], Awaitable[Any]],
    tool: Callable[[str, str], Awaitable[Any]],
    reset: Callable[[], Awaitable[None]],
) -> list[str]:
    # The sync script, with each call awaited.
    plan: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("turn1", lambda: turn(U1)),
        ("turn2", lambda: turn(None)),
        ("lookup", lambda: tool("lookup", "RAG")),
        ("write_db", lambda: tool("write_db", "never")),
        ("leaky", lambda: tool("leaky", "a secret")),
        ("turn3", lambda: turn(None)),
        ("turn4", lambda: turn(U1)),
        ("reset", reset),
        ("turn5", lambda: turn(U2)),
        ("turn6", lambda: turn(U2)),
    ]
    log: list[str] = []
    for label, step in plan:
        try:
            await step()
            if label != "reset":
                log.append(f"{label}:ok")
        except Exception as exc:
            log.append(f"{label}:{type(exc).__name__}")
    return log


EXPECTED_LOG = [
    "turn1:ok",
    "turn2:RuntimeError",
    "lookup:ok",
    "write_db:PermissionDeniedError",
    "leaky:GuardrailViolatedError",
    "turn3:RuntimeError",
    "turn4:CircuitOpenError",
    "turn5:BudgetExceededError",
    "turn6:BudgetExceededError",
]


def _spans(otel: Otel) -> list[tuple[Any, ...]]:
    by_id = {s.context.span_id: s.name for s in otel.spans() if s.context is not None}
    out = []
    for s in otel.spans():
        attrs = {k: v for k, v in (s.attributes or {}).items() if k not in IDS}
        events = [
            (
                e.name,
                {
                    # Limit messages name the session's worker id, which is random.
                    k: WORKER_ID.sub("(<worker id>)", v) if isinstance(v, str) else v
                    for k, v in (e.attributes or {}).items()
                    if k != "exception.stacktrace"
                },
            )
            for e in s.events
        ]
        parent = by_id.get(s.parent.span_id) if s.parent is not None else None
        out.append(
            (s.name, s.kind, parent, attrs, s.status.status_code, s.status.description, events)
        )
    return out


_DURATIONS = {
    "gen_ai.client.operation.duration",
    "gen_ai.invoke_agent.duration",
    "gen_ai.execute_tool.duration",
}


def _metrics(otel: Otel) -> dict[str, list[tuple[Any, ...]]]:
    data = otel.reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[tuple[Any, ...]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                rows = []
                for p in metric.data.data_points:
                    key = tuple(sorted((p.attributes or {}).items()))
                    if metric.name in _DURATIONS:
                        value: Any = p.count  # timings differ; how many must not
                    elif hasattr(p, "count"):
                        value = (p.count, p.sum)
                    elif hasattr(p, "sum"):
                        value = round(p.sum, 15)
                    else:
                        value = p.value
                    rows.append((key, value))
                out[metric.name] = sorted(rows)
    return out


def _ledger(session: Any) -> tuple[Any, ...]:
    return (
        list(session.tracker.turns),
        session.tracker.total_cost(),
        session._iteration_count,
        [e.to_dict()["event"] for e in session.events],
        [(e.scenario, e.event_type) for e in session.recovery.events],
    )


def _compare(a: Otel, b: Otel, session_a: Any, session_b: Any) -> None:
    assert _spans(a) == _spans(b)
    assert _metrics(a) == _metrics(b)
    assert _ledger(session_a) == _ledger(session_b)


def test_sync_decorated_session_equals_orchestrator_session() -> None:
    a, b = make_otel(), make_otel()
    log_a, session_a = _orchestrator_run(a)
    log_b, session_b = _decorated_run(b)
    assert log_a == log_b == EXPECTED_LOG
    _compare(a, b, session_a, session_b)
    # and the values themselves, not just their equality
    assert session_b.tracker.total_cost() == pytest.approx(COST_U1 + COST_U2, rel=1e-12)
    chats = b.spans("chat model-a")
    assert len(chats) == 5  # turn6 never started
    first = dict(chats[0].attributes or {})
    assert first["gen_ai.usage.input_tokens"] == 7000
    assert first["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert first["gen_ai.usage.cache_write.input_tokens"] == 2000
    assert first["techrevati.cost.usd"] == pytest.approx(COST_U1, rel=1e-12)
    assert first["techrevati.breaker.state"] == "closed"
    refused = dict(chats[3].attributes or {})
    assert refused["error.type"] == "CircuitOpenError"
    assert refused["techrevati.breaker.state"] == "open"
    assert b.metric_sum("techrevati.cost.usd") == pytest.approx(COST_U1 + COST_U2, rel=1e-12)
    assert b.metric_sum("techrevati.recovery.attempts") == 2
    assert b.metric_sum("techrevati.tool.calls", techrevati__permission__decision="deny") == 1
    assert b.metric_sum("techrevati.guardrail.violations") == 1


def test_async_decorated_session_equals_orchestrator_session() -> None:
    a, b = make_otel(), make_otel()
    log_a, session_a = asyncio.run(_aorchestrator_run(a))
    log_b, session_b = asyncio.run(_adecorated_run(b))
    assert log_a == log_b == EXPECTED_LOG
    _compare(a, b, session_a, session_b)
    assert session_b.tracker.total_cost() == pytest.approx(COST_U1 + COST_U2, rel=1e-12)


def test_cap_parity_and_refused_turn_never_calls() -> None:
    a, b = make_otel(), make_otel()
    calls: list[str] = []
    orch = Orchestrator(role="w", phase="default", max_iterations=1, **a.kwargs())
    with orch.session() as sa:
        sa.run_turn(lambda: calls.append("a"), model="model-b", usage=UsageSnapshot(10, 1))
        with pytest.raises(MaxIterationsExceededError):
            sa.run_turn(lambda: calls.append("a-refused"), model="model-b")

    @agent_turn("model-b", usage=UsageSnapshot(10, 1))
    def turn(tag: str) -> None:
        calls.append(tag)

    with agent_session("w", max_iterations=1, **b.kwargs()) as sb:
        turn("b")
        with pytest.raises(MaxIterationsExceededError):
            turn("b-refused")
    assert calls == ["a", "b"]
    _compare(a, b, sa, sb)
