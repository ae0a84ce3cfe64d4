"""Tests for the timeouts module: a timeout is a breaker failure, hung threads bounded.

Real breakers and real threads throughout. A "hanging" call blocks on a
``threading.Event`` the test releases, so it is certain to outlive a short
timeout; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import pickle
import threading
from collections.abc import Callable, Iterator

import pytest

from techrevati.runtime.circuit_breaker import (
    MAX_HUNG_CALLS,
    AsyncCircuitBreaker,
    BreakerPermit,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
)
from techrevati.runtime.telemetry.calls.timeouts import (
    arun_with_timeout,
    await_with_timeout,
    hung_calls,
    run_with_timeout,
    wait_in_thread,
)
from techrevati.runtime.telemetry.limits.errors import TurnTimeoutError

SHORT = 0.01  # the hanging calls never return before the test releases them
LONG = 30.0  # calls that return at once never come near this


class Hang:
    """A call that blocks until released; remembers the threads it ran on."""

    def __init__(self, result: object = "late", error: BaseException | None = None) -> None:
        self.release = threading.Event()
        self.started = 0
        self.threads: list[threading.Thread] = []
        self.result = result
        self.error = error
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            self.started += 1
            self.threads.append(threading.current_thread())
        self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result

    def finish(self) -> None:
        """Let every hanging call return and wait until their threads are gone."""
        self.release.set()
        for thread in self.threads:
            thread.join()


@pytest.fixture
def hang() -> Iterator[Hang]:
    h = Hang()
    yield h
    h.finish()  # never leave threads behind, even when a test fails


def _timeout(call: Callable[[], object], breaker: CircuitBreaker | None) -> TurnTimeoutError:
    with pytest.raises(TurnTimeoutError) as info:
        run_with_timeout(call, SHORT, breaker)
    return info.value


# -- the sync path ------------------------------------------------------------------


def test_result_in_time_is_a_success() -> None:
    cb = CircuitBreaker("api", failure_threshold=3)
    cb.record_failure()
    cb.record_failure()
    assert run_with_timeout(lambda: 42, LONG, cb) == 42
    assert cb._failure_count == 0
    assert hung_calls(cb) == 0


def test_error_in_time_is_a_failure_and_propagates() -> None:
    cb = CircuitBreaker("api", failure_threshold=2)
    boom = ConnectionError("refused")

    def fail() -> None:
        raise boom

    for _ in range(2):
        with pytest.raises(ConnectionError) as info:
            run_with_timeout(fail, LONG, cb)
        assert info.value is boom
    assert cb.state() is CircuitState.OPEN
    assert hung_calls(cb) == 0


def test_timeout_is_a_failure_chained_to_timeout_error(hang: Hang) -> None:
    cb = CircuitBreaker("api", failure_threshold=3)
    error = _timeout(hang, cb)
    assert error.timeout_seconds == SHORT
    assert isinstance(error.__cause__, TimeoutError)
    assert cb._failure_count == 1
    assert cb.state() is CircuitState.CLOSED
    assert hung_calls(cb) == 1


def test_issue_scenario_six_timeouts_threshold_two(hang: Hang) -> None:
    # Issue 13: 6 timeouts with failure_threshold=2 left the breaker CLOSED and
    # 6 threads hung. Now the 2nd opens it and the other 4 never start.
    cb = CircuitBreaker("api", failure_threshold=2, recovery_timeout_seconds=60)
    outcomes = []
    for _ in range(6):
        try:
            run_with_timeout(hang, SHORT, cb)
        except TurnTimeoutError:
            outcomes.append("timeout")
        except CircuitOpenError as exc:
            outcomes.append(str(exc))
    assert outcomes == ["timeout", "timeout"] + ["Circuit breaker 'api' is OPEN"] * 4
    assert cb.state() is CircuitState.OPEN
    assert hang.started == 2
    assert hung_calls(cb) == 2
    hang.finish()
    assert hung_calls(cb) == 0
    # The hung calls' late results do not touch the breaker.
    assert cb.state() is CircuitState.OPEN and cb._failure_count == 2


def test_late_outcome_of_a_hung_call_is_discarded() -> None:
    cb = CircuitBreaker("api", failure_threshold=5)
    late_error = Hang(error=RuntimeError("late failure"))
    _timeout(late_error, cb)
    late_ok = Hang(result="late success")
    _timeout(late_ok, cb)
    assert cb._failure_count == 2
    late_error.finish()
    late_ok.finish()
    assert cb._failure_count == 2  # neither a late failure nor a late success is booked
    assert hung_calls(cb) == 0


def test_timed_out_half_open_probe_reopens_the_breaker(hang: Hang) -> None:
    now = [0.0]
    cb = CircuitBreaker(
        "api", failure_threshold=1, recovery_timeout_seconds=10, clock=lambda: now[0]
    )
    cb.record_failure()
    now[0] = 10.0
    assert cb.state() is CircuitState.HALF_OPEN
    _timeout(hang, cb)  # the probe
    assert cb._state is CircuitState.OPEN
    assert cb._probe_in_flight == 0
    assert cb._last_failure_time == 10.0
    with pytest.raises(CircuitOpenError):
        run_with_timeout(lambda: "refused", LONG, cb)
    # Not wedged: with the old probe still hanging, the next window admits a new one.
    now[0] = 20.0
    assert hung_calls(cb) == 1
    assert run_with_timeout(lambda: "healthy", LONG, cb) == "healthy"
    assert cb.state() is CircuitState.CLOSED


def test_hung_calls_are_bounded_per_breaker(hang: Hang) -> None:
    cb = CircuitBreaker("api", failure_threshold=1000)
    assert cb.max_hung_calls == MAX_HUNG_CALLS == 8
    assert "hung" not in repr(cb)  # not an init field: the contract's repr is unchanged
    for _ in range(MAX_HUNG_CALLS):
        _timeout(hang, cb)
    assert hung_calls(cb) == 8
    assert cb.state() is CircuitState.CLOSED  # refused below, though not OPEN
    ran: list[str] = []
    with pytest.raises(CircuitOpenError) as info:
        run_with_timeout(lambda: ran.append("x"), LONG, cb)
    assert ran == []
    assert info.value.name == "api"
    assert str(info.value) == (
        "Circuit breaker 'api' refused the call: 8 timed-out calls are still running "
        "(max_hung_calls=8); it admits again as they finish"
    )
    # Every way into the breaker is refused, and a refusal is not a failure.
    with pytest.raises(CircuitOpenError, match="still running"):
        cb.call(lambda: ran.append("y"))
    with pytest.raises(CircuitOpenError, match="still running"):
        BreakerPermit(cb).admit()
    assert ran == [] and cb._failure_count == 8
    # Another breaker is not affected.
    assert run_with_timeout(lambda: "ok", LONG, CircuitBreaker("other")) == "ok"
    cb.reset()  # forgets failures, not the calls still running
    assert hung_calls(cb) == 8
    with pytest.raises(CircuitOpenError, match="still running"):
        run_with_timeout(lambda: None, LONG, cb)
    hang.finish()
    assert hung_calls(cb) == 0
    assert run_with_timeout(lambda: "again", LONG, cb) == "again"


def test_one_hung_call_is_said_in_the_singular(hang: Hang) -> None:
    # A probe: max_hung_calls=1 refused with "1 timed-out calls are still running".
    cb = CircuitBreaker("api", failure_threshold=1000)
    cb.max_hung_calls = 1
    _timeout(hang, cb)
    with pytest.raises(CircuitOpenError) as info:
        run_with_timeout(lambda: None, LONG, cb)
    assert str(info.value) == (
        "Circuit breaker 'api' refused the call: 1 timed-out call is still running "
        "(max_hung_calls=1); it admits again as that call finishes"
    )
    hang.finish()


def test_one_finished_hung_call_frees_one_slot() -> None:
    cb = CircuitBreaker("api", failure_threshold=1000)
    cb.max_hung_calls = 2
    first, second = Hang(), Hang()
    _timeout(first, cb)
    _timeout(second, cb)
    with pytest.raises(CircuitOpenError, match="2 timed-out calls"):
        run_with_timeout(lambda: None, LONG, cb)
    first.finish()
    assert hung_calls(cb) == 1
    assert run_with_timeout(lambda: "in", LONG, cb) == "in"
    third = Hang()
    _timeout(third, cb)
    with pytest.raises(CircuitOpenError, match="2 timed-out calls"):
        run_with_timeout(lambda: None, LONG, cb)
    second.finish()
    third.finish()
    assert hung_calls(cb) == 0


def test_without_a_breaker_timeouts_still_work_and_are_counted(hang: Hang) -> None:
    before = hung_calls()
    _timeout(hang, None)
    assert hung_calls() == before + 1
    hang.finish()
    assert hung_calls() == before
    assert run_with_timeout(lambda: "x", LONG) == "x"


def test_call_runs_in_a_copy_of_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    var.set("caller")
    seen: list[object] = []

    def call() -> str:
        seen.extend([threading.current_thread(), var.get()])
        var.set("inside")  # does not leak back
        return var.get()

    assert run_with_timeout(call, LONG) == "inside"
    assert var.get() == "caller"
    assert seen[1] == "caller"
    assert isinstance(seen[0], threading.Thread) and seen[0] is not threading.current_thread()
    assert seen[0].name == "techrevati-turn" and seen[0].daemon


def test_no_timeout_runs_inline_like_breaker_call() -> None:
    cb = CircuitBreaker("api", failure_threshold=1)
    caller = threading.current_thread()
    assert run_with_timeout(lambda: threading.current_thread(), None, cb) is caller
    assert run_with_timeout(lambda: "inf", math.inf, cb) == "inf"  # inf is no timeout
    with pytest.raises(KeyError):
        run_with_timeout(lambda: {}["k"], None, cb)
    assert cb.state() is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        run_with_timeout(lambda: None, None, cb)


def test_open_breaker_refuses_before_any_thread_starts() -> None:
    cb = CircuitBreaker("api", failure_threshold=1)
    cb.record_failure()
    ran: list[int] = []
    threads_before = threading.active_count()
    with pytest.raises(CircuitOpenError):
        run_with_timeout(lambda: ran.append(1), LONG, cb)
    assert ran == [] and threading.active_count() == threads_before


def test_thread_start_failure_frees_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mocked: running out of OS threads cannot be produced safely in a test."""
    now = [0.0]
    cb = CircuitBreaker(
        "api", failure_threshold=1, recovery_timeout_seconds=1, clock=lambda: now[0]
    )
    cb.record_failure()
    now[0] = 1.0

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        run_with_timeout(lambda: None, LONG, cb)
    monkeypatch.undo()
    assert cb._state is CircuitState.HALF_OPEN and cb._probe_in_flight == 0
    assert cb._failure_count == 1  # not booked as a failure
    assert hung_calls(cb) == 0
    assert run_with_timeout(lambda: "probe", LONG, cb) == "probe"


