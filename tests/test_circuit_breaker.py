"""Tests for techrevati.runtime.circuit_breaker (contract §4)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from techrevati.runtime.circuit_breaker import (
    AsyncCircuitBreaker,
    BreakerPermit,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
JOIN_TIMEOUT = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


def _ok() -> str:
    return "ok"


def _boom() -> None:
    raise Boom("boom")


def _open_breaker(cb: CircuitBreaker) -> None:
    for _ in range(cb.failure_threshold):
        with pytest.raises(Boom):
            cb.call(_boom)
    assert cb.state() is OPEN


# -- basics --------------------------------------------------------------------


def test_state_enum_values() -> None:
    assert {s.name: s.value for s in CircuitState} == {
        "CLOSED": "closed",
        "OPEN": "open",
        "HALF_OPEN": "half_open",
    }
    assert str(CircuitState.OPEN) == "CircuitState.OPEN"
    assert CircuitState.OPEN == "open"


def test_circuit_open_error() -> None:
    err = CircuitOpenError("model-api")
    assert err.name == "model-api"
    assert str(err) == "Circuit breaker 'model-api' is OPEN"
    assert isinstance(err, Exception)


def test_defaults_and_repr() -> None:
    cb = CircuitBreaker("x")
    assert cb.failure_threshold == 5
    assert cb.recovery_timeout_seconds == 60.0
    assert cb.half_open_max_probes == 1
    assert cb._state is CLOSED
    assert cb._failure_count == 0
    assert cb._last_failure_time is None
    assert cb._probe_in_flight == 0
    r = repr(cb)
    for name in ("name=", "failure_threshold=", "recovery_timeout_seconds=", "clock="):
        assert name in r
    for private in ("_state=", "_lock=", "_probe_in_flight=", "_failure_count="):
        assert private not in r
    assert r.startswith("CircuitBreaker(name='x', failure_threshold=5,")
    init_fields = [f.name for f in dataclasses.fields(cb) if f.init]
    assert init_fields == [
        "name",
        "failure_threshold",
        "recovery_timeout_seconds",
        "half_open_max_probes",
        "clock",
    ]


def test_positional_and_seed_construction() -> None:
    cb = CircuitBreaker("model-api", 3, 30.0, 2)
    assert (cb.failure_threshold, cb.recovery_timeout_seconds, cb.half_open_max_probes) == (
        3,
        30.0,
        2,
    )
    seed = CircuitBreaker("model-api", failure_threshold=3, recovery_timeout_seconds=30.0)
    assert seed.name == "model-api"


def test_lock_is_a_context_manager_guarding_probes() -> None:
    cb = CircuitBreaker("x")
    with cb._lock:
        assert cb._probe_in_flight == 0
        assert cb._lock.locked()
    assert not cb._lock.locked()


def test_new_breaker_closed() -> None:
    cb = CircuitBreaker("x")
    assert cb.state() is CLOSED
    assert cb.is_open() is False


def test_call_passes_args_and_returns() -> None:
    cb = CircuitBreaker("x")
    assert cb.call(lambda a, b=0: a + b, 2, b=3) == 5


def test_ten_successes_stay_closed() -> None:
    cb = CircuitBreaker("x", failure_threshold=3)
    for _ in range(10):
        assert cb.call(_ok) == "ok"
    assert cb.state() is CLOSED


def test_threshold_opening() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=3, clock=clock)
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(_boom)
    assert cb.state() is CLOSED
    assert cb._failure_count == 2
    with pytest.raises(Boom):
        cb.call(_boom)
    assert cb.state() is OPEN
    assert cb.is_open() is True
    assert cb._last_failure_time == clock.now


def test_open_rejects_without_calling() -> None:
    cb = CircuitBreaker("svc", failure_threshold=1, clock=FakeClock())
    _open_breaker(cb)
    calls: list[int] = []
    with pytest.raises(CircuitOpenError, match="svc") as info:
        cb.call(lambda: calls.append(1))
    assert calls == []
    assert info.value.name == "svc"


def test_consecutive_semantics() -> None:
    cb = CircuitBreaker("x", failure_threshold=3, clock=FakeClock())
    for _ in range(2):
        with pytest.raises(Boom):
            cb.call(_boom)
    cb.call(_ok)
    assert cb._failure_count == 0
    for i in range(3):
        assert cb.state() is CLOSED, f"opened early after {i} failures"
        with pytest.raises(Boom):
            cb.call(_boom)
    assert cb.state() is OPEN


def test_manual_record_methods() -> None:
    cb = CircuitBreaker("x", failure_threshold=2, clock=FakeClock())
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    assert cb.state() is CLOSED
    cb.record_failure()
    assert cb.state() is OPEN


def test_exception_is_reraised_unchanged() -> None:
    cb = CircuitBreaker("x")
    err = Boom("specific")
    with pytest.raises(Boom) as info:
        cb.call(lambda: (_ for _ in ()).throw(err))
    assert info.value is err


def test_state_reports_half_open_after_window_without_mutating() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=10.0, clock=clock)
    _open_breaker(cb)
    clock.advance(9.999)
    assert cb.state() is OPEN
    clock.advance(0.001)  # exactly the timeout: ">=" means elapsed
    assert cb.state() is HALF_OPEN
    assert cb.is_open() is False
    assert cb._state is OPEN  # observation only
    assert cb._probe_in_flight == 0


def test_successful_probe_closes() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=5.0, clock=clock)
    _open_breaker(cb)
    clock.advance(5.1)
    assert cb.call(lambda: 42) == 42
    assert cb.state() is CLOSED
    assert cb._probe_in_flight == 0
    assert cb._failure_count == 0


def test_failing_probe_reopens_and_restarts_window() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=5.0, clock=clock)
    _open_breaker(cb)
    clock.advance(6)
    with pytest.raises(Boom):
        cb.call(_boom)
    assert cb.state() is OPEN
    assert cb._probe_in_flight == 0
    assert cb._last_failure_time == clock.now
    clock.advance(4)
    with pytest.raises(CircuitOpenError):
        cb.call(_ok)
    clock.advance(1)
    assert cb.call(_ok) == "ok"


def test_failure_while_open_extends_window() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=10.0, clock=clock)
    _open_breaker(cb)
    clock.advance(8)
    cb.record_failure()
    clock.advance(8)
    assert cb.state() is OPEN
    clock.advance(2)
    assert cb.state() is HALF_OPEN


def test_success_while_open_does_not_close() -> None:
    cb = CircuitBreaker("x", failure_threshold=1, clock=FakeClock())
    _open_breaker(cb)
    cb.record_success()
    assert cb.state() is OPEN
    assert cb._failure_count == 0


def test_reset() -> None:
    cb = CircuitBreaker("x", failure_threshold=1, clock=FakeClock())
    _open_breaker(cb)
    cb.reset()
    assert cb.state() is CLOSED
    assert (cb._failure_count, cb._last_failure_time, cb._probe_in_flight) == (0, None, 0)
    assert cb.call(_ok) == "ok"


def test_base_exception_records_nothing_and_releases_probe() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=2, recovery_timeout_seconds=1, clock=clock)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.call(interrupt)
    assert cb._failure_count == 0
    _open_breaker(cb)
    clock.advance(1)
    with pytest.raises(KeyboardInterrupt):
        cb.call(interrupt)
    # still half-open, but the permit was given back so the next probe runs
    assert cb._state is HALF_OPEN
    assert cb._probe_in_flight == 0
    assert cb.call(_ok) == "ok"
    assert cb.state() is CLOSED


def test_zero_recovery_timeout_allows_immediate_probe() -> None:
    cb = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=0, clock=FakeClock())
    with pytest.raises(Boom):
        cb.call(_boom)
    assert cb.state() is HALF_OPEN
    assert cb.call(_ok) == "ok"


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1, got 0"),
        ({"failure_threshold": -3}, ValueError, "got -3"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold must be an int, got 1.5"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"half_open_max_probes": 0}, ValueError, "half_open_max_probes must be >= 1, got 0"),
        ({"half_open_max_probes": "2"}, TypeError, "half_open_max_probes"),
        ({"recovery_timeout_seconds": -1.0}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": math.inf}, ValueError, "got inf"),
        ({"recovery_timeout_seconds": math.nan}, ValueError, "got nan"),
        ({"recovery_timeout_seconds": "60"}, TypeError, "recovery_timeout_seconds"),
        ({"clock": 5}, TypeError, "clock must be callable"),
    ],
)
@pytest.mark.parametrize("cls", [CircuitBreaker, AsyncCircuitBreaker])
def test_invalid_config_rejected(
    cls: type[Any], kwargs: dict[str, Any], exc: type[Exception], fragment: str
) -> None:
    with pytest.raises(exc) as info:
        cls("x", **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("cls", [CircuitBreaker, AsyncCircuitBreaker])
def test_non_string_name_rejected(cls: type[Any]) -> None:
    with pytest.raises(TypeError, match="name"):
        cls(123)


# -- concurrency (threads) ----------------------------------------------------------


def _join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "thread hung"


def test_single_probe_with_twenty_contenders() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=1, clock=clock)
    _open_breaker(cb)
    clock.advance(2)

    probe_entered = threading.Event()
    release_probe = threading.Event()
    probe_runs: list[int] = []
    quick_runs: list[int] = []
    rejected: list[CircuitOpenError] = []
    unexpected: list[BaseException] = []
    results: list[str] = []

    def slow_probe() -> str:
        probe_runs.append(1)
        probe_entered.set()
        assert release_probe.wait(JOIN_TIMEOUT)
        return "probe-ok"

    def run_probe() -> None:
        results.append(cb.call(slow_probe))

    def quick() -> str:
        quick_runs.append(1)
        return "quick"

    barrier = threading.Barrier(20)

    def contender() -> None:
        barrier.wait()
        try:
            cb.call(quick)
        except CircuitOpenError as exc:
            rejected.append(exc)
        except BaseException as exc:  # pragma: no cover - reported below
            unexpected.append(exc)

    probe_thread = threading.Thread(target=run_probe)
    probe_thread.start()
    assert probe_entered.wait(JOIN_TIMEOUT)
    contenders = [threading.Thread(target=contender) for _ in range(20)]
    for t in contenders:
        t.start()
    _join_all(contenders)
    with cb._lock:
        assert cb._probe_in_flight == 1
    release_probe.set()
    _join_all([probe_thread])

    assert unexpected == []
    assert len(rejected) == 20
    assert quick_runs == []
    assert probe_runs == [1]
    assert results == ["probe-ok"]
    assert cb.state() is CLOSED


def test_three_probes_admitted_of_ten_threads() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        "x", failure_threshold=1, recovery_timeout_seconds=1, half_open_max_probes=3, clock=clock
    )
    _open_breaker(cb)
    clock.advance(2)

    cond = threading.Condition()
    arrived = 0  # admitted-and-running plus rejected
    admitted = 0
    rejected = 0
    release = threading.Event()
    barrier = threading.Barrier(10)

    def probe() -> str:
        nonlocal arrived, admitted
        with cond:
            admitted += 1
            arrived += 1
            cond.notify_all()
        assert release.wait(JOIN_TIMEOUT)
        return "ok"

    def worker() -> None:
        nonlocal arrived, rejected
        barrier.wait()
        try:
            cb.call(probe)
        except CircuitOpenError:
            with cond:
                rejected += 1
                arrived += 1
                cond.notify_all()

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    with cond:
        assert cond.wait_for(lambda: arrived == 10, JOIN_TIMEOUT)
    with cb._lock:
        assert cb._probe_in_flight == 3
    release.set()
    _join_all(threads)
    assert admitted == 3
    assert rejected == 7
    assert cb.state() is CLOSED


def test_hammering_threads_no_unexpected_errors() -> None:
    cb = CircuitBreaker("x", failure_threshold=100)
    unexpected: list[BaseException] = []
    barrier = threading.Barrier(4)

    def hammer(seed: int) -> None:
        barrier.wait()
        for i in range(2000):
            try:
                if (i + seed) % 3 == 0:
                    cb.call(_boom)
                else:
                    cb.call(_ok)
            except (Boom, CircuitOpenError):
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    _join_all(threads)
    assert unexpected == []
    assert cb.state() is CLOSED  # successes keep resetting the count below 100


def test_state_only_reports_enum_values_under_concurrency() -> None:
    cb = CircuitBreaker("x", failure_threshold=2, recovery_timeout_seconds=0.0)
    stop = threading.Event()
    seen: set[object] = set()

    def churn(fn: Callable[[], object]) -> None:
        while not stop.is_set():
            with contextlib.suppress(Boom, CircuitOpenError):
                cb.call(fn)

    def observe() -> None:
        for _ in range(5000):
            seen.add(cb.state())
        stop.set()

    threads = [
        threading.Thread(target=churn, args=(_boom,)),
        threading.Thread(target=churn, args=(_ok,)),
        threading.Thread(target=observe),
    ]
    for t in threads:
        t.start()
    _join_all(threads)
    assert seen
    assert seen <= set(CircuitState)
    assert all(type(s) is CircuitState for s in seen)


# -- property-based state machine -------------------------------------------------------


class _Model:
    """Tiny reference model of the contract's breaker rules."""

    def __init__(self, threshold: int, timeout: float, max_probes: int) -> None:
        self.threshold, self.timeout, self.max_probes = threshold, timeout, max_probes
        self.state = CLOSED
        self.count = 0
        self.last: float | None = None
        self.probes = 0

    def elapsed(self, now: float) -> bool:
        return self.last is not None and now - self.last >= self.timeout

    def admit(self, now: float) -> bool:
        if self.state is CLOSED:
            return True
        if self.state is OPEN:
            if not self.elapsed(now):
                return False
            self.state, self.probes = HALF_OPEN, 1
            return True
        if self.probes >= self.max_probes:
            return False
        self.probes += 1
        return True

    def success(self) -> None:
        self.count = 0
        if self.state is HALF_OPEN:
            self.state, self.probes = CLOSED, 0

    def failure(self, now: float) -> None:
        self.count += 1
        self.last = now
        if self.state is HALF_OPEN:
            self.state, self.probes = OPEN, 0
        elif self.count >= self.threshold:
            self.state = OPEN

    def observed(self, now: float) -> CircuitState:
        if self.state is OPEN and self.elapsed(now):
            return HALF_OPEN
        return self.state


