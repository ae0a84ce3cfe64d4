"""Baggage comes from the network: what a forged, unknown or unwanted id can do (nothing),
and what happens when the store fails or the parent closes first."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import baggage, context, propagate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from fleet.redis_server import RedisServer
from techrevati.runtime import FleetUnavailableError, UsageSnapshot, agent_session
from techrevati.runtime.fleet import sessions
from techrevati.runtime.fleet.sessions import RedisSessionStore
from techrevati.runtime.telemetry import semconv as sc
from techrevati.runtime.telemetry.calls import metrics as metrics_module
from techrevati.runtime.telemetry.limits import remote

from . import children


def calls_under(ctx: context.Context, attempts: int) -> dict[str, object]:
    token = context.attach(ctx)
    try:
        return children.calls(attempts, own_session=False)
    finally:
        context.detach(token)


def forged(value: str) -> context.Context:
    return baggage.set_baggage(remote.BAGGAGE_KEY, value, context.Context())


def unknown_count(reader: InMemoryMetricReader) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == sc.METRIC_REMOTE_UNKNOWN:
                    total += sum(p.value for p in metric.data.data_points)
    return total


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    built = metrics_module.instruments_for(provider)
    monkeypatch.setattr(sessions, "instruments_for", lambda _provider: built)
    return reader


@pytest.mark.parametrize(
    "value",
    ["0" * 32, "ffffffffffffffffffffffffffffffff", "not-an-id", "x" * 5000, "{a}:meta"],
    ids=["unknown", "unknown-2", "malformed", "huge", "key-injection"],
)
def test_an_id_the_store_does_not_know_charges_nothing_and_warns_once(
    store: RedisSessionStore,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
    value: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.fleet"):
        first = calls_under(forged(value), 30)
        second = calls_under(forged(value), 30)
    assert first["ran"] == 30 and second["ran"] == 30  # local limits only: none here
    warnings = [r for r in caplog.records if "does not know" in r.getMessage()]
    assert len(warnings) == 1
    # It says the likely cause and the remedy: a queued task that ran after the session
    # that sent it closed (18 calls on local limits where 5 were allowed).
    assert "closed before this request or task ran" in warnings[0].getMessage()
    assert "wait for the tasks' results" in warnings[0].getMessage()
    assert value not in warnings[0].getMessage()  # never echo what the network sent
    assert unknown_count(reader) >= 1
    assert store._client.dbsize() == 0  # nothing was written for it


def baggage_only(carrier: dict[str, str]) -> context.Context:
    """The carried context without its span: in this process the parent session owns
    that span, so only another process would see the baggage alone."""
    return propagate.extract({k: v for k, v in carrier.items() if k != "traceparent"})


def in_fresh_thread(ctx: context.Context, attempts: int) -> dict[str, object]:
    """As another process would: no session of ours in scope, only the carried context."""
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(calls_under(ctx, attempts)))
    worker.start()
    worker.join(60)
    return result


def raise_from_thread(ctx: context.Context) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        token = context.attach(ctx)
        try:
            children.one_call()
        except BaseException as exc:
            errors.append(exc)
        finally:
            context.detach(token)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def frozen(redis_server: RedisServer, store: RedisSessionStore) -> Iterator[None]:
    """Another process's store (a 0.3 s timeout), its Redis frozen while in the block."""
    remote.install_store(RedisSessionStore(redis_server.url, timeout_s=0.3))
    redis_server.pause()
    try:
        yield
    finally:
        redis_server.resume()
        remote.install_store(store)


def in_thread_under(carrier: dict[str, str], work: Callable[[], None]) -> None:
    """``work`` in a thread that carries only the baggage, as another process would."""

    def run() -> None:
        token = context.attach(baggage_only(carrier))
        try:
            work()
        finally:
            context.detach(token)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)