@pytest.mark.parametrize(
    ("bad", "error", "text"),
    [
        (0, ValueError, "0"),
        (-1.0, ValueError, "-1.0"),
        (math.nan, ValueError, "nan"),
        ("5", TypeError, "'5'"),
        (True, TypeError, "True"),
    ],
)
def test_bad_timeout_is_refused_before_admission(
    bad: object, error: type[Exception], text: str
) -> None:
    cb = CircuitBreaker("api", failure_threshold=1)
    now_half_open = CircuitBreaker("p", failure_threshold=1, recovery_timeout_seconds=0)
    now_half_open.record_failure()
    for breaker in (cb, now_half_open):
        with pytest.raises(error, match=text):
            run_with_timeout(lambda: None, bad, breaker)  # type: ignore[arg-type]
    assert now_half_open._probe_in_flight == 0  # no permit was taken
    assert cb._failure_count == 0


def test_bad_call_and_breaker_are_refused() -> None:
    with pytest.raises(TypeError, match="call must be callable, got 3"):
        run_with_timeout(3, LONG)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker must be a CircuitBreaker or None, got 'api'"):
        run_with_timeout(lambda: None, LONG, "api")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker must be"):
        hung_calls("api")  # type: ignore[arg-type]


def test_open_error_with_reason_pickles() -> None:
    error = CircuitOpenError("api", reason="8 timed-out calls are still running")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.name, again.reason, str(again)) == (
        CircuitOpenError,
        "api",
        "8 timed-out calls are still running",
        str(error),
    )
    plain = pickle.loads(pickle.dumps(CircuitOpenError("api")))
    assert (plain.name, plain.reason, str(plain)) == ("api", None, "Circuit breaker 'api' is OPEN")


