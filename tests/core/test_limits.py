"""Budget and iteration caps, enforced by the span processor, for our and others' spans."""

from __future__ import annotations

import asyncio
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from otel_harness import Otel
from techrevati.runtime import (
    BudgetExceededError,
    MaxIterationsExceededError,
    Orchestrator,
    UsageSnapshot,
)

pytestmark = pytest.mark.usefixtures("priced")


def _library_chat(otel: Otel, model: str, inp: int, out: int, cached: int = 0) -> None:
    """What a third-party GenAI instrumentation does: its own chat span with usage."""
    tracer = otel.tracer_provider.get_tracer("some.genai.library")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": model,
    }
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs) as s:
        s.set_attribute("gen_ai.usage.input_tokens", inp)
        s.set_attribute("gen_ai.usage.output_tokens", out)
        if cached:
            s.set_attribute("gen_ai.usage.cache_read.input_tokens", cached)


def test_cap_never_starts_call_max_plus_one(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=3, **otel.orch_kwargs())
    calls = 0

    def fn() -> int:
        nonlocal calls
        calls += 1
        return calls

    with orch.session() as session:
        for _ in range(3):
            session.run_turn(fn, model="model-a")
        with pytest.raises(MaxIterationsExceededError) as err:
            session.run_turn(fn, model="model-a")
        assert session._iteration_count == 3
        with pytest.raises(RuntimeError):
            session._iteration_count = 2  # a failed turn still carries its iteration
            session.run_turn(lambda: (_ for _ in ()).throw(RuntimeError("x")), model="model-a")
    assert calls == 3
    assert err.value.max_iterations == 3
    turns = [s for s in otel.spans() if s.name == "chat model-a"]
    iterations = [dict(s.attributes or {})["techrevati.session.iteration"] for s in turns]
    assert iterations == [1, 2, 3, 3]
    root = otel.span("invoke_agent w")
    hits = [e for e in root.events if e.name == "techrevati.limit.hit"]
    assert [dict(e.attributes or {})["techrevati.limit.kind"] for e in hits] == ["max_iterations"]
    assert otel.metric_sum("techrevati.limit.hits", techrevati__limit__kind="max_iterations") == 1
    # recovery bookkeeping for the failed turn only, none for the cap hit
    assert [e.scenario for e in session.recovery.events] == ["llm_error"]


def test_cap_zero_refuses_first_turn(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=0, **otel.orch_kwargs())
    with pytest.raises(MaxIterationsExceededError), orch.session() as session:
        session.run_turn(lambda: pytest.fail("must not run"), model="model-a")


def test_budget_crossing_turn_raises_after_completing_then_refuses(otel: Otel) -> None:
    # model-b: 1 USD per million input tokens
    orch = Orchestrator(
        role="w", phase="p", budget_usd=0.0015, enforce_budget=True, **otel.orch_kwargs()
    )
    ran: list[int] = []
    with orch.session() as session:
        session.run_turn(lambda: ran.append(1), model="model-b", usage=UsageSnapshot(1000, 0))
        with pytest.raises(BudgetExceededError) as crossing:
            session.run_turn(lambda: ran.append(2), model="model-b", usage=UsageSnapshot(1000, 0))
        assert ran == [1, 2]  # the crossing turn completed
        assert crossing.value.current_cost_usd == pytest.approx(0.002)
        with pytest.raises(BudgetExceededError):
            session.run_turn(lambda: ran.append(3), model="model-b", usage=UsageSnapshot(1, 0))
        assert ran == [1, 2]  # refused before its body ran
        # a third-party span over budget is refused at start as well
        with pytest.raises(BudgetExceededError):
            _library_chat(otel, "model-b", 10, 10)
    # One stop is one limit hit: the refusals after the crossing are the same stop.
    budget_events = [e for e in session.events if e.detail and "budget exceeded" in e.detail]
    assert len(budget_events) == 1
    assert otel.metric_sum("techrevati.limit.hits", techrevati__limit__kind="budget") == 1
    root = otel.span("invoke_agent w")
    assert len([e for e in root.events if e.name == "techrevati.limit.hit"]) == 1
    assert session.tracker.turn_count == 2


