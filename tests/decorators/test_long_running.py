"""A long-running service: sessions its handlers got wrong must not stay behind.

A leak probe drove thread-pool and asyncio services for thousands of requests.
Sessions opened and exited grow nothing; these are the three ways one could
stay for the life of the process, with what it cost the requests after it:

- entered and never exited (a handler that returned inside its block): kept
  by the open-span table, and, on a pool worker, current for every later task
  of that worker, whose sessions then opened under its cap (97% refused);
- exited on another thread (a generator closed elsewhere): current where it
  was entered, and every later session there nested under its context;
- warnings whose text carries an amount or an id: each kept in the user's
  module's ``__warningregistry__`` (``tests/test_caller.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import queue
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from otel_harness import Otel
from techrevati.runtime import MaxIterationsExceededError, Orchestrator, UsageSnapshot
from techrevati.runtime.decorators import agent_session, current_agent_session
from techrevati.runtime.decorators.session import _OPEN_BLOCKS
from techrevati.runtime.telemetry.calls import session as core_session
from techrevati.runtime.telemetry.calls.instrument import close_all_open_sessions
from techrevati.runtime.telemetry.calls.session import ABANDONED, SessionScope
from techrevati.runtime.telemetry.limits import membership

USAGE = UsageSnapshot(input_tokens=10, output_tokens=1)


def _alive(role: str) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is SessionScope and o.role == role)


@pytest.fixture
def reap_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reap a collected session at the next open (else a second after it was found)."""
    monkeypatch.setattr(core_session, "_REAP_AFTER_S", 0.0)


@pytest.mark.usefixtures("reap_at_once")
def test_a_session_never_exited_is_collected_its_span_ended_and_said(otel: Otel) -> None:
    async def handler(serial: int) -> None:
        block = agent_session("dropped", max_iterations=5, **otel.kwargs())
        session = await block.__aenter__()

        async def model() -> str:
            return "ok"

        await session.arun_turn(model, model="gpt-4o-mini", usage=USAGE)
        # returns inside its block: never exited

    async def service() -> None:
        await asyncio.gather(*(handler(serial) for serial in range(20)))

    before = len(membership.OPEN)
    asyncio.run(service())
    gc.collect()
    assert _alive("dropped") == 0  # nothing of ours keeps them (their ledgers' listeners)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with agent_session("next", **otel.kwargs()):  # the next session reaps them
            pass
    assert len(membership.OPEN) == before
    said = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(said) == 20
    assert "session 'dropped' was opened and never closed" in str(said[0].message)
    assert said[0].filename == __file__  # the line that entered it
    ended = otel.spans("invoke_agent dropped")
    assert len(ended) == 20
    assert {dict(span.attributes or {})["error.type"] for span in ended} == {ABANDONED}


def _enter_and_return(otel: Otel) -> None:
    block = agent_session("leaked", max_iterations=2, **otel.kwargs())
    block.__enter__()  # a handler that returns inside its block


def _request(otel: Otel) -> str:
    with agent_session("request", max_iterations=2, **otel.kwargs()) as session:
        for _ in range(2):
            session.run_turn(lambda: "ok", model="gpt-4o-mini", usage=USAGE)
        assert membership.CURRENT.get() is session._scope
    assert membership.CURRENT.get() is None
    return "served"


@pytest.mark.usefixtures("reap_at_once")
def test_a_pool_task_that_left_its_session_open_does_not_hold_the_next_tasks(
    otel: Otel,
) -> None:
    with agent_session("warm-up", **otel.kwargs()):
        pass  # the pool's wrappers are installed once a session opened
    with ThreadPoolExecutor(1) as pool, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool.submit(_enter_and_return, otel).result()
        served = [pool.submit(_request, otel).result() for _ in range(5)]
        gc.collect()  # nothing holds the leaked session now: the next open reaps it
        served.append(pool.submit(_request, otel).result())
    assert served == ["served"] * 6  # none refused by the leaked session's cap of 2
    [leaked] = otel.spans("invoke_agent leaked")
    assert dict(leaked.attributes or {})["error.type"] == ABANDONED
    for span in otel.spans("invoke_agent request"):
        assert span.parent is None  # a top-level session, as its request's
    [said] = [w for w in caught if "still open when the task returned" in str(w.message)]
    assert "session 'leaked'" in str(said.message)
    assert said.filename == __file__