# -- the async path ----------------------------------------------------------------


async def _forever() -> None:
    await asyncio.Event().wait()


def test_async_timeout_is_a_failure_and_opens() -> None:
    cb = AsyncCircuitBreaker("api", failure_threshold=2, recovery_timeout_seconds=60)

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(TurnTimeoutError) as info:
                await arun_with_timeout(_forever, SHORT, cb)
            assert isinstance(info.value.__cause__, TimeoutError)
            assert info.value.timeout_seconds == SHORT
        assert await cb.state() is CircuitState.OPEN
        started: list[int] = []

        async def count() -> None:
            started.append(1)

        with pytest.raises(CircuitOpenError):
            await arun_with_timeout(count, LONG, cb)
        assert started == []
        assert hung_calls(cb) == 0  # a cancelled coroutine leaves nothing running

    asyncio.run(main())


def test_async_timed_out_probe_reopens() -> None:
    now = [0.0]
    cb = AsyncCircuitBreaker(
        "api", failure_threshold=1, recovery_timeout_seconds=5, clock=lambda: now[0]
    )

    async def ok() -> str:
        return "ok"

    async def main() -> None:
        await cb.record_failure()
        now[0] = 5.0
        with pytest.raises(TurnTimeoutError):
            await arun_with_timeout(_forever, SHORT, cb)
        assert cb._state is CircuitState.OPEN and cb._probe_in_flight == 0
        with pytest.raises(CircuitOpenError):
            await arun_with_timeout(ok, LONG, cb)
        now[0] = 10.0
        assert await arun_with_timeout(ok, LONG, cb) == "ok"
        assert await cb.state() is CircuitState.CLOSED

    asyncio.run(main())