class _Interrupt(BaseException):
    pass


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        threshold=st.integers(1, 4),
        timeout=st.sampled_from([0.0, 1.0, 5.0, 10.0]),
        max_probes=st.integers(1, 3),
    )
    def setup(self, threshold: int, timeout: float, max_probes: int) -> None:
        self.clock = FakeClock()
        self.cb = CircuitBreaker(
            "prop",
            failure_threshold=threshold,
            recovery_timeout_seconds=timeout,
            half_open_max_probes=max_probes,
            clock=self.clock,
        )
        self.model = _Model(threshold, timeout, max_probes)

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def call_ok(self) -> None:
        expect_admit = self.model.admit(self.clock.now)
        if expect_admit:
            assert self.cb.call(_ok) == "ok"
            self.model.success()
        else:
            with pytest.raises(CircuitOpenError):
                self.cb.call(_ok)

    @rule()
    def call_fail(self) -> None:
        expect_admit = self.model.admit(self.clock.now)
        with pytest.raises(Boom if expect_admit else CircuitOpenError):
            self.cb.call(_boom)
        if expect_admit:
            self.model.failure(self.clock.now)

    @rule()
    def call_interrupted(self) -> None:
        was_closed = self.model.state is CLOSED
        expect_admit = self.model.admit(self.clock.now)

        def interrupt() -> None:
            raise _Interrupt

        with pytest.raises(_Interrupt if expect_admit else CircuitOpenError):
            self.cb.call(interrupt)
        if expect_admit and not was_closed:
            self.model.probes -= 1  # permit handed back, nothing recorded

    @rule()
    def manual_success(self) -> None:
        self.cb.record_success()
        self.model.success()

    @rule()
    def manual_failure(self) -> None:
        self.cb.record_failure()
        self.model.failure(self.clock.now)

    @rule()
    def reset(self) -> None:
        self.cb.reset()
        self.model = _Model(self.model.threshold, self.model.timeout, self.model.max_probes)

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "cb"):
            return
        assert self.cb.state() is self.model.observed(self.clock.now)
        assert self.cb.is_open() is (self.model.observed(self.clock.now) is OPEN)
        assert self.cb._state is self.model.state
        assert self.cb._failure_count == self.model.count
        assert self.cb._last_failure_time == self.model.last
        assert self.cb._probe_in_flight == self.model.probes


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_breaker_state_machine = BreakerMachine.TestCase