def test_a_task_submitted_before_the_wrappers_is_let_go_of_by_the_next(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool created, and its first task submitted, before any session opened."""
    with agent_session("warm-up", **otel.kwargs()):
        pass
    unwrapped = ThreadPoolExecutor.submit.__wrapped__  # type: ignore[attr-defined]
    with ThreadPoolExecutor(1) as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unwrapped(pool, _enter_and_return, otel).result()
        served = [pool.submit(_request, otel).result() for _ in range(3)]
    assert served == ["served"] * 3
    _reap_now(monkeypatch)


def _streaming_handler(otel: Otel) -> Iterator[str]:
    with agent_session("stream", max_iterations=3, **otel.kwargs()) as session:
        for serial in range(3):
            session.run_turn(lambda: "ok", model="gpt-4o-mini", usage=USAGE)
            yield f"chunk {serial}"


def test_a_block_exited_on_another_thread_lets_go_of_the_thread_that_entered_it(
    otel: Otel,
) -> None:
    stream = _streaming_handler(otel)
    assert next(stream) == "chunk 0"  # entered here
    closer = threading.Thread(target=stream.close)  # closed (exited) on another thread
    closer.start()
    closer.join()
    [closed] = otel.spans("invoke_agent stream")
    stale = membership.CURRENT.get()
    assert stale is not None and stale.closed  # still current here, until...
    for _ in range(3):
        _request(otel)  # ...a session opens here: top-level, nothing refused
    assert membership.CURRENT.get() is None
    assert _OPEN_BLOCKS.get() == ()
    spans = otel.spans("invoke_agent request")
    assert len(spans) == 3
    assert all(span.parent is None for span in spans)  # not under the closed stream's span
    assert closed.context is not None
    del stream, stale
    gc.collect()
    assert _alive("stream") == 0


def test_a_task_that_copied_the_block_keeps_its_session_after_it_ends(otel: Otel) -> None:
    """The other side of the rule above: work begun inside a block still counts there."""

    async def main() -> None:
        started = asyncio.Event()
        finish = asyncio.Event()

        async def worker(block_session: object) -> None:
            started.set()
            await finish.wait()
            assert membership.CURRENT.get() is getattr(block_session, "_scope", None)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "used after its block ended": it is
                    await block_session.arun_turn(  # type: ignore[attr-defined]
                        _answer, model="gpt-4o-mini", usage=USAGE
                    )
            except MaxIterationsExceededError:
                raise AssertionError("refused") from None

        async with agent_session("copied", max_iterations=3, **otel.kwargs()) as session:
            task = asyncio.create_task(worker(session))
            await started.wait()
        finish.set()
        await task

    asyncio.run(main())


async def _answer() -> str:
    return "ok"


def _endpoint(otel: Otel) -> type:
    class Endpoint:
        """A streaming endpoint object that keeps its generator: a reference cycle."""

        @agent_session("cycled", max_iterations=5, **otel.kwargs())
        def stream(self) -> Iterator[int]:
            session = current_agent_session()
            assert session is not None
            for serial in range(3):
                session.run_turn(lambda: "ok", model="gpt-4o-mini", usage=USAGE)
                yield serial

        @agent_session("acycled", max_iterations=5, **otel.kwargs())
        async def astream(self) -> AsyncIterator[int]:
            session = current_agent_session()
            assert session is not None
            for serial in range(3):
                await session.arun_turn(_answer, model="gpt-4o-mini", usage=USAGE)  # type: ignore[union-attr]
                yield serial

    return Endpoint


def _reap_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reap what this test left open, here (not in a later test)."""
    gc.collect()
    monkeypatch.setattr(core_session, "_REAP_AFTER_S", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        core_session._reap_abandoned()


@pytest.mark.usefixtures("reap_at_once")
def test_a_generator_closed_by_the_collector_is_a_completed_session_not_an_abandoned_one(
    otel: Otel,
) -> None:
    """The collector clears the session's weak references before it closes the
    generator holding it (a reference cycle): that close is the session's exit."""
    endpoint = _endpoint(otel)()
    endpoint.gen = endpoint.stream()
    next(endpoint.gen)  # one chunk, then the client left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del endpoint
        gc.collect()
        with agent_session("next"):
            pass
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    [span] = otel.spans("invoke_agent cycled")
    attributes = dict(span.attributes or {})
    assert attributes.get("error.type") != ABANDONED
    assert attributes["techrevati.session.turns"] == 1
    assert otel.counter.ends[span.context.span_id] == 1  # type: ignore[union-attr]


def test_an_async_generator_closed_after_its_collection_keeps_its_costs(otel: Otel) -> None:
    """asyncio closes a collected async generator in a task it schedules: a session opened
    before that task runs does not reap the generator's session (found unreachable first)."""

    async def main() -> None:
        endpoint = _endpoint(otel)()
        endpoint.agen = endpoint.astream()
        await endpoint.agen.__anext__()
        del endpoint
        gc.collect()
        async with agent_session("next"):  # before the generator's aclose() ran
            pass
        for _ in range(5):
            await asyncio.sleep(0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    [span] = otel.spans("invoke_agent acycled")
    attributes = dict(span.attributes or {})
    assert attributes.get("error.type") != ABANDONED
    assert attributes["techrevati.session.turns"] == 1
    assert attributes["techrevati.cost.usd"] > 0


def test_under_w_error_an_abandoned_session_does_not_fail_the_next_request(
    otel: Otel, reap_at_once: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def bad_handler() -> None:
        await agent_session("bad", **otel.kwargs()).__aenter__()  # returns inside its block

    async def good_handler(serial: int) -> str:
        async with agent_session("good", **otel.kwargs()):
            return f"served {serial}"

    async def main() -> list[str]:
        await asyncio.create_task(bad_handler())
        for _ in range(2):
            await asyncio.sleep(0)  # the loop lets go of the finished task
        gc.collect()
        return [await good_handler(serial) for serial in range(2)]

    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        assert asyncio.run(main()) == ["served 0", "served 1"]
    assert "ResourceWarning: session 'bad' was opened and never closed" in caplog.text
    [bad] = otel.spans("invoke_agent bad")
    assert dict(bad.attributes or {})["error.type"] == ABANDONED


def test_a_pool_task_leaving_a_block_open_lets_go_of_it_for_tasks_without_blocks(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's record of open blocks is reset with its session: later tasks that
    open no ``agent_session`` do not keep the leaked one alive."""
    with agent_session("warm-up", **otel.kwargs()):
        pass

    def plain() -> None:
        with Orchestrator(role="plain", **otel.kwargs()).session():
            pass

    with ThreadPoolExecutor(2) as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for future in [pool.submit(_enter_and_return, otel) for _ in range(2)]:
            future.result()
        for future in [pool.submit(plain) for _ in range(10)]:
            future.result()
        assert pool.submit(_OPEN_BLOCKS.get).result() == ()
        gc.collect()
        assert _alive("leaked") == 0
    _reap_now(monkeypatch)


def test_one_agent_session_object_shared_by_requests_pairs_its_exits_after_sigterm(
    otel: Otel,
) -> None:
    """SIGTERM closed both requests' sessions in their blocks; one opens a nested
    session before it leaves: each request still exits its own block."""
    shared = agent_session("request", **otel.kwargs())
    said: dict[int, str] = {}

    async def main() -> None:
        entered = [asyncio.Event(), asyncio.Event()]
        go = asyncio.Event()

        async def request(serial: int) -> None:
            try:
                async with shared:
                    entered[serial].set()
                    await go.wait()
                    if serial == 0:
                        async with agent_session("inner", **otel.kwargs()):
                            pass
                        await asyncio.sleep(0)
                    else:
                        await asyncio.sleep(0.05)
                said[serial] = "exited"
            except Exception as error:
                said[serial] = f"{type(error).__name__}: {error}"

        first = asyncio.create_task(request(0))
        await entered[0].wait()
        second = asyncio.create_task(request(1))
        await entered[1].wait()
        assert close_all_open_sessions("SIGTERM") == 2
        go.set()
        await asyncio.gather(first, second)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asyncio.run(main())
    assert said == {0: "exited", 1: "exited"}
    assert shared._entered == []


def test_a_task_that_copied_a_block_exited_elsewhere_still_counts_there(otel: Otel) -> None:
    """A block entered in one task, exited by another: a third task begun inside it, which
    opens a session of its own, goes on counting against the block's session after."""

    async def main() -> None:
        block = agent_session("entered", max_iterations=5, **otel.kwargs())
        started, finish = asyncio.Event(), asyncio.Event()
        seen: list[object] = []

        async def worker() -> None:
            started.set()
            await finish.wait()
            async with agent_session("own", **otel.kwargs()):
                pass
            seen.append(membership.CURRENT.get())

        async def enter() -> asyncio.Task[None]:
            session = await block.__aenter__()
            seen.append(session._scope)
            return asyncio.create_task(worker())

        task = await asyncio.create_task(enter())
        await started.wait()
        await asyncio.create_task(block.__aexit__(None, None, None))  # another task exits it
        finish.set()
        await task
        assert seen[1] is seen[0]  # still the block's session, closed

    asyncio.run(main())


def test_a_decorated_generator_closed_before_its_end_is_a_cancelled_session(
    otel: Otel,
) -> None:
    """A client that hung up on a streamed answer: as a ``with`` block left by
    ``GeneratorExit`` says, not "completed"."""

    @agent_session("streamed", **otel.kwargs())
    def stream() -> Iterator[int]:
        yield from range(3)

    @agent_session("astreamed", **otel.kwargs())
    async def astream() -> AsyncIterator[int]:
        for serial in range(3):
            yield serial

    async def read_one() -> None:
        agen = astream()
        await agen.__anext__()
        await agen.aclose()  # type: ignore[attr-defined]

    sync = stream()
    next(sync)
    sync.close()
    asyncio.run(read_one())
    whole = stream()
    assert list(whole) == [0, 1, 2]
    outcomes = sorted(
        (span.name, dict(span.attributes or {})["techrevati.session.outcome"])
        for span in otel.spans("invoke_agent")
    )
    assert outcomes == [
        ("invoke_agent astreamed", "cancelled"),
        ("invoke_agent streamed", "cancelled"),
        ("invoke_agent streamed", "completed"),
    ]


def test_wrap_keeps_a_coroutine_function_one(otel: Otel) -> None:
    """Starlette's BackgroundTasks (and any framework) awaits a coroutine function and
    runs a plain one in a thread: a wrapped coroutine function must stay one."""
    import inspect

    seen: list[object] = []

    async def follow_up(note: str) -> str:
        seen.append(membership.CURRENT.get())
        return note

    async def main() -> tuple[bool, str]:
        async with agent_session("bg", **otel.kwargs()) as session:
            wrapped = session.wrap(follow_up)
            scope = session._scope
        outside = await wrapped("later")  # after the block, as a background task runs
        assert seen == [scope]
        return inspect.iscoroutinefunction(wrapped), outside

    assert asyncio.run(main()) == (True, "later")


@contextlib.contextmanager
def _service_worker() -> Iterator[Callable[[Callable[[], str]], str]]:
    """A service's worker thread, started before any session, that runs what it is
    handed: it carries no session. (A ThreadPoolExecutor task submitted inside a
    session's block runs in that session.)"""
    jobs: queue.Queue[Callable[[], str] | None] = queue.Queue()
    done: queue.Queue[str] = queue.Queue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            done.put(job())

    def run(job: Callable[[], str]) -> str:
        jobs.put(job)
        return done.get(timeout=30)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        yield run
    finally:
        jobs.put(None)
        thread.join(timeout=30)


def test_an_unrelated_requests_call_does_not_use_up_the_escape_warning(otel: Otel) -> None:
    """A service: request A's session is open while request B (no session) calls a model
    on another thread. B's call is warned about at B's line, and A's own escaping calls
    still are, at theirs: once per line, never once per session."""
    from techrevati.runtime import agent_turn

    @agent_turn("gpt-4o-mini", usage=lambda _: USAGE)
    def ask() -> str:
        return "ok"

    def request_b() -> str:
        return ask()  # B: no session of its own

    def escaping_from_a() -> str:
        return ask()  # A's work on a thread that does not carry its session

    with warnings.catch_warnings(record=True) as caught, _service_worker() as on_worker:
        warnings.simplefilter("always")
        with agent_session("tenant-a", max_iterations=3, **otel.kwargs()):
            on_worker(request_b)
            for _ in range(3):
                on_worker(escaping_from_a)
    said = [w for w in caught if "outside any session" in str(w.message)]
    assert [w.lineno for w in said] == [
        request_b.__code__.co_firstlineno + 1,
        escaping_from_a.__code__.co_firstlineno + 1,
    ]
    assert all("'tenant-a'" in str(w.message) for w in said)
    assert "if it is part of one" in str(said[0].message)


def _resumed_elsewhere(generator: Iterator[str], base: object = None) -> list[str]:
    """Each ``next()`` on a worker thread in a fresh copy of ``base`` (a context), as
    Starlette's ``iterate_in_threadpool`` runs a streamed response's sync generator."""
    import contextvars

    context = base if isinstance(base, contextvars.Context) else contextvars.Context()
    out: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        while True:
            step = pool.submit(context.copy().run, next, generator, None).result()
            if step is None:
                return out
            out.append(step)


def _asked(otel: Otel) -> Any:
    from techrevati.runtime import agent_turn

    @agent_turn("gpt-4o-mini", usage=lambda _: USAGE)
    def ask() -> str:
        session = current_agent_session()
        return session.worker.role if session is not None else "none"

    return ask


def test_a_generators_nested_blocks_each_hold_after_a_yield(otel: Otel) -> None:
    ask = _asked(otel)

    def stream() -> Iterator[str]:
        try:
            with agent_session("outer", max_iterations=3, **otel.kwargs()):
                yield ask()
                with agent_session("inner", **otel.kwargs()):
                    yield ask()
                    yield ask()
                yield ask()  # the outer block's again, its third call
                yield ask()  # its fourth: refused
        except MaxIterationsExceededError:
            yield "refused"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _resumed_elsewhere(stream()) == ["outer", "inner", "inner", "refused"]


def test_a_session_opened_after_a_yield_is_the_generators_blocks_child(otel: Otel) -> None:
    ask = _asked(otel)

    def stream() -> Iterator[str]:
        try:
            with agent_session("stream", max_iterations=2, **otel.kwargs()):
                yield "entered"
                with agent_session("step", **otel.kwargs()):  # counts against the cap of 2
                    for _ in range(3):
                        yield ask()
        except MaxIterationsExceededError:
            yield "refused"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _resumed_elsewhere(stream()) == ["entered", "step", "step", "refused"]


def _capped_stream(otel: Otel, ask: Callable[[], str], role: str) -> Iterator[str]:
    """A streamed answer: a session block capped at 2 calls that asks 3 times."""
    try:
        with agent_session(role, max_iterations=2, **otel.kwargs()):
            for _ in range(3):
                yield ask()
    except MaxIterationsExceededError:
        yield "refused"


def test_a_closed_request_session_in_the_context_does_not_take_the_generators_calls(
    otel: Otel,
) -> None:
    """The request's session (closed when the response streams) is in every copy of the
    request's context: the generator's own block still counts its calls."""
    import contextvars

    ask = _asked(otel)

    stream = functools.partial(_capped_stream, otel, ask, "stream")

    with agent_session("request", **otel.kwargs()):
        request_context = contextvars.copy_context()
        generator = stream()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _resumed_elsewhere(generator, request_context) == ["stream", "stream", "refused"]


def test_wrap_steps_an_async_callable_in_the_session_on_the_awaiting_task(otel: Otel) -> None:
    class Job:
        async def __call__(self) -> str:
            session = current_agent_session()
            return session.worker.role if session is not None else "none"

    async def main() -> list[str]:
        async with agent_session("bg", **otel.kwargs()) as session:
            job = session.wrap(Job())
            nested = session.wrap(asyncio.sleep)
        return [await job(), str(await nested(0, "slept"))]

    assert asyncio.run(main()) == ["bg", "slept"]


def test_an_escape_made_by_a_library_is_warned_at_the_applications_line(otel: Otel) -> None:
    """A framework makes the model call (its frame is in site-packages): the warning is
    keyed, and given, at the application's line that ran it, so one framework line is
    not used up by every request's call."""
    import sysconfig

    ask = _asked(otel)
    library: dict[str, Any] = {"__name__": "some_framework.agent", "ask": ask}
    path = f"{sysconfig.get_paths()['purelib']}/some_framework/agent.py"
    exec(compile("def run():\n    return ask()\n", path, "exec"), library)
    run = library["run"]

    def request_b() -> str:
        return str(run())

    def escaping_from_a() -> str:
        return str(run())

    with warnings.catch_warnings(record=True) as caught, _service_worker() as on_worker:
        warnings.simplefilter("always")
        with agent_session("tenant-a", max_iterations=3, **otel.kwargs()):
            on_worker(request_b)
            on_worker(escaping_from_a)
    said = [w for w in caught if "outside any session" in str(w.message)]
    assert [(w.filename, w.lineno) for w in said] == [
        (__file__, request_b.__code__.co_firstlineno + 1),
        (__file__, escaping_from_a.__code__.co_firstlineno + 1),
    ]


def test_a_streams_turns_count_once_while_its_sub_agents_stream_elsewhere(otel: Otel) -> None:
    """A streamed response's session A, its sub-agents' generators (child sessions of A)
    suspended on a pool: each of A's turns, a bare client call inside, is one call of A
    (its client call is the turn's, not taken for a call of A's session itself)."""
    import openai

    from fake_openai import FakeOpenAI, chat_completion, serve
    from techrevati.runtime import agent_turn

    def sub_agent(serial: int) -> Iterator[str]:
        with agent_session(f"sub{serial}", **otel.kwargs()):
            yield "chunk"
            yield "chunk"

    counted: list[int] = []

    with serve(FakeOpenAI(chat_completion())) as api:
        client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="k", max_retries=0)

        @agent_turn("gpt-4o-mini")
        def turn() -> str:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}]
            )
            return "turn"

        def stream() -> Iterator[str]:
            try:
                with (
                    agent_session("A", max_iterations=4, **otel.kwargs()) as session,
                    ThreadPoolExecutor(2) as pool,
                ):
                    subs = [sub_agent(serial) for serial in range(2)]
                    for sub in subs:
                        pool.submit(next, sub).result()  # each one mid-stream
                    for _ in range(4):
                        yield turn()
                        counted.append(session._scope.ledger.iterations)  # type: ignore[union-attr]
                    for sub in subs:
                        pool.submit(sub.close).result()
            except MaxIterationsExceededError:
                yield "refused"

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert _resumed_elsewhere(stream()) == ["turn"] * 4
    assert counted == [1, 2, 3, 4]
    assert len(api.requests) == 4


def test_a_generator_block_entered_by_hand_and_dropped_leaves_no_count_behind(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its session is reaped, and the stack walk its parent paid for stops with it."""
    import contextvars

    def stream() -> Iterator[int]:
        block = agent_session("by-hand", **otel.kwargs())
        block.__enter__()  # never exited
        yield 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with agent_session("parent", **otel.kwargs()) as parent:
            generator = stream()
            contextvars.copy_context().run(next, generator)
            scope = parent._scope
            assert scope is not None and scope.held_below == 1
            del generator
            _reap_now(monkeypatch)
            assert scope.held_below == 0
    assert membership.GENERATOR_BLOCKS == {}


def test_a_generator_begun_in_a_pool_task_goes_on_in_its_block_unwarned(otel: Otel) -> None:
    """Its block is left current on the worker when the task returns: the worker lets
    go of it (its next task starts outside), and says nothing, since the block goes on
    in the generator wherever it is resumed."""
    ask = _asked(otel)

    stream = functools.partial(_capped_stream, otel, ask, "streamed")

    with warnings.catch_warnings(record=True) as caught, ThreadPoolExecutor(1) as pool:
        warnings.simplefilter("always")
        generator = stream()
        first = pool.submit(next, generator).result()  # begun in a pool task
        assert pool.submit(membership.CURRENT.get).result() is None
        rest = list(generator)  # resumed here
    assert [first, *rest] == ["streamed", "streamed", "refused"]
    assert [w for w in caught if "still open when the task returned" in str(w.message)] == []