def test_async_own_timeout_error_is_its_own_failure() -> None:
    cb = AsyncCircuitBreaker("api", failure_threshold=5)
    own = TimeoutError("read timed out")

    async def slow_server() -> None:
        raise own

    async def main() -> None:
        with pytest.raises(TimeoutError) as info:
            await arun_with_timeout(slow_server, LONG, cb)
        assert info.value is own and not isinstance(info.value, TurnTimeoutError)
        assert cb._failure_count == 1

    asyncio.run(main())


def test_async_outside_cancellation_frees_the_probe_without_failure() -> None:
    now = [0.0]
    cb = AsyncCircuitBreaker(
        "api", failure_threshold=1, recovery_timeout_seconds=5, clock=lambda: now[0]
    )

    async def main() -> None:
        await cb.record_failure()
        now[0] = 5.0
        entered = asyncio.Event()

        async def probe() -> None:
            entered.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(arun_with_timeout(probe, LONG, cb))
        await entered.wait()
        assert cb._probe_in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cb._state is CircuitState.HALF_OPEN and cb._probe_in_flight == 0
        assert cb._failure_count == 1

    asyncio.run(main())


def test_async_success_and_no_timeout() -> None:
    cb = AsyncCircuitBreaker("api", failure_threshold=2)

    async def value() -> int:
        return 7

    async def main() -> None:
        await cb.record_failure()
        assert await arun_with_timeout(value, LONG, cb) == 7
        assert cb._failure_count == 0
        assert await arun_with_timeout(value, None, cb) == 7
        assert await arun_with_timeout(value, None) == 7

    asyncio.run(main())