# -- AsyncCircuitBreaker ------------------------------------------------------------------


async def _aok() -> str:
    return "ok"


async def _aboom() -> None:
    raise Boom("boom")


async def _aopen(cb: AsyncCircuitBreaker) -> None:
    for _ in range(cb.failure_threshold):
        with pytest.raises(Boom):
            await cb.call(_aboom)
    assert await cb.state() is OPEN


def test_async_constructible_outside_loop_and_independent() -> None:
    acb = AsyncCircuitBreaker("shared-name")
    sync = CircuitBreaker("shared-name", failure_threshold=1)
    assert isinstance(acb._lock, asyncio.Lock)
    assert not isinstance(acb, CircuitBreaker)
    sync.record_failure()
    assert sync.state() is OPEN
    assert asyncio.run(acb.state()) is CLOSED
    assert asyncio.run(acb.call(_aok)) == "ok"


@pytest.mark.asyncio
async def test_async_initial_state() -> None:
    acb = AsyncCircuitBreaker("a")
    assert await acb.state() is CLOSED
    assert await acb.is_open() is False
    assert acb.failure_threshold == 5 and acb.half_open_max_probes == 1


@pytest.mark.asyncio
async def test_async_call_passes_args() -> None:
    acb = AsyncCircuitBreaker("a")

    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await acb.call(add, 1, b=2) == 3


