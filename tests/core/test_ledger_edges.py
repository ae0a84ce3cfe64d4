"""Limits at every edge: calls in flight, nesting, child sessions, lifetimes, exits.

A "$1 call" below is one input token of ``usd-1``, priced at $1,000,000 per
million input tokens, so every dollar figure is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from otel_harness import Otel
from techrevati.runtime import (
    AgentStatus,
    BudgetExceededError,
    MaxIterationsExceededError,
    ModelPricing,
    Orchestrator,
    TurnTimeoutError,
    UsageSnapshot,
    agent_session,
    agent_turn,
    register_pricing,
)
from techrevati.runtime.telemetry.limits import membership
from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor

ONE = UsageSnapshot(1, 0)
RESULT_1 = {"model": "usd-1", "usage": {"prompt_tokens": 1, "completion_tokens": 0}}


@pytest.fixture(autouse=True)
def dollar_model() -> Iterator[None]:
    register_pricing("usd-1", ModelPricing(1_000_000.0, 0.0))
    yield


def _library_span(otel: Otel, model: str = "usd-1", scope: str = "some.genai.library") -> Any:
    """Start (not end) a model span the way another GenAI instrumentation does."""
    tracer = otel.tracer_provider.get_tracer(scope)
    return tracer.start_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model},
    )


def _end_with_usage(span: Any, inp: int, out: int = 0) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", inp)
    span.set_attribute("gen_ai.usage.output_tokens", out)
    span.end()


# --- 1. calls in flight are reserved ------------------------------------------------------


def _run_concurrently(n: int, attempt: Any) -> tuple[int, int]:
    """Run ``attempt(gate)`` on n threads; bodies block on ``gate`` until all have tried."""
    gate = threading.Event()
    tried = threading.Semaphore(0)
    ran: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        def body() -> dict[str, Any]:
            with lock:
                ran.append(1)
            tried.release()
            gate.wait(10)
            return RESULT_1

        try:
            attempt(body)
        except BudgetExceededError:
            with lock:
                refused.append(1)
            tried.release()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for _ in range(n):
        assert tried.acquire(timeout=10)
    gate.set()
    for t in threads:
        t.join(10)
    return len(ran), len(refused)


def test_threads_with_known_cost_reserve_before_running(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", budget_usd=1.5, enforce_budget=True, **otel.kwargs())
    with orch.session() as session:
        ran, refused = _run_concurrently(
            20, lambda body: session.wrap(session.run_turn)(body, model="usd-1", usage=ONE)
        )
    # 18 refused before their body ran; the 2nd call crossed $1.50 and raised after it.
    assert (ran, refused) == (2, 19)
    assert session.tracker.total_cost() == 2.0
    assert session._ledger.reserved == 0.0


def test_tasks_with_known_cost_reserve_before_running(otel: Otel) -> None:
    ran: list[int] = []

    async def main() -> int:
        gate = asyncio.Event()
        orch = Orchestrator(
            role="w", phase="p", budget_usd=1.5, enforce_budget=True, **otel.kwargs()
        )
        async with orch.asession() as session:

            async def body() -> None:
                ran.append(1)
                await gate.wait()

            async def one() -> bool:
                try:
                    await session.arun_turn(body, model="usd-1", usage=ONE)
                except BudgetExceededError:
                    return False
                return True

            tasks = [asyncio.create_task(one()) for _ in range(20)]
            await asyncio.sleep(0.05)  # every task has reached admission or its body
            gate.set()
            results = await asyncio.gather(*tasks)
        return sum(results)

    completed = asyncio.run(main())
    assert len(ran) == 2
    assert completed <= 2


def test_a_learned_cost_is_reserved_by_later_calls(otel: Otel) -> None:
    @agent_turn("usd-1")
    def ask(body: Any) -> Any:
        return body()

    with agent_session("w", budget_usd=2.5, enforce_budget=True, **otel.kwargs()) as session:
        ask(lambda: RESULT_1)  # teaches the session what a usd-1 call costs
        ran, _ = _run_concurrently(20, lambda body: session.wrap(ask)(body))
    assert 1 + ran <= 4
    assert ran == 2  # $1 spent + $1 + $1 in flight reaches $2.50's neighbourhood
    assert session.tracker.total_cost() == 3.0


def test_a_per_call_estimate_is_reserved_when_nothing_is_known(otel: Otel) -> None:
    @agent_turn("usd-1")
    def ask(body: Any) -> Any:
        return body()

    with agent_session(
        "w", budget_usd=1.5, enforce_budget=True, call_estimate_usd=1.0, **otel.kwargs()
    ) as session:
        ran, _ = _run_concurrently(20, lambda body: session.wrap(ask)(body))
    assert ran == 2


def test_caps_stay_exact_under_threads(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=7, **otel.kwargs())
    ran: list[int] = []
    with orch.session() as session:
        call = session.wrap(session.run_turn)

        def worker() -> None:
            for _ in range(10):
                with contextlib.suppress(MaxIterationsExceededError):
                    call(lambda: ran.append(1), model="usd-1", usage=UsageSnapshot())

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(ran) == 7
    assert session._iteration_count == 7


# --- 2. every model call counts, once -------------------------------------------------------


def test_nested_decorated_calls_count_against_the_cap_and_budget(otel: Otel) -> None:
    bodies: list[int] = []

    @agent_turn("usd-1")
    def inner() -> dict[str, Any]:
        bodies.append(1)
        return RESULT_1

    def agent_loop() -> None:
        for _ in range(50):
            inner()

    orch = Orchestrator(
        role="w", phase="p", max_iterations=2, budget_usd=1.5, enforce_budget=True, **otel.kwargs()
    )
    with orch.session() as session, pytest.raises(MaxIterationsExceededError):
        session.run_turn(agent_loop, model="usd-1")
    assert len(bodies) == 1  # the outer turn is call 1, the first inner call is call 2
    assert session._iteration_count == 2
    assert session.tracker.total_cost() == 1.0


def test_decorated_turn_calling_decorated_turns(otel: Otel) -> None:
    bodies: list[int] = []

    @agent_turn("usd-1")
    def inner() -> dict[str, Any]:
        bodies.append(1)
        return RESULT_1

    @agent_turn("usd-1")
    def outer() -> dict[str, Any]:
        for _ in range(50):
            inner()
        return RESULT_1  # the inner calls' response: not booked a second time

    block = agent_session("w", budget_usd=1.5, enforce_budget=True, **otel.kwargs())
    with block as session, pytest.raises(BudgetExceededError):
        outer()
    # inner #1 ($1) and #2 (admitted: $1 spent < $1.50, crosses and raises)
    assert len(bodies) == 2
    assert session.tracker.total_cost() == 2.0


def test_one_library_span_inside_a_decorated_turn_is_the_same_call(otel: Otel) -> None:
    @agent_turn("usd-1")
    def ask() -> None:
        _end_with_usage(_library_span(otel), 1)

    with agent_session("w", **otel.kwargs()) as session:
        ask()
    assert session._iteration_count == 1
    assert session.tracker.turns == [("usd-1", ONE)]
    turn = [
        s for s in otel.spans("chat usd-1") if s.instrumentation_scope.name == "techrevati.runtime"
    ]
    assert dict(turn[0].attributes or {})["techrevati.cost.usd"] == 1.0


def test_a_second_library_call_inside_a_turn_is_a_new_call(otel: Otel) -> None:
    @agent_turn("usd-1")
    def ask() -> None:
        _end_with_usage(_library_span(otel), 1)
        _end_with_usage(_library_span(otel), 2)

    with (
        agent_session("w", max_iterations=1, **otel.kwargs()),
        pytest.raises(MaxIterationsExceededError),
    ):
        ask()
    with agent_session("w", **otel.kwargs()) as session:
        ask()
    assert session._iteration_count == 2
    assert session.tracker.total_cost() == 3.0


# --- 3. sessions form a tree ----------------------------------------------------------------


def test_child_sessions_count_against_the_parent(otel: Otel) -> None:
    bodies: list[str] = []
    with agent_session(
        "parent", budget_usd=1.5, enforce_budget=True, max_iterations=2, **otel.kwargs()
    ) as parent:
        for i in range(5):
            try:
                with agent_session("child", **otel.kwargs()) as child:
                    child.run_turn(lambda: bodies.append("c"), model="usd-1", usage=ONE)
            except (BudgetExceededError, MaxIterationsExceededError):
                pass
            assert i >= 0
    assert len(bodies) == 2  # the 2nd crosses $1.50 and raises; then nothing starts
    ledger = parent._ledger
    assert (ledger.spent, ledger.calls, ledger.iterations) == (2.0, 2, 0)
    assert parent.tracker.total_cost() == 0.0  # its own spend
    root = dict(otel.span("invoke_agent parent").attributes or {})
    assert root["techrevati.cost.usd"] == 0.0
    assert root["techrevati.cost.tree_usd"] == 2.0


def test_a_child_cap_and_the_parent_cap_both_hold(otel: Otel) -> None:
    with agent_session("parent", max_iterations=3, **otel.kwargs()) as parent:
        parent.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot())
        with agent_session("child", max_iterations=5, **otel.kwargs()) as child:
            child.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot())
            child.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot())
            with pytest.raises(MaxIterationsExceededError) as err:
                child.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot())
    assert err.value.max_iterations == 3
    assert (parent._iteration_count, child._iteration_count) == (1, 2)


# --- 5. nothing leaks, nothing is lost ------------------------------------------------------


def test_closed_sessions_with_abandoned_spans_are_freed(otel: Otel) -> None:
    refs = []
    abandoned = []
    for _ in range(200):
        with Orchestrator(role="w", phase="p", **otel.kwargs()).session() as session:
            abandoned.append(_library_span(otel))  # a model span that never ends
            tracer = otel.tracer_provider.get_tracer("some.other.library")
            abandoned.append(tracer.start_span("db query"))  # and a plain one
        refs.append(weakref.ref(session))
    del session
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    keys = {membership.key_of(s.get_span_context()) for s in abandoned}
    assert not keys & set(membership.OPEN)
    assert len(membership.LATE) <= membership.LATE_LIMIT


def test_the_ledgers_of_closed_sessions_with_library_calls_are_freed(otel: Otel) -> None:
    # Once a process-wide table of recent library calls, keyed weakly by ledger, held
    # claims that refer to their ledger: every such session's ledger (its tracker, its
    # turns) stayed alive for good, 200 of 200 here.
    ledgers = []
    for _ in range(200):
        with Orchestrator(role="w", phase="p", max_iterations=5, **otel.kwargs()).session() as s:
            _end_with_usage(_library_span(otel), 1)
        ledgers.append(weakref.ref(s._ledger))
    del s
    gc.collect()
    # At most the last: this thread's last library call (membership.STRAND) until its next.
    assert sum(r() is not None for r in ledgers) <= 1


def test_usage_after_the_turn_is_booked_and_counts_at_the_next_admission(otel: Otel) -> None:
    pending: list[Any] = []
    orch = Orchestrator(role="w", phase="p", budget_usd=1.5, enforce_budget=True, **otel.kwargs())
    with orch.session() as session:
        # The function returns a library stream: its span ends when it is read.
        with pytest.warns(RuntimeWarning, match="no token usage"):
            session.run_turn(lambda: pending.append(_library_span(otel)), model="usd-1")
        assert session.tracker.total_cost() == 0.0
        _end_with_usage(pending[0], 2)  # the stream is consumed: $2 billed
        assert session.tracker.total_cost() == 2.0
        with pytest.raises(BudgetExceededError):
            session.run_turn(lambda: None, model="usd-1")
    assert session._iteration_count == 1


def test_a_timed_out_call_that_finishes_later_is_booked_once(otel: Otel) -> None:
    done = threading.Event()

    def slow() -> None:
        span = _library_span(otel)
        done.wait(5)
        _end_with_usage(span, 1)

    orch = Orchestrator(role="w", phase="p", **otel.kwargs())
    with orch.session() as session, pytest.raises(TurnTimeoutError):
        session.run_turn(slow, model="usd-1", timeout=0.05)
    done.set()
    for _ in range(200):
        if session.tracker.turn_count:
            break
        threading.Event().wait(0.01)
    assert session.tracker.turns == [("usd-1", ONE)]


def test_an_async_session_exited_from_another_task_closes_cleanly(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", **otel.kwargs())
    cm = orch.asession()
    block = agent_session("lifespan", **otel.kwargs())

    async def main() -> None:
        session = await asyncio.create_task(cm.__aenter__())
        await asyncio.create_task(cm.__aexit__(None, None, None))
        assert session.worker.status == AgentStatus.COMPLETED
        other = await asyncio.create_task(block.__aenter__())
        await asyncio.create_task(block.__aexit__(None, None, None))
        assert other.worker.status == AgentStatus.COMPLETED

    asyncio.run(main())
    assert otel.ended_once(otel.span("invoke_agent w"))
    assert otel.ended_once(otel.span("invoke_agent lifespan"))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        # Stopped from outside: CANCELLED, as API_CONTRACT.md's "Our change" says.
        (KeyboardInterrupt, AgentStatus.CANCELLED),
        (SystemExit, AgentStatus.CANCELLED),
        (GeneratorExit, AgentStatus.CANCELLED),
    ],
)
def test_any_base_exception_ends_the_worker(
    otel: Otel, error: type[BaseException], status: AgentStatus
) -> None:
    orch = Orchestrator(role="w", phase="p", **otel.kwargs())
    with pytest.raises(error), orch.session() as session:
        raise error()
    assert session.worker.status == status
    attrs = dict(otel.span("invoke_agent w").attributes or {})
    expected = "failed" if status == AgentStatus.FAILED else "cancelled"
    assert attrs["techrevati.session.outcome"] == expected


# --- 8. our processor goes first -------------------------------------------------------------


class _Seen(SpanProcessor):
    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


def test_a_refused_span_leaves_no_half_started_span_in_earlier_processors() -> None:
    provider = TracerProvider()
    seen = _Seen()
    provider.add_span_processor(seen)  # the user's, added before ours
    ensure_limits_processor(provider)
    tracer = provider.get_tracer("some.genai.library")
    orch = Orchestrator(role="w", phase="p", max_iterations=1, tracer_provider=provider)
    with orch.session():
        for _ in range(3):
            try:
                with tracer.start_as_current_span(
                    "chat usd-1", attributes={"gen_ai.operation.name": "chat"}
                ):
                    pass
            except MaxIterationsExceededError:
                pass
    assert seen.started == seen.ended == 2  # the session span and the one admitted call


# --- session.wrap carries a session into plain threads ----------------------------------------


def test_wrap_carries_the_session_into_plain_threads(otel: Otel) -> None:
    ran: list[int] = []

    @agent_turn("usd-1", usage=UsageSnapshot())
    def ask() -> None:
        ran.append(1)

    def worker() -> None:
        for _ in range(20):
            with contextlib.suppress(MaxIterationsExceededError):
                ask()

    with agent_session("w", max_iterations=25, **otel.kwargs()) as session:
        threads = [threading.Thread(target=session.wrap(worker)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(ran) == 25  # 60 attempts, the cap holds in every thread
    assert session._iteration_count == 25
    with pytest.raises(TypeError, match="wrap needs a callable"):
        session.wrap("not callable")  # type: ignore[arg-type]


# --- spans known late, and two spans for one request -----------------------------------------


def _start_plain(otel: Otel, name: str, **attrs: Any) -> Any:
    return otel.tracer_provider.get_tracer("late.library").start_span(name, attributes=attrs)


def test_a_span_known_as_a_model_call_only_at_its_end_is_booked(otel: Otel) -> None:
    with agent_session("w", max_iterations=1, **otel.kwargs()) as session:
        session.run_turn(lambda: None, model="usd-1", usage=UsageSnapshot())
        span = _start_plain(otel, "openai.response")  # operation name arrives later
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "usd-1")
        _end_with_usage(span, 2)
    # It could not be refused (the cap was reached before it), but it is counted and booked.
    assert session._iteration_count == 2
    assert session.tracker.turns[-1] == ("usd-1", UsageSnapshot(2, 0))


def test_overlapping_sibling_spans_of_one_request_count_once(otel: Otel) -> None:
    with agent_session("w", **otel.kwargs()) as session:
        # Two instrumentations describe one request; neither is the other's parent.
        first = _library_span(otel)
        second = _library_span(otel, scope="another.genai.library")
        _end_with_usage(second, 3)
        _end_with_usage(first, 3)
    assert session._iteration_count == 1
    assert session.tracker.turns == [("usd-1", UsageSnapshot(3, 0))]


def test_overlapping_spans_of_one_producer_are_separate_requests(otel: Otel) -> None:
    # One instrumentation describes one request with one span: two of its spans open
    # at once on one thread are two requests (streams opened, then read), never one.
    with agent_session("w", max_iterations=2, **otel.kwargs()) as session:
        first = _library_span(otel)
        second = _library_span(otel)
        with pytest.raises(MaxIterationsExceededError):
            _library_span(otel)
        _end_with_usage(second, 3)
        _end_with_usage(first, 3)
    assert session._iteration_count == 2
    assert session.tracker.total_cost() == 6.0


def test_calls_one_after_another_or_on_other_threads_are_separate(otel: Otel) -> None:
    with agent_session("w", **otel.kwargs()) as session:
        _end_with_usage(_library_span(otel), 1)
        _end_with_usage(_library_span(otel), 1)
        held = _library_span(otel)
        other = threading.Thread(
            target=session.wrap(lambda: _end_with_usage(_library_span(otel), 1))
        )
        other.start()
        other.join()
        _end_with_usage(held, 1)
    assert session._iteration_count == 4
    assert session.tracker.total_cost() == 4.0


def test_a_coroutine_s_own_timeout_error_is_not_relabelled(otel: Otel) -> None:
    async def main() -> None:
        async def own_timeout() -> None:
            raise TimeoutError("the provider's own deadline")

        async with Orchestrator(role="w", phase="p", **otel.kwargs()).asession() as session:
            with pytest.raises(TimeoutError) as err:
                await session.arun_turn(own_timeout, model="usd-1", timeout=5.0)
            assert not isinstance(err.value, TurnTimeoutError)
            with pytest.raises(TurnTimeoutError):
                await session.arun_turn(lambda: asyncio.sleep(1), model="usd-1", timeout=0.01)

    asyncio.run(main())


def test_handoff_targets_nobody_starts_do_not_pile_up(otel: Otel) -> None:
    from techrevati.runtime import AgentRegistry

    registry = AgentRegistry(finished_window=8)
    orch = Orchestrator(role="w", phase="p", registry=registry, **otel.kwargs())
    for _ in range(200):
        with orch.session() as session:
            session.handoff_to("editor", reason="review")
    assert len(registry._workers) <= 2 * 8 + 2


def test_token_counts_no_exporter_can_carry_are_refused_at_the_api(otel: Otel) -> None:
    huge = UsageSnapshot(2**64, 0)
    with pytest.raises(ValueError, match=r"usage.input_tokens must be < 2\*\*63"):
        agent_turn("usd-1", usage=huge)
    orch = Orchestrator(role="w", phase="p", max_iterations=3, **otel.kwargs())
    with orch.session() as session:
        with pytest.raises(ValueError, match="input_tokens"):
            session.run_turn(lambda: None, model="usd-1", usage=huge)
        with pytest.raises(ValueError, match=r"estimate_usage\(\).output_tokens"):
            session.run_turn(
                lambda: None, model="usd-1", estimate_usage=lambda _: UsageSnapshot(0, 2**63)
            )
    # The first was refused before it ran; the second's call ran before its estimate
    # was refused, so that call is booked (as a call without usage), once.
    assert session.tracker.turn_count == 1


class _BrokenSampler:
    """A user's sampler that fails on its third decision (after the session span and one turn)."""

    def __init__(self) -> None:
        self.calls = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("sampler bug")
        return ALWAYS_ON.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "broken"