def test_async_path_accepts_a_sync_breaker() -> None:
    cb = CircuitBreaker("api", failure_threshold=1)

    async def main() -> None:
        with pytest.raises(TurnTimeoutError):
            await arun_with_timeout(_forever, SHORT, cb)

    asyncio.run(main())
    assert cb.state() is CircuitState.OPEN


# -- the parts a core with its own BreakerPermit uses ----------------------------------


def _core_turn(breaker: CircuitBreaker, call: Callable[[], object], timeout: float) -> object:
    """What the session core does: its own permit, wait_in_thread, permit told the outcome."""
    permit = BreakerPermit(breaker)
    permit.admit()
    try:
        result = wait_in_thread(call, timeout, breaker)
    except BaseException as exc:
        permit.failed(exc)
        raise
    permit.succeeded()
    return result


def test_wait_in_thread_with_a_permit_books_timeouts_and_bounds_hung(hang: Hang) -> None:
    now = [0.0]
    cb = CircuitBreaker(
        "api", failure_threshold=2, recovery_timeout_seconds=10, clock=lambda: now[0]
    )
    cb.max_hung_calls = 3
    for _ in range(2):
        with pytest.raises(TurnTimeoutError) as info:
            _core_turn(cb, hang, SHORT)
        assert isinstance(info.value.__cause__, TimeoutError)
    assert cb.state() is CircuitState.OPEN and hung_calls(cb) == 2
    now[0] = 10.0
    with pytest.raises(TurnTimeoutError):
        _core_turn(cb, hang, SHORT)  # the half-open probe times out: OPEN again
    assert cb._state is CircuitState.OPEN and cb._probe_in_flight == 0
    now[0] = 20.0
    with pytest.raises(CircuitOpenError, match="3 timed-out calls are still running"):
        _core_turn(cb, lambda: "never", LONG)
    assert hang.started == 3
    hang.finish()
    assert hung_calls(cb) == 0
    assert _core_turn(cb, lambda: "probe", LONG) == "probe"
    assert cb.state() is CircuitState.CLOSED


def test_wait_in_thread_returns_and_raises_as_the_call_does() -> None:
    assert wait_in_thread(lambda: 5, LONG) == 5
    assert wait_in_thread(lambda: threading.current_thread(), None) is threading.current_thread()
    with pytest.raises(ZeroDivisionError):
        wait_in_thread(lambda: 1 / 0, LONG)
    with pytest.raises(ValueError, match="timeout must be"):
        wait_in_thread(lambda: None, 0)
    with pytest.raises(TypeError, match="call must be callable"):
        wait_in_thread(None, LONG)  # type: ignore[arg-type]


def test_await_with_timeout_tells_our_expiry_from_the_coroutines() -> None:
    own = TimeoutError("socket")

    async def raises_own() -> None:
        raise own

    async def seven() -> int:
        return 7

    async def main() -> None:
        with pytest.raises(TurnTimeoutError) as info:
            await await_with_timeout(_forever, SHORT)
        assert isinstance(info.value.__cause__, TimeoutError)
        with pytest.raises(TimeoutError) as raised:
            await await_with_timeout(raises_own, LONG)
        assert raised.value is own
        assert await await_with_timeout(seven, LONG) == 7
        assert await await_with_timeout(seven, None) == 7
        with pytest.raises(ValueError, match="-2"):
            await await_with_timeout(seven, -2)

    asyncio.run(main())