@pytest.mark.asyncio
async def test_async_threshold_and_consecutive() -> None:
    acb = AsyncCircuitBreaker("a", failure_threshold=3, clock=FakeClock())
    for _ in range(2):
        with pytest.raises(Boom):
            await acb.call(_aboom)
    await acb.call(_aok)
    for _ in range(2):
        with pytest.raises(Boom):
            await acb.call(_aboom)
    assert await acb.state() is CLOSED
    with pytest.raises(Boom):
        await acb.call(_aboom)
    assert await acb.is_open() is True
    ran: list[int] = []

    async def tracked() -> None:
        ran.append(1)

    with pytest.raises(CircuitOpenError, match="'a'"):
        await acb.call(tracked)
    assert ran == []


@pytest.mark.asyncio
async def test_async_probe_success_and_failure() -> None:
    clock = FakeClock()
    acb = AsyncCircuitBreaker("a", failure_threshold=1, recovery_timeout_seconds=3, clock=clock)
    await _aopen(acb)
    clock.advance(3)
    assert await acb.state() is HALF_OPEN
    assert await acb.is_open() is False
    with pytest.raises(Boom):
        await acb.call(_aboom)
    assert await acb.state() is OPEN
    clock.advance(3)
    assert await acb.call(_aok) == "ok"
    assert await acb.state() is CLOSED