def test_a_turn_whose_span_cannot_start_is_neither_counted_nor_reserved() -> None:
    # Admission happens before the span starts; a span that then fails to start
    # (here the user's sampler raises) must leave the ledger as it was.
    provider = TracerProvider(sampler=_BrokenSampler())  # type: ignore[arg-type]

    @agent_turn("usd-1", usage=ONE)
    def ask() -> str:
        return "ran"

    with agent_session(
        "writer", tracer_provider=provider, budget_usd=5.0, enforce_budget=True, max_iterations=3
    ) as session:
        assert ask() == "ran"
        with pytest.raises(RuntimeError, match="sampler bug"):
            ask()
        ledger = session._scope.ledger  # type: ignore[union-attr]
        assert (ledger.iterations, ledger.calls, ledger.reserved) == (1, 1, 0.0)
        assert ledger.spent == 1.0
        assert ask() == "ran"  # the failed start did not use up a call
        assert ask() == "ran"
        with pytest.raises(MaxIterationsExceededError):
            ask()
        assert (ledger.iterations, ledger.spent, ledger.reserved) == (3, 3.0, 0.0)


def test_an_abandoned_probe_makes_at_most_one_call_wait() -> None:
    # A model's probe whose call never ends (a stream dropped unread) held every later
    # first call of that model for probe_wait_s each; now one wait at most, then the
    # next call probes anew.
    import time

    from techrevati.runtime.telemetry.limits.ledger import Ledger
    from techrevati.runtime.usage_tracking import UsageTracker

    ledger = Ledger(UsageTracker(), budget_usd=1.0, enforce_budget=True, probe_wait_s=0.2)
    ledger.attach(None)
    abandoned = ledger.admit("m", 0.0, ours=True, probe=True)
    assert abandoned.probe is not None
    time.sleep(0.25)
    started = time.monotonic()
    again = ledger.admit("m", 0.0, ours=True, probe=True)  # no wait: the old probe is lost
    assert time.monotonic() - started < 0.15
    assert again.probe is not None and again.probe is not abandoned.probe