# -- through a session (the core's wiring: its permit plus wait_in_thread) ----------------


def test_session_issue_scenario_six_sync_timeouts(hang: Hang) -> None:
    from techrevati.runtime import Orchestrator

    cb = CircuitBreaker("api", failure_threshold=2, recovery_timeout_seconds=60)
    orch = Orchestrator(role="w", phase="p", circuit_breaker=cb, max_iterations=100)
    outcomes: list[str] = []
    with orch.session() as session:
        for _ in range(6):
            try:
                session.run_turn(hang, model="m", timeout=SHORT)
            except TurnTimeoutError:
                outcomes.append("timeout")
            except CircuitOpenError:
                outcomes.append("refused")
    assert outcomes == ["timeout", "timeout"] + ["refused"] * 4
    assert cb.state() is CircuitState.OPEN
    assert hang.started == 2 and hung_calls(cb) == 2
    hang.finish()
    assert hung_calls(cb) == 0


def test_session_hung_bound_refuses_with_a_clear_error(hang: Hang) -> None:
    from techrevati.runtime import Orchestrator

    cb = CircuitBreaker("api", failure_threshold=1000)
    cb.max_hung_calls = 2
    orch = Orchestrator(role="w", phase="p", circuit_breaker=cb, max_iterations=100)
    with orch.session() as session:
        for _ in range(2):
            with pytest.raises(TurnTimeoutError):
                session.run_turn(hang, model="m", timeout=SHORT)
        with pytest.raises(CircuitOpenError, match="2 timed-out calls are still running"):
            session.run_turn(lambda: "x", model="m", timeout=LONG)
        hang.finish()
        assert session.run_turn(lambda: "x", model="m", timeout=LONG)[0] == "x"


def test_session_timed_out_probe_reopens(hang: Hang) -> None:
    from techrevati.runtime import Orchestrator

    now = [0.0]
    cb = CircuitBreaker(
        "api", failure_threshold=1, recovery_timeout_seconds=10, clock=lambda: now[0]
    )
    cb.record_failure()
    now[0] = 10.0
    orch = Orchestrator(role="w", phase="p", circuit_breaker=cb, max_iterations=100)
    with orch.session() as session:
        with pytest.raises(TurnTimeoutError):
            session.run_turn(hang, model="m", timeout=SHORT)
        assert cb._state is CircuitState.OPEN and cb._probe_in_flight == 0
        now[0] = 20.0  # not wedged in HALF_OPEN: a new probe goes through
        assert session.run_turn(lambda: "ok", model="m", timeout=LONG)[0] == "ok"
    assert cb.state() is CircuitState.CLOSED


def test_async_session_timeout_counts_on_the_breaker() -> None:
    from techrevati.runtime import Orchestrator

    cb = AsyncCircuitBreaker("api", failure_threshold=2, recovery_timeout_seconds=60)
    orch = Orchestrator(role="w", phase="p", async_circuit_breaker=cb, max_iterations=100)

    async def main() -> list[str]:
        outcomes = []
        async with orch.asession() as session:
            for _ in range(3):
                try:
                    await session.arun_turn(_forever, model="m", timeout=SHORT)
                except TurnTimeoutError:
                    outcomes.append("timeout")
                except CircuitOpenError:
                    outcomes.append("refused")
        return outcomes

    assert asyncio.run(main()) == ["timeout", "timeout", "refused"]
    assert cb._state is CircuitState.OPEN