@pytest.mark.asyncio
async def test_async_manual_record_and_reset() -> None:
    acb = AsyncCircuitBreaker("a", failure_threshold=2, clock=FakeClock())
    await acb.record_failure()
    await acb.record_success()
    await acb.record_failure()
    assert await acb.state() is CLOSED
    await acb.record_failure()
    assert await acb.state() is OPEN
    await acb.reset()
    assert await acb.state() is CLOSED
    assert (acb._failure_count, acb._last_failure_time, acb._probe_in_flight) == (0, None, 0)


@pytest.mark.asyncio
async def test_async_single_probe_serialisation() -> None:
    clock = FakeClock()
    acb = AsyncCircuitBreaker("a", failure_threshold=1, recovery_timeout_seconds=1, clock=clock)
    await _aopen(acb)
    clock.advance(1)

    entered = asyncio.Event()
    release = asyncio.Event()
    probe_runs = 0
    quick_runs = 0

    async def slow() -> str:
        nonlocal probe_runs
        probe_runs += 1
        entered.set()
        await release.wait()
        return "probe"

    async def quick() -> str:
        nonlocal quick_runs
        quick_runs += 1
        return "quick"

    probe_task = asyncio.create_task(acb.call(slow))
    await asyncio.wait_for(entered.wait(), JOIN_TIMEOUT)
    results = await asyncio.gather(*(acb.call(quick) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, CircuitOpenError) for r in results)
    assert len(results) == 10
    assert quick_runs == 0
    release.set()
    assert await asyncio.wait_for(probe_task, JOIN_TIMEOUT) == "probe"
    assert probe_runs == 1
    assert await acb.state() is CLOSED