def test_unenforced_budget_reports_each_crossing_once(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", budget_usd=0.0005, **otel.orch_kwargs())
    with orch.session() as session:
        for _ in range(5):
            session.run_turn(lambda: None, model="model-b", usage=UsageSnapshot(1000, 0))
    # One crossing: one event, one limit hit, however many turns follow it.
    assert [e.detail for e in session.events if e.event.value == "agent.failed"] == [
        "budget exceeded: $0.0010"
    ]
    assert otel.metric_sum("techrevati.limit.hits", techrevati__limit__kind="budget") == 1
    root = otel.span("invoke_agent w")
    hits = [e for e in root.events if e.name == "techrevati.limit.hit"]
    assert len(hits) == 1
    assert session.tracker.turn_count == 5


def test_third_party_spans_are_priced_into_the_ledger(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", **otel.orch_kwargs())
    with orch.session() as session:
        _library_chat(otel, "model-a", inp=5000, out=100, cached=4000)
    # input 5000 includes 4000 cached: 1000 at 3.0, 4000 at 0.3, 100 out at 15.0
    expected = (1000 * 3.0 + 4000 * 0.3 + 100 * 15.0) / 1e6
    assert session.tracker.total_cost() == pytest.approx(expected, rel=1e-12)
    assert session.tracker.turns == [("model-a", UsageSnapshot(1000, 100, 0, 4000))]
    assert session._iteration_count == 1
    library_span = otel.span("chat model-a")
    assert dict(library_span.attributes or {})["techrevati.session.iteration"] == 1
    assert otel.metric_sum("techrevati.cost.usd") == pytest.approx(expected)
    root = dict(otel.span("invoke_agent w").attributes or {})
    assert root["techrevati.cost.usd"] == session.tracker.total_cost()


def test_library_span_inside_our_turn_is_not_counted_twice(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=2, **otel.orch_kwargs())
    with orch.session() as session:
        # our turn reports no usage: the library's numbers are used, once
        session.run_turn(lambda: _library_chat(otel, "model-b", 1000, 1000), model="model-b")
        # our turn reports usage: it wins, the nested span adds nothing
        session.run_turn(
            lambda: _library_chat(otel, "model-b", 1000, 1000),
            model="model-b",
            usage=UsageSnapshot(1000, 1000),
        )
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * (1000 * 1.0 + 1000 * 2.0) / 1e6)
    assert session._iteration_count == 2  # nested spans are not extra iterations
    assert otel.metric_sum("techrevati.cost.usd") == pytest.approx(0.006)


def test_unsampled_spans_still_enforce_limits(otel: Otel) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    orch = Orchestrator(
        role="w",
        phase="p",
        max_iterations=2,
        budget_usd=0.0015,
        enforce_budget=True,
        tracer_provider=provider,
        meter_provider=otel.meter_provider,
    )
    with orch.session() as session:
        session.run_turn(lambda: None, model="model-b", usage=UsageSnapshot(1000, 0))
        with pytest.raises(BudgetExceededError):
            session.run_turn(lambda: None, model="model-b", usage=UsageSnapshot(1000, 0))
        with pytest.raises(MaxIterationsExceededError):
            session.run_turn(lambda: None, model="model-b")
    assert session.tracker.turn_count == 2
    # booked once, in the ledger and in the cost metric alike
    assert otel.metric_sum("techrevati.cost.usd") == pytest.approx(0.002)


def test_threads_lose_no_update_and_never_pass_the_cap(otel: Otel) -> None:
    cap = 300
    orch = Orchestrator(role="w", phase="p", max_iterations=cap, **otel.orch_kwargs())
    started = 0
    lock = threading.Lock()
    refused = 0

    def body() -> None:
        nonlocal started
        with lock:
            started += 1

    with orch.session() as session:
        barrier = threading.Barrier(8)

        def worker() -> None:
            nonlocal refused
            barrier.wait()
            for _ in range(50):
                try:
                    session.run_turn(body, model="model-b", usage=UsageSnapshot(10, 10))
                except MaxIterationsExceededError:
                    with lock:
                        refused += 1

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert started == cap
    assert refused == 8 * 50 - cap
    assert session.tracker.turn_count == cap
    assert session.tracker.total_input_tokens == cap * 10
    assert session.tracker.total_cost() == pytest.approx(cap * 30 / 1e6)


def test_asyncio_tasks_share_one_ledger(otel: Otel) -> None:
    cap = 120
    orch = Orchestrator(role="w", phase="p", max_iterations=cap, **otel.orch_kwargs())
    bodies = 0

    async def body() -> None:
        nonlocal bodies
        bodies += 1
        await asyncio.sleep(0)

    async def main() -> int:
        async with orch.asession() as session:

            async def one() -> bool:
                try:
                    await session.arun_turn(body, model="model-b", usage=UsageSnapshot(1, 1))
                    return True
                except MaxIterationsExceededError:
                    return False

            results = await asyncio.gather(*(one() for _ in range(200)))
            assert session.tracker.turn_count == cap
            return sum(results)

    assert asyncio.run(main()) == cap
    assert bodies == cap


def test_turns_after_the_session_block_still_count(otel: Otel) -> None:
    orch = Orchestrator(role="w", phase="p", max_iterations=2, **otel.orch_kwargs())
    with orch.session() as session:
        session.run_turn(lambda: None, model="model-b", usage=UsageSnapshot(1000, 0))
    session.run_turn(lambda: None, model="model-b", usage=UsageSnapshot(1000, 0))
    with pytest.raises(MaxIterationsExceededError):
        session.run_turn(lambda: None, model="model-b")
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(0.002)


def test_one_stop_of_a_library_call_is_one_limit_hit(otel: Otel) -> None:
    # A library span cannot raise at its end: the crossing is booked there, and the
    # next call is refused at its start. That is one stop, so one hit everywhere.
    orch = Orchestrator(role="w", budget_usd=0.0015, enforce_budget=True, **otel.orch_kwargs())
    with pytest.raises(BudgetExceededError) as refused, orch.session():
        _library_chat(otel, "model-b", 2000, 0)  # $0.002 > $0.0015: booked, crosses
        _library_chat(otel, "model-b", 10, 0)  # refused before it starts
    assert refused.value.site is not None and refused.value.site.ran is False
    root = otel.span("invoke_agent w")
    hits = [e for e in root.events if e.name == "techrevati.limit.hit"]
    assert len(hits) == 1
    assert otel.metric_sum("techrevati.limit.hits", techrevati__limit__kind="budget") == 1
    # The session span names the limit that stopped it, not "llm_error".
    assert dict(root.attributes or {})["error.type"] == "budget"


def test_a_parents_cap_hit_inside_a_child_is_the_parents_hit(otel: Otel) -> None:
    parent = Orchestrator(role="planner", max_iterations=2, **otel.orch_kwargs())
    child = Orchestrator(role="researcher", max_iterations=5, **otel.orch_kwargs())
    with pytest.raises(MaxIterationsExceededError), parent.session(), child.session() as inner:
        for _ in range(3):
            inner.run_turn(lambda: None, model="model-a")
    planner, researcher = otel.span("invoke_agent planner"), otel.span("invoke_agent researcher")
    hits = [e for e in planner.events if e.name == "techrevati.limit.hit"]
    assert [dict(e.attributes or {})["techrevati.limit.kind"] for e in hits] == ["max_iterations"]
    assert "max_iterations=2" in str(dict(hits[0].attributes or {})["message"])
    assert not [e for e in researcher.events if e.name == "techrevati.limit.hit"]
    # Both spans the error ended say which limit stopped them.
    assert dict(researcher.attributes or {})["error.type"] == "max_iterations"
    assert dict(planner.attributes or {})["error.type"] == "max_iterations"
    assert otel.metric_sum("techrevati.limit.hits", techrevati__limit__kind="max_iterations") == 1
