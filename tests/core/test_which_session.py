"""Which session a call is in: one answer for every door, in the set-ups users have.

Threads that carry the OpenTelemetry context (``context.attach`` here; the real
``ThreadingInstrumentor`` in ``tests/interop/test_threading_instrumentor.py``)
are in the session whose span they carry, so its cap holds there; asyncio,
``to_thread`` and anyio keep working; a plain thread that carries nothing gets
one warning per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
from opentelemetry import context as otel_context

from otel_harness import Otel
from techrevati.runtime import (
    MaxIterationsExceededError,
    UsageSnapshot,
    agent_session,
    agent_turn,
)
from techrevati.runtime.telemetry.limits.membership import current_session

pytestmark = pytest.mark.usefixtures("priced")

USAGE = UsageSnapshot(1000, 100)


@agent_turn("model-a", usage=USAGE)
def ask(n: int) -> int:
    return n


@agent_turn("model-a", usage=USAGE)
async def aask(n: int) -> int:
    return n


def _attempt(fn: Any, n: int) -> str:
    try:
        fn(n)
    except MaxIterationsExceededError:
        return "refused"
    return "ran"


def _four_in_a_thread_attaching(ctx: otel_context.Context, fn: Any) -> list[str]:
    """Four attempts of ``fn`` in a thread that attached ``ctx`` (as ThreadingInstrumentor does)."""
    outcomes: list[str] = []

    def worker() -> None:
        token = otel_context.attach(ctx)
        try:
            outcomes.extend(_attempt(fn, n) for n in range(4))
        finally:
            otel_context.detach(token)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    return outcomes


def test_thread_attaching_the_session_context_is_capped(otel: Otel) -> None:
    # The regression of issue 20: 4 turns in a thread that attached the session's
    # OTel context, under max_iterations=2: 2 run, 2 refused (all 4 ran before).
    with agent_session("w", max_iterations=2, **otel.kwargs()) as session:
        ctx = otel_context.get_current()

        outcomes = _four_in_a_thread_attaching(ctx, ask)
    assert outcomes == ["ran", "ran", "refused", "refused"]
    assert session.tracker.turn_count == 2
    assert session.tracker.total_cost() == pytest.approx(2 * (3000 + 1500) / 1e6)
    session_span = otel.span("invoke_agent w")
    turns = otel.spans("chat model-a")
    assert len(turns) == 2
    assert all(t.parent is not None for t in turns)
    assert {t.parent.span_id for t in turns if t.parent} == {session_span.context.span_id}


def test_a_session_opened_in_a_thread_attaching_the_context_is_its_child(otel: Otel) -> None:
    # A sub-agent opens its own session in a thread that attached the planner's OTel
    # context: it is the planner's child, as the thread's calls are in the planner's
    # session. Before: a top-level session, and 3 such threads ran 12 turns (4 each)
    # under the planner's cap of 3, none counted by the planner; warned as a thread
    # that carries nothing.
    outcomes: list[str] = []
    parents: list[object] = []

    def worker(ctx: otel_context.Context) -> None:
        token = otel_context.attach(ctx)
        try:
            with agent_session("sub", max_iterations=100, **otel.kwargs()) as sub:
                parents.append(sub._ledger.parent)
                outcomes.extend(_attempt(ask, n) for n in range(4))
        finally:
            otel_context.detach(token)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("planner", max_iterations=3, **otel.kwargs()) as planner:
            ctx = otel_context.get_current()
            threads = [threading.Thread(target=worker, args=(ctx,)) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert sorted(outcomes) == ["ran"] * 3 + ["refused"] * 9
    assert planner._ledger.calls == 3  # each counted in the planner
    assert parents == [planner._ledger] * 3
    assert not [w for w in caught if "top-level session" in str(w.message)]
    planner_span = otel.span("invoke_agent planner")
    subs = otel.spans("invoke_agent sub")
    assert len(subs) == 3
    assert {s.parent.span_id for s in subs if s.parent} == {planner_span.context.span_id}


def test_asyncio_to_thread_and_anyio_keep_working(otel: Otel) -> None:
    async def main() -> list[str]:
        with agent_session("w", max_iterations=4, **otel.kwargs()):
            results = [_attempt(ask, 0)]
            results.append(await asyncio.to_thread(_attempt, ask, 1))
            results.append(await anyio.to_thread.run_sync(_attempt, ask, 2))
            await asyncio.gather(aask(3))
            try:
                await aask(4)
                results.append("ran")
            except MaxIterationsExceededError:
                results.append("refused")
            return results

    assert asyncio.run(main()) == ["ran", "ran", "ran", "refused"]


def test_pool_tasks_submitted_in_a_session_count_against_it(otel: Otel) -> None:
    # 8 turns from a ThreadPoolExecutor inside a capped session, no context carried by
    # the user: the tasks are the session's work, as an asyncio.gather of them would be.
    # (Before: all 8 ran outside it, said once by a warning, and the cap held nothing.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with (
            agent_session("w", max_iterations=2, **otel.kwargs()) as session,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            outcomes = list(pool.map(lambda n: _attempt(ask, n), range(8)))
        with (
            agent_session("v", budget_usd=1.0, enforce_budget=True, **otel.kwargs()) as v,
            ThreadPoolExecutor(max_workers=2) as pool,
        ):
            assert list(pool.map(lambda n: ask(n), range(4))) == [0, 1, 2, 3]
    assert sorted(outcomes) == ["ran"] * 2 + ["refused"] * 6
    assert session.tracker.turn_count == 2
    assert v.tracker.turn_count == 4 and v.summary()["usage"]["total_cost_usd"] > 0
    assert not [w for w in caught if "outside any session" in str(w.message)]
    # Their spans are the sessions' children, in the sessions' traces.
    turns = [s for s in otel.spans() if s.name.startswith("chat ")]
    agents = {s.context.span_id: s for s in otel.spans() if s.name.startswith("invoke_agent")}
    assert len(turns) == 6
    assert all(t.parent is not None and t.parent.span_id in agents for t in turns)


def _here() -> str | None:
    """The role of the session a call made here is in."""
    scope = current_session()
    return None if scope is None else scope.role


def test_a_pool_task_is_given_back_its_worker_as_it_found_it(otel: Otel) -> None:
    # The session is carried for the task only: the same worker, given a task outside
    # every session next, runs it outside (and a context the user carried in wins).
    with ThreadPoolExecutor(max_workers=1) as pool:
        with agent_session("first", max_iterations=1, **otel.kwargs()) as first:
            assert pool.submit(_here).result() == "first"
            with agent_session("inner", max_iterations=1, **otel.kwargs()):
                assert pool.submit(_here).result() == "inner"
                assert pool.submit(first.wrap(_here)).result() == "first"
        assert pool.submit(_here).result() is None
        assert pool.submit(otel_context.get_current).result() == otel_context.Context()


def _sub_agent(otel: Otel, topic: int) -> list[str]:
    """A sub-agent with a session (and cap) of its own: five attempts."""
    with agent_session(f"researcher-{topic}", max_iterations=5, **otel.kwargs()):
        return [_attempt(ask, n) for n in range(5)]


def test_a_sub_agent_session_opened_in_a_pool_task_is_the_planners_child(otel: Otel) -> None:
    # A planner fans out to sub-agents, each opening its own session in a pool task: a
    # top-level session, so the planner's limits never saw their calls, silently (a
    # probe: 15 calls ran under a planner budget of 3 calls). The task is known to be
    # the planner's (noted at submit): its session is the planner's child.
    with (
        warnings.catch_warnings(),
        agent_session("planner", max_iterations=4, **otel.kwargs()),
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        warnings.simplefilter("error")  # nothing escapes: nothing to say
        runs = list(pool.map(lambda topic: _sub_agent(otel, topic), range(3)))
    assert sum(run.count("ran") for run in runs) == 4
    assert sum(run.count("refused") for run in runs) == 11
    (parent,) = otel.spans("invoke_agent planner")
    children = [s for s in otel.spans() if s.name.startswith("invoke_agent researcher")]
    assert len(children) == 3
    for child in children:
        assert child.parent is not None and child.parent.span_id == parent.context.span_id


def test_sessions_in_nested_pools_and_after_their_submitter_closed_stay_under_the_planner(
    otel: Otel,
) -> None:
    # A review: a task a pool task submitted to another pool, and a task whose
    # submitting session closed before it opened its own (fire and forget), opened
    # top-level sessions: 15 of 15 calls ran under the planner's cap of 4, silently.
    with (
        agent_session("planner", max_iterations=4, **otel.kwargs()),
        ThreadPoolExecutor(max_workers=3) as outer,
        ThreadPoolExecutor(max_workers=3) as inner,
    ):
        nested = list(outer.map(lambda t: inner.submit(_sub_agent, otel, t).result(), range(3)))
    assert sum(run.count("ran") for run in nested) == 4

    go = threading.Event()

    def later(topic: int) -> list[str]:
        assert go.wait(10)
        return _sub_agent(otel, topic)

    with (
        agent_session("planner", max_iterations=4, **otel.kwargs()),
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        with agent_session("mid", max_iterations=10, **otel.kwargs()):
            futures = [pool.submit(later, t) for t in range(3)]
        go.set()  # 'mid' has closed: the tasks open their sessions under 'planner'
        runs = [future.result() for future in futures]
    assert sum(run.count("ran") for run in runs) == 4


def test_a_pool_reused_after_its_session_closed_does_not_parent_later_sessions(
    otel: Otel,
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        with agent_session("first", max_iterations=1, **otel.kwargs()):
            assert pool.submit(_attempt, ask, 0).result() == "ran"
        # The worker thread was started by the first session's task: a later task's
        # session, submitted outside every session, is its own.
        assert pool.submit(_sub_agent, otel, 1).result() == ["ran"] * 5


def test_a_sub_agent_session_on_a_thread_says_it_escapes_and_wrap_makes_it_a_child(
    otel: Otel,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("planner", max_iterations=4, **otel.kwargs()) as planner:
            escaped: list[list[str]] = []
            thread = threading.Thread(target=lambda: escaped.append(_sub_agent(otel, 0)))
            thread.start()
            thread.join()
            carried: list[list[str]] = []
            thread = threading.Thread(
                target=planner.wrap(lambda: carried.append(_sub_agent(otel, 1)))
            )
            thread.start()
            thread.join()
    said = [w for w in caught if "was opened on a thread" in str(w.message)]
    assert len(said) == 1
    message = str(said[0].message)
    assert message.startswith(
        "session 'researcher-0' was opened on a thread that session 'planner' (with limits) "
        "started: a thread does not carry the session that started it"
    )
    assert "wrap(fn)" in message and "ThreadPoolExecutor" in message
    assert said[0].filename == __file__
    assert escaped == [["ran"] * 5]
    assert carried == [["ran"] * 4 + ["refused"]]  # a child: the planner's cap of 4 holds


def test_worker_threads_of_pools_started_inside_a_session_are_not_its(otel: Otel) -> None:
    # A review: a worker an async request's session started (anyio's, a ThreadPool's)
    # later ran another request's sync work, whose session was told it escaped the
    # first request's. Workers serve whoever comes next: not noted.
    from multiprocessing.pool import ThreadPool

    async def start_anyio_worker() -> list[threading.Thread]:
        return await anyio.to_thread.run_sync(lambda: [threading.current_thread()])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("request-a", max_iterations=1, **otel.kwargs()):
            pool = ThreadPool(1)
            try:
                # Its worker started inside 'request-a'; another request's work (no
                # session carried in) opens a session of its own there.
                assert pool.apply(_sub_agent, (otel, 0)) == ["ran"] * 5
            finally:
                pool.close()
                pool.join()
            workers = anyio.run(start_anyio_worker)
    assert not [w for w in caught if "was opened on a thread" in str(w.message)]
    assert workers and not any(hasattr(t, "_techrevati_started_in") for t in workers)


def test_no_escape_is_said_for_threads_started_outside_every_session(otel: Otel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert pool.submit(_sub_agent, otel, 0).result() == ["ran"] * 5
            thread = threading.Thread(target=_sub_agent, args=(otel, 1))
            thread.start()
            thread.join()
        with agent_session("main", max_iterations=5, **otel.kwargs()):
            pass  # (opened on the main thread: no starter)


def test_session_wrap_carries_the_session_into_a_pool(otel: Otel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no escape warning: every call is in the session
        with (
            agent_session("w", max_iterations=3, **otel.kwargs()) as session,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            outcomes = list(pool.map(session.wrap(lambda n: _attempt(ask, n)), range(6)))
    assert sorted(outcomes) == ["ran"] * 3 + ["refused"] * 3


def test_no_warning_on_the_thread_that_opened_the_session(otel: Otel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with agent_session("w", max_iterations=2, **otel.kwargs()):
            pass
        ask(1)  # outside any session, on the session's own thread, after it closed
        with agent_session("w", max_iterations=2, **otel.kwargs()):
            pass


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_context_captured_under_app_spans_that_ended_stays_in_the_session(
    otel: Otel, depth: int
) -> None:
    # Found in review: a context captured under 2+ nested application spans that
    # ended before the thread ran lost its session (4 of 4 ran, none booked). The
    # session travels in the OTel context itself, whatever the span ancestry.
    tracer = otel.tracer_provider.get_tracer("app")  # real, recording spans
    with agent_session("w", max_iterations=2, **otel.kwargs()) as session:
        spans = [tracer.start_as_current_span(f"app-{k}") for k in range(depth)]
        for span in spans:
            span.__enter__()
        ctx = otel_context.get_current()
        for span in reversed(spans):
            span.__exit__(None, None, None)

        outcomes = _four_in_a_thread_attaching(ctx, ask)
    assert outcomes == ["ran", "ran", "refused", "refused"]
    assert session.tracker.turn_count == 2


def test_a_session_closed_out_of_order_is_no_longer_current(otel: Otel) -> None:
    # The parent's block exited before its child's: the child's exit restored the closed
    # parent as current for good, and every later call outside any block was counted by
    # it and refused ("session 'parent' reached max_iterations=2") though no session
    # was open.
    import contextvars

    from opentelemetry import trace

    from techrevati.runtime import current_agent_session

    def out_of_order() -> tuple[object, list[int]]:
        parent = agent_session("parent", max_iterations=2, **otel.kwargs())
        parent.__enter__()
        child = agent_session("child", max_iterations=10, **otel.kwargs())
        child.__enter__()
        parent.__exit__(None, None, None)
        child.__exit__(None, None, None)
        # Another instrumentation's model span under the context the blocks left.
        tracer = otel.tracer_provider.get_tracer("opentelemetry.instrumentation.genai.openai")
        for _ in range(3):
            with tracer.start_as_current_span("chat model-a", kind=trace.SpanKind.CLIENT):
                pass
        return current_agent_session(), [ask(n) for n in range(3)]

    # In a context of its own: the blocks leave it as they found it only in order.
    assert contextvars.copy_context().run(out_of_order) == (None, [0, 1, 2])


async def _after_the_block(otel: Otel, own_session: bool) -> list[str]:
    """Four calls of a task created inside a capped block (cap 2), made after it ended;
    with ``own_session`` the task first runs a session of its own."""
    async with agent_session("outer", max_iterations=2, **otel.kwargs()):
        gate = asyncio.Event()

        async def later() -> list[str]:
            await gate.wait()
            if own_session:
                async with agent_session("step", **otel.kwargs()):
                    pass
            seen = []
            for n in range(4):
                try:
                    await aask(n)
                    seen.append("ran")
                except MaxIterationsExceededError:
                    seen.append("refused")
            return seen

        task = asyncio.create_task(later())
    gate.set()
    return await task


def test_work_begun_inside_a_block_still_counts_there_after_it_ends(otel: Otel) -> None:
    # A task created inside the block (and a thread started with session.wrap) runs in
    # the block's own context: its calls after the block ended count against the
    # session's cap, as before the block ended.
    assert asyncio.run(_after_the_block(otel, False)) == ["ran", "ran", "refused", "refused"]

    with agent_session("t", max_iterations=2, **otel.kwargs()) as session:
        started = threading.Event()
        gate = threading.Event()

        def worker() -> list[str]:
            started.set()
            gate.wait(30)
            return [_attempt(ask, n) for n in range(4)]

        pool = ThreadPoolExecutor(1)
        future = pool.submit(session.wrap(worker))
        assert started.wait(30)
    gate.set()
    assert future.result(30) == ["ran", "ran", "refused", "refused"]
    pool.shutdown()


def test_a_task_that_opens_its_own_session_keeps_the_block_it_began_in(otel: Otel) -> None:
    # A task created inside a block ran a session of its own after the block ended: that
    # session's exit took the closed outer session for one exited out of order in the
    # task, and the task's later calls ran outside every session (5 of 5, cap 2).
    assert asyncio.run(_after_the_block(otel, True)) == ["ran", "ran", "refused", "refused"]


def test_a_long_lived_pool_task_lets_go_of_the_session_it_was_given_once_it_closed(
    otel: Otel,
) -> None:
    # A library's queue consumer, submitted to its pool on first use, inside request A:
    # it serves every later request. Once A closed, the jobs it runs are not A's: they
    # ran counted against A (refused by A's cap of 2 from B's second job on).
    jobs: queue.Queue[Any] = queue.Queue()

    def consume() -> None:
        while (done := jobs.get()) is not None:
            done.put((_here(), _attempt(ask, 0)))

    def run_job() -> tuple[str | None, str]:
        done: queue.Queue[tuple[str | None, str]] = queue.Queue()
        jobs.put(done)
        return done.get(timeout=30)

    with ThreadPoolExecutor(max_workers=1) as pool:
        with agent_session("request-a", max_iterations=2, **otel.kwargs()) as a:
            pool.submit(consume)  # lazily, by the first request that needs it
            assert run_job() == ("request-a", "ran")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (outside any session: said once, tested above)
            with agent_session("request-b", max_iterations=10, **otel.kwargs()):
                assert [run_job() for _ in range(3)] == [(None, "ran")] * 3
        jobs.put(None)
    assert a.tracker.turn_count == 1


@pytest.mark.parametrize("nested", [True, False])
def test_a_session_opened_after_the_one_a_task_was_given_closed_is_traced_where_it_counts(
    otel: Otel, nested: bool
) -> None:
    # Its limits go to the closed session's open parent (or nowhere): its span did not
    # follow, it stayed the closed session's child.
    closed = threading.Event()

    def task() -> None:
        closed.wait(5)
        with agent_session("own", max_iterations=3, **otel.kwargs()):
            ask(1)

    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as pool:
        if nested:
            stack.enter_context(agent_session("P", max_iterations=10, **otel.kwargs()))
        with agent_session("S", max_iterations=5, **otel.kwargs()):
            future = pool.submit(task)
        closed.set()
        future.result(5)
    spans = {s.context.span_id: s.name for s in otel.spans()}
    own = otel.span("invoke_agent own")
    parent = spans.get(own.parent.span_id) if own.parent is not None else None
    assert parent == ("invoke_agent P" if nested else None)


def test_a_task_that_leaves_a_generators_block_current_does_not_keep_its_session(
    otel: Otel,
) -> None:
    # A generator's block, begun in a carried task and suspended: the worker let go of
    # the block, but kept the session the task was given, for good.
    import gc
    import weakref

    from techrevati.runtime.telemetry.limits import membership

    def stream() -> Any:
        with agent_session("stream", max_iterations=5, **otel.kwargs()):
            yield 1

    with ThreadPoolExecutor(max_workers=1) as pool:
        with agent_session("outer", max_iterations=10, **otel.kwargs()):
            kept = weakref.ref(current_session())
            generator = stream()
            assert pool.submit(next, generator).result() == 1
        generator.close()
        del generator
        gc.collect()
        assert kept() is None
        assert pool.submit(membership.CARRIED.get).result() is None
