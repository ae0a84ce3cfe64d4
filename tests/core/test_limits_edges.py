"""Limits and bookkeeping where the span tree is not the simple one.

Each case is one a user meets: their own span from another provider between the
session and the turn, a new root span, work that finishes after the session
block, a decorated turn called inside ``run_turn``, providers dropped after use.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_harness import Otel
from techrevati.runtime import (
    BudgetExceededError,
    MaxIterationsExceededError,
    Orchestrator,
    UsageSnapshot,
    agent_session,
    agent_turn,
    tool_call,
)

pytestmark = pytest.mark.usefixtures("priced")


@agent_turn("model-b", usage=UsageSnapshot(1000, 0))
def ask() -> str:
    return "ok"


def test_a_span_from_a_provider_without_our_processor_does_not_hide_turns(otel: Otel) -> None:
    app_tracer = TracerProvider().get_tracer("the.app")  # the user's own, separate provider
    calls = 0
    with (
        agent_session("w", max_iterations=2, **otel.kwargs()) as session,
        app_tracer.start_as_current_span("step"),
        pytest.raises(MaxIterationsExceededError),
    ):
        for _ in range(5):
            ask()
            calls += 1
    assert calls == 2
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(0.002)
    # the turns still belong to the session's trace through the active session
    assert {
        dict(s.attributes or {})["techrevati.session.iteration"] for s in otel.spans("chat")
    } == {
        1,
        2,
    }


def test_a_new_root_span_inside_the_session_still_belongs_to_it(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("background.work")
    orch = Orchestrator(
        role="w", phase="p", budget_usd=0.0015, enforce_budget=True, **otel.kwargs()
    )
    ran: list[int] = []
    with orch.session() as session, tracer.start_as_current_span("bg", context=Context()):
        session.run_turn(lambda: ran.append(1), model="model-b", usage=UsageSnapshot(1000, 0))
        with pytest.raises(BudgetExceededError):
            session.run_turn(lambda: ran.append(2), model="model-b", usage=UsageSnapshot(1000, 0))
        with pytest.raises(BudgetExceededError):
            session.run_turn(lambda: ran.append(3), model="model-b")
    assert ran == [1, 2]
    assert session.tracker.turn_count == 2


def test_work_finished_after_the_block_is_counted_once(otel: Otel) -> None:
    @tool_call()
    def research():  # type: ignore[no-untyped-def]
        for _ in range(3):
            ask()
            yield "chunk"

    with agent_session("w", **otel.kwargs()) as session:
        stream = research()
        next(stream)
    rest = list(stream)  # the last two turns run after the with-block
    assert rest == ["chunk", "chunk"]
    assert session._iteration_count == 3
    assert session.tracker.turn_count == 3
    assert session.tracker.total_cost() == pytest.approx(0.003)


def test_a_decorated_turn_inside_run_turn_is_a_call_of_its_own(otel: Otel) -> None:
    @agent_turn("model-b")
    def inner() -> dict[str, object]:
        return {"model": "model-b", "usage": {"prompt_tokens": 2000, "completion_tokens": 0}}

    with Orchestrator(role="w", phase="p", **otel.kwargs()).session() as session:
        # Explicit usage on the outer turn is booked as given, beside the inner call's.
        session.run_turn(inner, model="model-b", usage=UsageSnapshot(2000, 0))
        # The outer turn's result is the inner call's response: its usage is not booked twice.
        _, usage = session.run_turn(inner, model="model-b")
    assert usage == UsageSnapshot(2000, 0)  # what run_turn read and returns
    assert session._iteration_count == 4
    assert session.tracker.turn_count == 4
    assert session.tracker.total_cost() == pytest.approx(0.006)
    assert otel.metric_sum("techrevati.cost.usd") == pytest.approx(0.006)
    tokens = sum(p.sum for _, p in otel.metric_points("gen_ai.client.token.usage"))
    assert tokens == 6000
    (duration,) = otel.metric_points("gen_ai.client.operation.duration")
    assert duration[1].count == 4


def test_dropped_providers_are_not_kept_alive() -> None:
    refs = []
    for _ in range(20):
        tracer_provider, meter_provider = TracerProvider(), MeterProvider()
        with Orchestrator(
            role="w", phase="p", tracer_provider=tracer_provider, meter_provider=meter_provider
        ).session() as session:
            session.run_turn(lambda: None, model="model-b")
        tracer_provider.shutdown()
        meter_provider.shutdown()
        refs.append((weakref.ref(tracer_provider), weakref.ref(meter_provider)))
        del tracer_provider, meter_provider, session
    gc.collect()
    assert sum(t() is not None or m() is not None for t, m in refs) == 0


def test_a_closed_sessions_turn_inside_another_session_books_to_its_own(otel: Otel) -> None:
    first = Orchestrator(role="a", phase="p", **otel.kwargs())
    with first.session() as done:
        pass
    with Orchestrator(role="b", phase="p", **otel.kwargs()).session() as active:
        done.run_turn(lambda: None, model="model-b", usage=UsageSnapshot(1000, 0))
    assert (done.tracker.turn_count, done._iteration_count) == (1, 1)
    assert (active.tracker.turn_count, active._iteration_count) == (0, 0)


def test_a_span_processor_raising_in_on_end_never_fails_a_call_or_its_booking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The SDK lets a processor's on_end error through span.end(), which our calls run
    # before booking: each turn whose body succeeded raised, its reservation held and
    # its cost unbooked, so a budget of 2.5 calls refused the third with $0 spent.
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    class Broken(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("processor bug")

    provider = TracerProvider()
    provider.add_span_processor(Broken())

    @tool_call()
    def lookup() -> str:
        return "found"

    with agent_session(
        "w", budget_usd=0.0025, enforce_budget=True, tracer_provider=provider
    ) as session:
        assert [ask(), lookup(), ask()] == ["ok", "found", "ok"]
        with pytest.raises(BudgetExceededError):
            ask()  # the third call crosses: booked, then refused as it should be
    assert session._iteration_count == 3
    assert session.tracker.total_cost() == pytest.approx(0.003)
    assert session._ledger.reserved_nano == 0
    said = [r.getMessage() for r in caplog.records if "raised in on_end" in r.getMessage()]
    assert len(said) == 1 and "RuntimeError: processor bug" in said[0]


def test_run_turn_refuses_a_coroutine_and_a_callable_that_needs_arguments(otel: Otel) -> None:
    # An async function in a sync session's run_turn returned its coroutine: the body
    # never ran, yet the call was counted and booked at the usage given ($0.0011 here),
    # with only Python's "never awaited" warning at exit.
    async def call_model() -> str:
        return "never"

    def needs(prompt: str) -> str:
        return prompt

    with Orchestrator(role="w", **otel.kwargs()).session() as session:
        with pytest.raises(TypeError, match="returned a coroutine"):
            session.run_turn(call_model, model="model-b", usage=UsageSnapshot(1000, 50))
        with pytest.raises(TypeError, match="prompt"):
            session.run_turn(needs, model="model-b", usage=UsageSnapshot(1000, 50))  # type: ignore[arg-type]
        assert session._iteration_count == 0
        assert session.tracker.total_cost() == 0.0
        assert session.summary()["recovery_events"] == []


def test_a_session_used_after_its_block_says_so_once(otel: Otel) -> None:
    # run_turn after the with-block ran and booked with no word, while the exported
    # session span kept the total it ended with.
    with Orchestrator(role="w", **otel.kwargs()).session() as session:
        session.run_turn(lambda: "draft", model="model-b", usage=UsageSnapshot(1000, 0))
    with pytest.warns(RuntimeWarning, match="'w' .* is used after its block ended") as seen:
        session.run_turn(lambda: "late", model="model-b", usage=UsageSnapshot(1000, 0))
        session.run_turn(lambda: "later", model="model-b", usage=UsageSnapshot(1000, 0))
    assert len([w for w in seen if "used after its block" in str(w.message)]) == 1
    assert seen[0].filename == __file__
    assert session.tracker.total_cost() == pytest.approx(0.003)  # still counted


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("enforce_budget", "no", "enforce_budget must be True or False"),
        ("circuit_breaker", "model-api", "circuit_breaker must be a CircuitBreaker"),
        ("max_iterations", -1, "max_iterations must be >= 0"),
        ("role", "", "role"),
    ],
)
def test_an_orchestrator_field_set_after_construction_is_checked_at_the_next_session(
    field: str, value: object, error: str, otel: Otel
) -> None:
    # Only the cap and budget were checked again: enforce_budget = "no" enforced, and
    # circuit_breaker = "model-api" crashed the session's exit with an AttributeError.
    orch = Orchestrator(role="w", **otel.kwargs())
    setattr(orch, field, value)
    with pytest.raises((TypeError, ValueError), match=error):
        orch.session().__enter__()
    assert orch.registry.list_active() == []  # refused at its opening: no worker left


def test_a_shared_session_cap_past_what_its_store_counts_is_refused_where_it_is_written(
    otel: Otel,
) -> None:
    # agent_session("big", shared=True, max_iterations=2**53 + 1) was built, then its
    # opening failed with "FleetLimits max_calls must be in [0, 2**53]": a setting the
    # caller never wrote, at a line they did not write it on.
    cap = 2**53 + 1
    error = rf"max_iterations must be at most 2\*\*53 for a shared session .*got {cap}$"
    with pytest.raises(ValueError, match=error):
        agent_session("big", shared=True, max_iterations=cap)
    with pytest.raises(ValueError, match=error):
        Orchestrator(role="big", shared=True, max_iterations=cap, **otel.kwargs())
    assert Orchestrator(role="big", shared=True, max_iterations=2**53).max_iterations == 2**53
    local = Orchestrator(role="big", max_iterations=cap, **otel.kwargs())  # no store: no bound
    with local.session() as session:
        session.run_turn(lambda: "ok", model="model-b", usage=UsageSnapshot(1000, 0))
    assert session._iteration_count == 1
    local.shared = True  # set afterwards: refused at the next opening, leaving no worker
    with pytest.raises(ValueError, match=error):
        local.session().__enter__()
    assert local.registry.list_active() == []
    # The budget a shared session hands its store is held to the store's bounds up front.
    with pytest.raises(ValueError, match=r"budget_usd must be a finite number in \[0, 1e\+09\]"):
        agent_session("big", shared=True, budget_usd=2e9, enforce_budget=True)


def test_only_the_booking_that_crossed_a_budget_says_it_crossed_it() -> None:
    # Ten calls admitted together at a $0.50 estimate under $5, each costing $1: the
    # bookings took the session to $6, $7, ... $10, and each of those five errors said
    # "The call that crossed it ran and was paid for": five crossing calls for one
    # crossing. Only the first booking over the budget says so; the others say an
    # earlier call in flight had crossed it.
    import threading

    start = threading.Barrier(10)

    @agent_turn("model-b")
    def call() -> dict[str, object]:
        start.wait()  # every call admitted before any is booked
        return {"model": "model-b", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}

    errors: list[BudgetExceededError] = []

    def one() -> None:
        try:
            call()
        except BudgetExceededError as stop:
            errors.append(stop)

    with agent_session("w", budget_usd=5.0, enforce_budget=True, call_estimate_usd=0.5) as s:
        threads = [threading.Thread(target=s.wrap(one)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert s.tracker.total_cost() == pytest.approx(10.0)
    assert len(errors) == 5 and all(e.site is not None and e.site.ran for e in errors)
    first = [e for e in errors if "The call that crossed it ran" in str(e)]
    assert len(first) == 1  # 5 of 5 before
    assert first[0].site is not None and not first[0].site.later
    assert "The call that crossed it ran and was paid for" in str(first[0])
    for later in errors:
        if later is not first[0]:
            assert "The call that crossed it" not in str(later)
            assert "An earlier call, in flight alongside this call, had already crossed it" in (
                str(later)
            )