def test_a_timed_out_call_that_answers_later_is_booked_once() -> None:
    """The provider bills a call that answered after we stopped waiting: so does the budget."""
    import time

    from techrevati.runtime import Orchestrator, UsageSnapshot, register_pricing
    from techrevati.runtime.pricing import ModelPricing

    register_pricing("late-model", ModelPricing(1_000_000.0, 0.0))  # $1 an input token
    release = threading.Event()
    response = {
        "id": "x",
        "object": "chat.completion",
        "model": "late-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2},
    }

    def slow(answer: object) -> Callable[[], object]:
        def call() -> object:
            release.wait(10)
            return answer

        return call

    orch = Orchestrator(role="w", budget_usd=10.0, enforce_budget=True)
    with orch.session() as session:
        spent = 0.0
        # $2 read from the late response, then $1 given up front: each booked once.
        for answer, usage, cost in ((response, None, 2.0), ("text", UsageSnapshot(1, 0), 1.0)):
            release.clear()
            with pytest.raises(TurnTimeoutError):
                session.run_turn(slow(answer), model="late-model", usage=usage, timeout=0.05)
            assert session.tracker.total_cost() == spent  # nothing booked at the timeout
            release.set()  # the call answers now, on its worker thread
            deadline = time.monotonic() + 10  # a hang guard, not a timing assertion
            while session.tracker.total_cost() == spent and time.monotonic() < deadline:
                time.sleep(0.01)
            spent += cost
            assert session.tracker.total_cost() == spent
        assert session._ledger.spent == 3.0
        assert session.summary()["usage"]["turns"] == 2


# -- what a timeout's message says ------------------------------------------------------


def test_a_session_timeout_names_the_role_model_and_what_became_of_the_call(hang: Hang) -> None:
    from techrevati.runtime import Orchestrator

    cb = CircuitBreaker("model-api", failure_threshold=5)
    orch = Orchestrator(role="coder", circuit_breaker=cb)
    with orch.session() as session, pytest.raises(TurnTimeoutError) as info:
        session.run_turn(hang, model="gpt-4o", timeout=SHORT)
    assert str(info.value) == "turn exceeded timeout of 0.010s"  # (pinned by the contract)
    assert info.value.__notes__ == [
        "a turn (role 'coder', model 'gpt-4o') keeps running in the background; circuit "
        "breaker 'model-api' counts it as a failure"
    ]
    assert info.value.timeout_seconds == SHORT
    again = pickle.loads(pickle.dumps(info.value))  # (sent to another process: all of it)
    assert (str(again), again.__notes__) == (str(info.value), info.value.__notes__)
    with Orchestrator(role="coder").session() as session, pytest.raises(TurnTimeoutError) as info:
        session.run_turn(hang, timeout=SHORT)
    assert info.value.__notes__ == ["a turn (role 'coder') keeps running in the background"]


def test_an_async_session_timeout_says_the_call_was_cancelled() -> None:
    from techrevati.runtime import Orchestrator

    cb = AsyncCircuitBreaker("model-api", failure_threshold=5)
    orch = Orchestrator(role="coder", async_circuit_breaker=cb)

    async def main() -> TurnTimeoutError:
        async with orch.asession() as session:
            with pytest.raises(TurnTimeoutError) as info:
                await session.arun_turn(_forever, model="gpt-4o", timeout=SHORT)
        return info.value

    assert asyncio.run(main()).__notes__ == [
        "a turn (role 'coder', model 'gpt-4o') was cancelled; circuit breaker 'model-api' "
        "counts it as a failure"
    ]


def test_a_timeout_outside_a_session_says_what_became_of_the_call(hang: Hang) -> None:
    error = _timeout(hang, CircuitBreaker("api"))
    assert error.__notes__ == [
        "the call keeps running in the background; circuit breaker 'api' counts it as a failure"
    ]
    assert _timeout(hang, None).__notes__ == ["the call keeps running in the background"]

    async def main() -> TurnTimeoutError:
        with pytest.raises(TurnTimeoutError) as info:
            await await_with_timeout(_forever, SHORT)
        return info.value

    assert asyncio.run(main()).__notes__ == ["the call was cancelled"]