@pytest.mark.asyncio
async def test_async_three_probes_of_ten_tasks() -> None:
    clock = FakeClock()
    acb = AsyncCircuitBreaker(
        "a", failure_threshold=1, recovery_timeout_seconds=1, half_open_max_probes=3, clock=clock
    )
    await _aopen(acb)
    clock.advance(1)
    release = asyncio.Event()
    admitted = 0

    async def probe() -> str:
        nonlocal admitted
        admitted += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(acb.call(probe)) for _ in range(10)]
    # Let every task reach admission: rejected ones finish, admitted ones block.
    # Bounded so a broken breaker fails the test instead of spinning forever.
    for _ in range(1000):
        if admitted + sum(t.done() for t in tasks) >= 10:
            break
        await asyncio.sleep(0)
    assert admitted == 3
    assert acb._probe_in_flight == 3
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), JOIN_TIMEOUT)
    assert results.count("ok") == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 7
    assert await acb.state() is CLOSED


@pytest.mark.asyncio
async def test_async_cancelled_probe_releases_permit() -> None:
    clock = FakeClock()
    acb = AsyncCircuitBreaker("a", failure_threshold=1, recovery_timeout_seconds=1, clock=clock)
    await _aopen(acb)
    clock.advance(1)
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(acb.call(hang))
    await entered.wait()
    assert acb._probe_in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert acb._probe_in_flight == 0
    assert acb._failure_count == 1  # only the opening failure
    assert await acb.call(_aok) == "ok"
    assert await acb.state() is CLOSED


def test_a_refusal_while_the_probe_is_out_says_half_open_on_the_error_and_the_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from techrevati.runtime import Orchestrator

    clock = FakeClock()
    cb = CircuitBreaker("api", failure_threshold=1, recovery_timeout_seconds=5.0, clock=clock)
    _open_breaker(cb)
    clock.advance(5.0)
    probe = BreakerPermit(cb)
    probe.admit()  # the one half-open probe, still in flight
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    orch = Orchestrator(role="w", circuit_breaker=cb, tracer_provider=provider)
    with orch.session() as s, pytest.raises(CircuitOpenError) as refused:
        s.run_turn(lambda: "never", model="m")
    assert str(refused.value) == (
        "Circuit breaker 'api' refused the call: it is half-open and its 1 probe call is "
        "still in flight; it admits calls again once a probe succeeds"
    )
    [chat] = [span for span in exporter.get_finished_spans() if span.name == "chat m"]
    assert chat.attributes is not None
    assert chat.attributes["techrevati.breaker.state"] == "half_open"
    probe.succeeded()
    assert cb.state() is CLOSED


def test_the_session_span_carries_the_breaker_as_it_stands_at_the_end() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from techrevati.runtime import Orchestrator

    cb = CircuitBreaker("api", failure_threshold=1, recovery_timeout_seconds=60.0)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    orch = Orchestrator(role="w", circuit_breaker=cb, tracer_provider=provider)
    with orch.session() as s, contextlib.suppress(RuntimeError):
        s.run_turn(lambda: (_ for _ in ()).throw(RuntimeError("provider down")), model="m")
    [session] = [span for span in exporter.get_finished_spans() if span.name == "invoke_agent w"]
    assert session.attributes is not None
    assert session.attributes["techrevati.breaker.name"] == "api"
    assert session.attributes["techrevati.breaker.state"] == "open"


