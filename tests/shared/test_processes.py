"""One budget for a session and its children in other processes (multiprocessing "spawn")."""

from __future__ import annotations

import multiprocessing
import queue
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fake_openai import FakeOpenAI, serve
from techrevati.runtime import MaxIterationsExceededError, UsageSnapshot, agent_session
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry import semconv as sc

from . import children

#: A chat completion; each test sets its model and usage.
COMPLETION: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
}

CTX = multiprocessing.get_context("spawn")


def run_children(url: str, count: int, attempts: int, own_session: bool) -> list[dict[str, Any]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    results: Any = CTX.Queue()
    procs = [
        CTX.Process(
            target=children.process_main,
            args=(url, carrier, attempts, own_session, results),
            daemon=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        proc.start()
    outcomes = []
    for _ in procs:
        try:
            outcomes.append(results.get(timeout=120))
        except queue.Empty:
            pytest.fail("a child process reported nothing within 120 s")
    for proc in procs:
        proc.join(timeout=30)
    crashes = [o["crash"] for o in outcomes if "crash" in o]
    assert not crashes, crashes
    return outcomes


def session_span(exporter: InMemorySpanExporter) -> Any:
    return next(s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent"))


@pytest.mark.parametrize("own_session", [True, False], ids=["child sessions", "bare calls"])
def test_three_processes_share_one_cap_of_ten(
    redis_server: Any,
    store: RedisSessionStore,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    own_session: bool,
) -> None:
    provider, exporter = spans
    with agent_session("planner", max_iterations=10, shared=True, tracer_provider=provider):
        outcomes = run_children(redis_server.url, 3, 10, own_session)
    assert sum(o["ran"] for o in outcomes) == 10
    assert sum(o["refused"] for o in outcomes) == 20
    assert {e for o in outcomes for e in o["errors"]} == {"MaxIterationsExceededError"}
    parent = session_span(exporter)
    # Every child's $1 calls roll up into the parent's tree cost at close.
    assert parent.attributes[sc.COST_TREE_USD] == pytest.approx(10.0)
    assert parent.attributes[sc.SESSION_SHARED] is True
    assert parent.attributes[sc.SESSION_REMOTE_CHILDREN] == (3 if own_session else 0)
    if own_session:
        trace_id = format(parent.context.trace_id, "032x")
        for outcome in outcomes:
            # Each child's session span sits in the parent's trace and names its parent.
            assert outcome["trace_id"] == trace_id
            assert outcome["attributes"][sc.SESSION_REMOTE_PARENT_ROLE] == "planner"
            assert (
                outcome["attributes"][sc.SESSION_REMOTE_PARENT_CONVERSATION]
                == parent.attributes[sc.GEN_AI_CONVERSATION_ID]
            )


def test_a_five_dollar_budget_runs_at_most_five_one_dollar_calls(
    redis_server: Any, store: RedisSessionStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with agent_session(
        "planner", budget_usd=5.0, enforce_budget=True, shared=True, tracer_provider=provider
    ):
        outcomes = run_children(redis_server.url, 3, 5, True)
    ran = sum(o["ran"] for o in outcomes)
    # Usage known up front: each call reserves exactly $1, so the fifth reaches the
    # budget exactly and the sixth is refused before it runs.
    assert ran == 5
    assert {e for o in outcomes for e in o["errors"]} == {"BudgetExceededError"}
    assert session_span(exporter).attributes[sc.COST_TREE_USD] == pytest.approx(5.0)


def test_a_child_that_opens_no_session_caps_its_bare_client_calls(
    redis_server: Any, store: RedisSessionStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    # A child that only calls configure(session_store=...) and makes bare openai calls:
    # the guard was installed only by limits of its own, so 30 of 30 calls of 3 children
    # reached the server under a shared cap of 5, none counted. Its refusals named "the
    # shared session ''" and left no limit-hit span in the child.
    provider, _ = spans
    usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
    answer = {**COMPLETION, "model": children.MODEL, "usage": usage}
    with serve(FakeOpenAI(answer)) as api:
        with agent_session("planner", max_iterations=5, shared=True, tracer_provider=provider):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            results: Any = CTX.Queue()
            procs = [
                CTX.Process(
                    target=children.bare_client_main,
                    args=(redis_server.url, carrier, api.url, 10, results),
                    daemon=True,
                )
                for _ in range(3)
            ]
            for proc in procs:
                proc.start()
            outcomes = [results.get(timeout=120) for _ in procs]
            for proc in procs:
                proc.join(timeout=30)
        assert not [o["crash"] for o in outcomes if "crash" in o]
        assert len(api.requests) == 5
    assert sum(o["ran"] for o in outcomes) == 5
    assert sum(o["refused"] for o in outcomes) == 25
    assert all("the shared session 'planner'" in m for o in outcomes for m in o["messages"])
    # Each refusal outside every session gets its own span with the limit-hit event.
    assert sum(o["limit_hits"] for o in outcomes) == 25


@pytest.mark.parametrize("own_session", [True, False], ids=["child sessions", "bare calls"])
def test_a_shared_session_inside_another_keeps_the_outer_cap_in_other_processes(
    redis_server: Any,
    store: RedisSessionStore,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    own_session: bool,
) -> None:
    # The inner shared session's baggage named only itself, and its record only its own
    # limits: a child process ran 10 of 10 calls under the outer session's cap of 3.
    provider, _ = spans
    with (
        agent_session("planner", max_iterations=3, shared=True, tracer_provider=provider),
        agent_session("sub", shared=True, tracer_provider=provider),
    ):
        outcomes = run_children(redis_server.url, 2, 5, own_session)
    assert sum(o["ran"] for o in outcomes) == 3
    assert sum(o["refused"] for o in outcomes) == 7
    assert all("the shared session 'planner'" in m for o in outcomes for m in o["messages"])


def test_the_parents_own_calls_and_its_childrens_share_the_cap(
    redis_server: Any, store: RedisSessionStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with agent_session(
        "planner", max_iterations=6, shared=True, tracer_provider=provider
    ) as session:
        for _ in range(2):
            session.run_turn(
                lambda: "ok", model=children.MODEL, usage=UsageSnapshot(input_tokens=1)
            )
        outcomes = run_children(redis_server.url, 2, 5, True)
    assert sum(o["ran"] for o in outcomes) == 4
    assert session_span(exporter).attributes[sc.COST_TREE_USD] == pytest.approx(6.0)


def test_remaining_wrap_up_and_refusals_count_every_process(
    redis_server: Any, store: RedisSessionStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """What the parent and a child see of the tree: not only their own process's calls."""
    provider, _ = spans
    with agent_session(
        "planner",
        max_iterations=5,
        budget_usd=10.0,
        enforce_budget=True,
        shared=True,
        wrap_up_at=0.5,
        tracer_provider=provider,
    ) as session:
        session.run_turn(lambda: "ok", model=children.MODEL, usage=UsageSnapshot(input_tokens=1))
        assert (session.remaining().calls, session.wrapping_up) == (4, False)
        [child] = run_children(redis_server.url, 1, 5, True)
        # The child ran the 4 calls the tree had left; its remaining() counts the tree.
        assert (child["ran"], child["refused"]) == (4, 1)
        assert child["remaining"] == (0, 5.0, sc.LIMIT_ITERATIONS)
        [message] = child["messages"]
        assert message.startswith(
            "the shared session 'planner' (for its session 'researcher' (researcher-"
        )
        assert "reached max_iterations=5 across every process it reaches" in message
        assert "fleet scope" not in message and "window" not in message
        # The parent sees its child's 4 calls and $4 without a call of its own.
        left = session.remaining()
        assert (left.calls, left.budget_usd, left.limit) == (0, 5.0, sc.LIMIT_ITERATIONS)
        assert session.wrapping_up is True
        with pytest.raises(MaxIterationsExceededError) as refused:
            session.run_turn(
                lambda: "ok", model=children.MODEL, usage=UsageSnapshot(input_tokens=1)
            )
    text = str(refused.value)
    assert text.startswith("the shared session 'planner' (planner-")
    assert "max_iterations=5 across every process" in text and "fleet scope" not in text


def test_a_shared_budget_refusal_says_whose_budget_and_what_was_spent(
    redis_server: Any, store: RedisSessionStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = spans
    with agent_session(
        "planner", budget_usd=3.0, enforce_budget=True, shared=True, tracer_provider=provider
    ):
        [child] = run_children(redis_server.url, 1, 4, True)
    assert (child["ran"], child["errors"]) == (3, ["BudgetExceededError"])
    [message] = child["messages"]
    assert message.startswith(
        "budget reached: $3.0000 spent or reserved by calls in flight >= $3.0000, the budget "
        "of the shared session 'planner' (for its session 'researcher'"
    )
    assert "raise budget_usd where the shared session is opened" in message
    assert child["remaining"][1:] == (0.0, sc.LIMIT_BUDGET)


def test_a_child_killed_mid_call_frees_its_reservation_after_the_lease(
    redis_server: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    import os
    import signal
    import time

    from techrevati.runtime import BudgetExceededError
    from techrevati.runtime.telemetry.limits import remote

    remote.install_store(RedisSessionStore(redis_server.url, lease_s=1.0))
    provider, _ = spans
    try:
        with agent_session(
            "planner", budget_usd=2.0, enforce_budget=True, shared=True, tracer_provider=provider
        ) as session:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            started = CTX.Event()
            child = CTX.Process(
                target=children.hang_in_a_call, args=(redis_server.url, carrier, started)
            )
            child.start()
            assert started.wait(60), "the child never started its call"
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)

            def call() -> None:
                session.run_turn(lambda: "ok", model=children.MODEL, usage=UsageSnapshot(1, 0))

            call()  # $1 spent + the dead child's $1 reserved: the budget is reached
            with pytest.raises(BudgetExceededError):
                call()
            time.sleep(1.5)  # the dead child's lease runs out
            call()  # its $1 is free again
    finally:
        remote.install_store(None)


def test_the_report_shows_the_tree_across_processes(
    redis_server: Any, store: RedisSessionStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    from techrevati.runtime.telemetry.report.model import build_report
    from techrevati.runtime.telemetry.report.read import record_from_span
    from techrevati.runtime.telemetry.report.text import render_report

    provider, exporter = spans
    with agent_session("planner", max_iterations=10, shared=True, tracer_provider=provider):
        run_children(redis_server.url, 2, 3, True)
    records = [r for r in (record_from_span(s) for s in exporter.get_finished_spans()) if r]
    report = build_report(records)
    (row,) = report.sessions
    assert (row.shared, row.remote_children, row.tree_cost_usd) == (True, 2, pytest.approx(6.0))
    text = render_report(report)
    assert "Session trees across processes" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("planner") and "yes" in x)
    assert line.split() == ["planner", "yes", "2", "6.000000", "-"]