@pytest.mark.parametrize(("accept", "ran"), [(True, 2), (False, 5)])
def test_accept_remote_sessions_false_ignores_even_a_real_id(
    store: RedisSessionStore, accept: bool, ran: int
) -> None:
    store.accept_remote = accept
    with agent_session("planner", max_iterations=2, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        outcome = in_fresh_thread(baggage_only(carrier), 5)
    assert outcome["ran"] == ran


def test_a_baggage_member_with_properties_still_names_its_session(
    store: RedisSessionStore,
) -> None:
    # W3C baggage lets a member carry properties after its value (id;p=1): the id with
    # them was unknown to the store, and 5 of 5 calls ran under a cap of 2.
    with agent_session("planner", max_iterations=2, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        carrier["baggage"] += ";origin=gateway"
        outcome = in_fresh_thread(baggage_only(carrier), 5)
    assert outcome["ran"] == 2


def test_a_frozen_store_refuses_within_the_timeout(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    with agent_session("planner", max_iterations=10, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        with frozen(redis_server, store):
            started = time.monotonic()
            with pytest.raises(FleetUnavailableError):
                raise_from_thread(baggage_only(carrier))
            assert time.monotonic() - started < 3.0


def test_a_frozen_store_never_fails_a_span_that_is_no_model_call(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    # Every span under the carried baggage looked its session up: with the store down an
    # ASGI server's span (or a database's) raised FleetUnavailableError, so the request
    # failed with a 500, and with it frozen each span waited the timeout again.
    from opentelemetry.sdk.trace import TracerProvider

    from techrevati.runtime.telemetry.limits.processor import ensure_limits_processor

    provider = TracerProvider()
    ensure_limits_processor(provider)
    tracer = provider.get_tracer("my.app.db")
    with agent_session("planner", max_iterations=10, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        took: list[float] = []
        refused: list[BaseException] = []

        def run() -> None:
            for _ in range(5):
                started = time.monotonic()
                with tracer.start_as_current_span("SELECT users"):
                    pass
                took.append(time.monotonic() - started)
            try:
                children.one_call()
            except FleetUnavailableError as error:
                refused.append(error)

        with frozen(redis_server, store):
            in_thread_under(carrier, run)
    assert len(took) == 5
    # One wait for the frozen store; the next lookups answer from that failure.
    assert sum(took[1:]) < 0.2, took
    # A model call is still refused: the store cannot count it.
    assert len(refused) == 1


def test_a_session_opened_under_a_frozen_store_opens_and_refuses_its_model_calls(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    # A service's handler opening a session under the shared session's baggage while the
    # store was down: the session's opening raised FleetUnavailableError, so a request
    # that makes no model call failed with a 500.
    seen: list[str] = []

    def handler() -> None:
        with agent_session("researcher"):
            seen.append("opened")
            try:
                children.one_call()
                seen.append("ran")
            except FleetUnavailableError:
                seen.append("refused")

    with agent_session("planner", max_iterations=10, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        with frozen(redis_server, store):
            in_thread_under(carrier, handler)
    assert seen == ["opened", "refused"]


def test_a_frozen_store_under_allow_runs_calls_on_local_limits(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    lenient = RedisSessionStore(redis_server.url, timeout_s=0.3, on_store_error="allow")
    remote.install_store(lenient)
    try:
        with agent_session("planner", max_iterations=10, shared=True):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            assert in_fresh_thread(baggage_only(carrier), 1)["ran"] == 1  # known, cached
            redis_server.pause()
            try:
                started = time.monotonic()
                outcome = in_fresh_thread(baggage_only(carrier), 2)
                elapsed = time.monotonic() - started
            finally:
                redis_server.resume()
        assert outcome["ran"] == 2
        assert elapsed < 3.0  # each admission gives up after timeout_s
    finally:
        remote.install_store(store)


def test_after_the_parent_closes_new_calls_run_on_local_limits(
    store: RedisSessionStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sessions, "LOOKUP_TTL_S", 0.0)
    with agent_session("planner", max_iterations=3, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        during = in_fresh_thread(baggage_only(carrier), 5)
    assert during["ran"] == 3
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.fleet"):
        after = in_fresh_thread(baggage_only(carrier), 5)
    assert after["ran"] == 5
    assert any("does not know" in r.getMessage() for r in caplog.records)


def test_a_child_session_still_open_after_its_parent_closed_leaves_nothing_behind(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A child session opened under the shared session, still running after the parent
    # closed and the lease ran out: its calls recreated the scope's keys with no expiry
    # (one leaked key per such session), with a fresh cap of 3 more calls, and logged a
    # false ERROR that Redis had evicted them.
    import redis

    short = RedisSessionStore(redis_server.url, lease_s=0.3)
    remote.install_store(short)
    ran: list[str] = []
    opened, closed = threading.Event(), threading.Event()
    try:
        with agent_session("planner", max_iterations=3, shared=True):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)

            def child() -> None:
                token = context.attach(baggage_only(carrier))
                try:
                    with agent_session("researcher"):
                        children.one_call()
                        ran.append("before")
                        opened.set()
                        closed.wait(30)
                        time.sleep(0.6)  # past the lease: the parent's keys expired
                        for _ in range(4):
                            children.one_call()
                            ran.append("after")
                finally:
                    context.detach(token)

            worker = threading.Thread(target=child)
            worker.start()
            assert opened.wait(30)
        with caplog.at_level(logging.INFO, logger="techrevati.runtime.fleet"):
            closed.set()
            worker.join(60)
    finally:
        remote.install_store(None)
    # The closed session no longer counts them: they run on the child's own limits.
    assert ran == ["before"] + ["after"] * 4
    client = redis.Redis.from_url(redis_server.url)
    leaked = [key for key in client.scan_iter("*") if client.pttl(key) == -1]
    assert leaked == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("its shared session closed" in r.getMessage() for r in caplog.records)


def test_a_shared_sessions_record_lost_while_it_is_open_does_not_close_it(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    # Its record (the one key of an open session with an expiry, so the first an
    # eviction takes) was read as its close: every later admission under it counted
    # nothing, 7 of 7 calls ran under a cap of 3.
    import redis

    with agent_session("planner", max_iterations=3, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        first = in_fresh_thread(baggage_only(carrier), 1)
        client = redis.Redis.from_url(redis_server.url)
        for key in client.scan_iter("*:meta"):
            client.delete(key)
        rest = in_fresh_thread(baggage_only(carrier), 6)
    assert (first["ran"], rest["ran"]) == (1, 2)


def test_every_key_of_a_shared_session_expires_even_if_it_never_closes(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    # A session has no window to end its counters: they were made with no expiry, and
    # only the close gave them one. A parent killed (or a close the store never got)
    # left them for good, and a child's read or late booking after the close made new
    # ones (the expired holds' hash) the same way.
    import redis

    client = redis.Redis.from_url(redis_server.url)
    with agent_session("planner", max_iterations=5, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        assert in_fresh_thread(baggage_only(carrier), 2)["ran"] == 2
        # As a killed parent leaves them: never closed.
        forever = [key for key in client.scan_iter("*") if client.pttl(key) == -1]
    assert forever == []
    assert [key for key in client.scan_iter("*") if client.pttl(key) == -1] == []


def test_shared_without_a_store_says_what_to_do() -> None:
    remote.install_store(None)
    with (
        pytest.raises(ValueError, match="configure\\(session_store="),
        agent_session("planner", shared=True),
    ):
        pass


def test_an_orchestrator_session_can_be_shared(store: RedisSessionStore) -> None:
    from techrevati.runtime import Orchestrator

    orch = Orchestrator(role="planner", phase="plan", max_iterations=3, shared=True)
    with orch.session():
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        assert remote.BAGGAGE_KEY in carrier.get("baggage", "")
        outcome = in_fresh_thread(baggage_only(carrier), 5)
    assert outcome["ran"] == 3
    assert outcome["errors"] == ["MaxIterationsExceededError"] * 2


def test_an_unshared_session_sends_no_baggage(store: RedisSessionStore) -> None:
    with agent_session("planner", max_iterations=3):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    assert remote.BAGGAGE_KEY not in carrier.get("baggage", "")
    assert store._client.dbsize() == 0


class _AgentsOwnError(Exception):
    pass


def test_closing_a_shared_session_with_its_store_down_never_fails_the_agent(
    redis_server: RedisServer, store: RedisSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    # The session's exit read the tree's spend from the store: with Redis gone it
    # raised FleetUnavailableError from __exit__, and in place of the agent's own
    # error when the block was already failing.
    with caplog.at_level(logging.WARNING, logger="techrevati.runtime.telemetry"):
        with agent_session("planner", max_iterations=10, shared=True):
            redis_server.stop()
        redis_server.start()
        with pytest.raises(_AgentsOwnError), agent_session("planner", shared=True):
            redis_server.stop()
            raise _AgentsOwnError("the agent's own error")
    assert caplog.text.count("its store could not be read at close") == 2


def test_a_process_without_a_store_warns_once_that_the_shared_session_is_not_counted(
    store: RedisSessionStore,
) -> None:
    # The child process forgot configure(session_store=...): its calls ran past the
    # parent's limits with nothing said.
    with agent_session("planner", max_iterations=1, shared=True):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    remote.install_store(None)  # what the child process would have
    remote._no_store_warned = False
    try:
        with pytest.warns(RuntimeWarning, match="no session store") as warned:
            raise_from_thread(baggage_only(carrier))
            raise_from_thread(baggage_only(carrier))
        assert len([w for w in warned if "no session store" in str(w.message)]) == 1
    finally:
        remote.install_store(store)


def test_with_its_store_down_a_shared_sessions_remaining_is_what_it_last_saw(
    redis_server: RedisServer, store: RedisSessionStore
) -> None:
    """Read in the agent's loop, so a down store costs one bounded try, then none."""
    with agent_session("planner", max_iterations=5, shared=True, wrap_up_at=0.5) as session:
        session.run_turn(lambda: "ok", model=children.MODEL, usage=UsageSnapshot(input_tokens=1))
        level = next(f for f in session._ledger.fleet if hasattr(f, "shared_totals"))
        asked: list[int] = []
        peek = level._store.peek

        def counted(**kwargs: int) -> list[int]:
            asked.append(1)
            return peek(**kwargs)

        level._store.peek = counted  # type: ignore[method-assign]
        assert session.remaining().calls == 4 and len(asked) == 1
        redis_server.stop()
        for _ in range(3):
            assert session.remaining().calls == 4  # what the last admission said
            assert session.wrapping_up is False
        assert len(asked) == 2  # one try while down; then known down, not asked
        redis_server.start()