# -- what an open breaker's refusal says ----------------------------------------------


def _refused_by_open(clock: FakeClock, cb: CircuitBreaker) -> CircuitOpenError:
    for _ in range(2):
        with pytest.raises(ConnectionError):
            cb.call(_refuse_connection)
    clock.advance(10.0)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        cb.call(lambda: ran.append(1))
    assert ran == []
    return info.value


def _refuse_connection() -> None:
    raise ConnectionError("connection refused")


def test_an_open_refusal_says_why_it_opened_and_when_it_lets_a_call_through() -> None:
    import pickle

    clock = FakeClock()
    cb = CircuitBreaker(
        "model-api", failure_threshold=2, recovery_timeout_seconds=30.0, clock=clock
    )
    error = _refused_by_open(clock, cb)
    assert str(error) == "Circuit breaker 'model-api' is OPEN"  # (pinned by the contract)
    assert error.__notes__ == [
        "opened after 2 consecutive failures (last: ConnectionError): this call was refused "
        "before it ran; a trial call is let through in 20.0s (recovery_timeout_seconds=30)"
    ]
    assert (error.name, error.reason, error.failures, error.retry_in_seconds) == (
        "model-api",
        None,
        2,
        20.0,
    )
    assert error.last_failure == "ConnectionError"
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), vars(again)) == (str(error), vars(error))
    error.add_note("the application's own note")  # (kept too: notes travel as state)
    again = pickle.loads(pickle.dumps(error))
    assert again.__notes__ == error.__notes__ and len(again.__notes__) == 2


class _ProviderError(Exception):
    status_code = 401


def test_an_open_refusal_names_the_last_failure_by_type_and_status_never_its_text() -> None:
    # A provider's error text may quote a key or the prompt: the refusal, repeated on
    # every call while the circuit is open, names only the type and HTTP status.
    clock = FakeClock()
    cb = CircuitBreaker("api", failure_threshold=1, recovery_timeout_seconds=5.0, clock=clock)

    def leaks() -> None:
        raise _ProviderError("invalid key sk-proj-abc123 for prompt 'my secret plan'")

    with pytest.raises(_ProviderError):
        cb.call(leaks)
    with pytest.raises(CircuitOpenError) as info:
        cb.call(_ok)
    assert info.value.last_failure == "_ProviderError (HTTP 401)"
    assert "sk-proj" not in "".join(info.value.__notes__) + str(info.value)
    # A failure told by hand (record_failure) has no error to name.
    cb.reset()
    cb.record_failure()
    with pytest.raises(CircuitOpenError) as info:
        cb.call(_ok)
    assert info.value.__notes__[0].startswith(
        "opened after 1 consecutive failure: this call was refused"
    )
    assert info.value.last_failure is None


def test_an_async_open_refusal_says_the_same() -> None:
    clock = FakeClock()
    cb = AsyncCircuitBreaker(
        "model-api", failure_threshold=2, recovery_timeout_seconds=30.0, clock=clock
    )

    async def refuse() -> None:
        raise ConnectionError("connection refused")

    async def main() -> CircuitOpenError:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await cb.call(refuse)
        clock.advance(29.95)
        with pytest.raises(CircuitOpenError) as info:
            await cb.call(refuse)
        return info.value

    error = asyncio.run(main())
    assert str(error) == "Circuit breaker 'model-api' is OPEN"
    assert error.__notes__ == [
        "opened after 2 consecutive failures (last: ConnectionError): this call was refused "
        "before it ran; a trial call is let through in 50ms (recovery_timeout_seconds=30)"
    ]


def test_an_open_refusal_is_classified_as_the_refusal_not_as_its_last_failure() -> None:
    from techrevati.runtime.retry_policy import FailureScenario, classify_exception

    cb = CircuitBreaker("api", failure_threshold=1)

    def hangs_up() -> None:
        raise TimeoutError("upstream 503: read timed out")

    with pytest.raises(TimeoutError):
        cb.call(hangs_up)
    with pytest.raises(CircuitOpenError) as info:
        cb.call(_ok)
    assert classify_exception(info.value) is FailureScenario.LLM_ERROR
