"""Tests for techrevati.runtime.agent_lifecycle (contract §3)."""

from __future__ import annotations

import itertools
import logging
import re
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from techrevati.runtime.agent_lifecycle import (
    AgentRegistry,
    AgentStatus,
    AgentWorker,
    AgentWorkerEvent,
    InvalidTransitionError,
)

S = AgentStatus

# Written out independently of the implementation so a wrong table fails here.
TABLE: dict[AgentStatus, set[AgentStatus]] = {
    S.IDLE: {S.INITIALIZING, S.FAILED, S.CANCELLED},
    S.INITIALIZING: {S.WAITING_FOR_INPUT, S.RUNNING, S.FAILED, S.CANCELLED},
    S.WAITING_FOR_INPUT: {S.RUNNING, S.FAILED, S.CANCELLED},
    S.RUNNING: {S.WAITING_FOR_INPUT, S.COMPLETED, S.FAILED, S.CANCELLED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}
TERMINAL = {S.COMPLETED, S.FAILED, S.CANCELLED}
NON_TERMINAL = [S.IDLE, S.INITIALIZING, S.WAITING_FOR_INPUT, S.RUNNING]


def _worker(status: AgentStatus = S.IDLE) -> AgentWorker:
    return AgentWorker("w-1", "writer", "draft", project_id=4, status=status)


# -- enum ----------------------------------------------------------------------


def test_status_values() -> None:
    assert {s.name: s.value for s in AgentStatus} == {
        "IDLE": "idle",
        "INITIALIZING": "initializing",
        "WAITING_FOR_INPUT": "waiting_for_input",
        "RUNNING": "running",
        "COMPLETED": "completed",
        "FAILED": "failed",
        "CANCELLED": "cancelled",
    }
    assert str(S.RUNNING) == "AgentStatus.RUNNING"
    assert S.RUNNING == "running"


def test_logger_has_null_handler_and_propagates() -> None:
    lg = logging.getLogger("techrevati.runtime.lifecycle")
    assert any(isinstance(h, logging.NullHandler) for h in lg.handlers)
    assert lg.propagate is True


# -- transition table ----------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    list(itertools.product(list(AgentStatus), list(AgentStatus))),
    ids=lambda s: s.value,
)
def test_transition_table_all_pairs(current: AgentStatus, target: AgentStatus) -> None:
    w = _worker(current)
    before = (w.status, list(w.events), w.updated_at, w.last_error)
    if target in TABLE[current]:
        ev = w.transition(target, "why")
        assert w.status is target
        assert ev.kind == ev.status == target.value
        assert w.events == [ev]
    else:
        with pytest.raises(InvalidTransitionError) as info:
            w.transition(target, "why")
        assert info.value.current is current
        assert info.value.target is target
        # nothing mutated
        assert (w.status, w.events, w.updated_at, w.last_error) == before


def test_self_transitions_invalid() -> None:
    for s in AgentStatus:
        with pytest.raises(InvalidTransitionError):
            _worker(s).transition(s)


@pytest.mark.parametrize("start", NON_TERMINAL, ids=lambda s: s.value)
@pytest.mark.parametrize("end", [S.FAILED, S.CANCELLED], ids=lambda s: s.value)
def test_failed_and_cancelled_reachable_and_terminal(start: AgentStatus, end: AgentStatus) -> None:
    w = _worker(start)
    assert not w.is_terminal
    w.transition(end)
    assert w.is_terminal


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.IDLE, S.COMPLETED), (S.COMPLETED, S.RUNNING), (S.CANCELLED, S.RUNNING)],
)
def test_named_invalid_transitions(current: AgentStatus, target: AgentStatus) -> None:
    with pytest.raises(InvalidTransitionError):
        _worker(current).transition(target)


def test_completed_only_from_running() -> None:
    sources = {s for s in AgentStatus if S.COMPLETED in TABLE[s]}
    assert sources == {S.RUNNING}
    for s in AgentStatus:
        w = _worker(s)
        if s is S.RUNNING:
            w.transition(S.COMPLETED)
        else:
            with pytest.raises(InvalidTransitionError):
                w.transition(S.COMPLETED)


@pytest.mark.parametrize("status", list(AgentStatus), ids=lambda s: s.value)
def test_is_terminal(status: AgentStatus) -> None:
    assert _worker(status).is_terminal is (status in TERMINAL)


# -- InvalidTransitionError ------------------------------------------------------


def test_invalid_transition_error_message_and_attrs() -> None:
    err = InvalidTransitionError(S.COMPLETED, S.RUNNING)
    assert str(err) == "Invalid transition: completed \u2192 running"
    assert err.current is S.COMPLETED
    assert err.target is S.RUNNING
    assert isinstance(err, Exception)


# -- AgentWorkerEvent ------------------------------------------------------------


def test_worker_event_to_dict_detail_only_when_truthy() -> None:
    base = {"seq": 2, "kind": "failed", "status": "failed", "timestamp": "T"}
    assert AgentWorkerEvent(2, "failed", "failed", None, "T").to_dict() == base
    assert AgentWorkerEvent(2, "failed", "failed", "", "T").to_dict() == base
    assert AgentWorkerEvent(2, "failed", "failed", "x", "T").to_dict() == {**base, "detail": "x"}


def test_worker_event_is_frozen() -> None:
    ev = AgentWorkerEvent(1, "k", "s", None, "T")
    with pytest.raises(AttributeError):
        ev.seq = 2  # type: ignore[misc]


# -- AgentWorker ----------------------------------------------------------------


def test_worker_defaults() -> None:
    w = AgentWorker("id", "r", "p")
    assert w.project_id is None
    assert w.status is S.IDLE
    assert w.events == []
    assert w.retry_count == 0
    assert w.last_error is None
    assert w.provider_used is None
    assert datetime.fromisoformat(w.created_at).utcoffset() == timedelta(0)
    assert datetime.fromisoformat(w.updated_at).utcoffset() == timedelta(0)
    assert AgentWorker("id2", "r", "p").events is not w.events


def test_transition_records_sequenced_events() -> None:
    w = _worker()
    e1 = w.transition(S.INITIALIZING)
    e2 = w.transition(S.RUNNING, "go")
    e3 = w.transition(S.WAITING_FOR_INPUT, "need input")
    assert [e.seq for e in (e1, e2, e3)] == [1, 2, 3]
    assert [e.kind for e in w.events] == ["initializing", "running", "waiting_for_input"]
    assert (e1.detail, e2.detail, e3.detail) == (None, "go", "need input")
    assert w.updated_at == e3.timestamp
    assert w.last_error is None
    assert w.retry_count == 0 and w.provider_used is None


def test_transition_to_failed_sets_last_error() -> None:
    w = _worker(S.RUNNING)
    ev = w.transition(S.FAILED, "model exploded")
    assert w.last_error == {"message": "model exploded", "timestamp": ev.timestamp}


@pytest.mark.parametrize("detail", [None, ""])
def test_transition_to_failed_without_detail_leaves_last_error(detail: str | None) -> None:
    w = _worker(S.RUNNING)
    w.transition(S.FAILED, detail)
    assert w.last_error is None


def test_cancel_with_detail_does_not_set_last_error() -> None:
    w = _worker(S.RUNNING)
    w.transition(S.CANCELLED, "stop")
    assert w.last_error is None


def test_transition_accepts_value_string() -> None:
    w = _worker()
    ev = w.transition("initializing")  # type: ignore[arg-type]
    assert w.status is S.INITIALIZING
    assert ev.kind == "initializing"


def test_transition_unknown_string_raises_value_error_naming_it() -> None:
    w = _worker()
    with pytest.raises(ValueError, match="'sleeping'"):
        w.transition("sleeping")  # type: ignore[arg-type]
    assert w.status is S.IDLE and w.events == []


def test_transition_wrong_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match="int"):
        _worker().transition(3)  # type: ignore[arg-type]


def test_worker_constructed_with_status_string_is_coerced() -> None:
    w = AgentWorker("id", "r", "p", status="running")  # type: ignore[arg-type]
    assert w.status is S.RUNNING


def test_worker_constructed_with_unknown_status_raises() -> None:
    with pytest.raises(ValueError, match="'bogus'"):
        AgentWorker("id", "r", "p", status="bogus")  # type: ignore[arg-type]


def test_worker_to_dict() -> None:
    w = _worker()
    w.transition(S.INITIALIZING)
    w.transition(S.FAILED, "boom")
    d = w.to_dict()
    assert list(d) == [
        "worker_id",
        "role",
        "phase",
        "project_id",
        "status",
        "retry_count",
        "last_error",
        "provider_used",
        "created_at",
        "updated_at",
        "events",
    ]
    assert d["worker_id"] == "w-1"
    assert d["role"] == "writer"
    assert d["phase"] == "draft"
    assert d["project_id"] == 4
    assert d["status"] == "failed" and type(d["status"]) is str
    assert d["last_error"]["message"] == "boom"
    assert len(d["events"]) == 2
    assert d["events"][1] == w.events[1].to_dict()
    assert "detail" not in d["events"][0]


# -- AgentRegistry ----------------------------------------------------------------


def test_registry_create_and_get() -> None:
    reg = AgentRegistry()
    w = reg.create("writer", "draft", project_id=7)
    assert re.fullmatch(r"writer-draft-[0-9a-f]{8}", w.worker_id)
    assert w.status is S.IDLE and w.events == []
    assert (w.role, w.phase, w.project_id) == ("writer", "draft", 7)
    assert reg.get(w.worker_id) is w
    assert reg.get("nope") is None
    assert reg.create("writer", "draft").worker_id != w.worker_id


def test_registry_transition_returns_worker() -> None:
    reg = AgentRegistry()
    w = reg.create("r", "p")
    out = reg.transition(w.worker_id, S.INITIALIZING, "start")
    assert out is w
    assert w.status is S.INITIALIZING
    assert w.events[0].detail == "start"


def test_registry_transition_unknown_id() -> None:
    reg = AgentRegistry()
    with pytest.raises(KeyError) as info:
        reg.transition("ghost", S.RUNNING)
    assert info.value.args[0] == "Worker not found: ghost"


def test_registry_transition_invalid_propagates() -> None:
    reg = AgentRegistry()
    w = reg.create("r", "p")
    with pytest.raises(InvalidTransitionError):
        reg.transition(w.worker_id, S.COMPLETED)
    assert w.status is S.IDLE


def _walk_to(reg: AgentRegistry, worker: AgentWorker, *path: AgentStatus) -> None:
    for s in path:
        reg.transition(worker.worker_id, s)


def test_registry_list_active_and_lookups() -> None:
    reg = AgentRegistry()
    a = reg.create("writer", "draft", 1)
    b = reg.create("writer", "draft", 1)
    c = reg.create("critic", "draft", 2)
    assert reg.list_active() == [a, b, c]
    assert reg.get_by_role_phase("writer", "draft") is a
    _walk_to(reg, a, S.INITIALIZING, S.RUNNING, S.COMPLETED)
    assert reg.list_active() == [b, c]
    assert reg.get_by_role_phase("writer", "draft") is b
    assert reg.get_by_role_phase("writer", "review") is None
    assert reg.get_by_role_phase("critic", "draft") is c
    _walk_to(reg, b, S.CANCELLED)
    assert reg.get_by_role_phase("writer", "draft") is None
    # terminal workers still show up per project
    assert reg.get_by_project(1) == [a, b]
    assert reg.get_by_project(2) == [c]
    assert reg.get_by_project(3) == []


def test_registry_clear() -> None:
    reg = AgentRegistry()
    w = reg.create("r", "p")
    reg.clear()
    assert reg.get(w.worker_id) is None
    assert reg.list_active() == []


def test_registry_thread_safety_ten_threads() -> None:
    reg = AgentRegistry()
    n = 10
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    ids: list[str] = []
    ids_lock = threading.Lock()

    def work(i: int) -> None:
        try:
            barrier.wait()
            w = reg.create(f"role{i}", "phase", project_id=i % 2)
            for s in (S.INITIALIZING, S.RUNNING, S.COMPLETED):
                reg.transition(w.worker_id, s, f"t{i}")
            with ids_lock:
                ids.append(w.worker_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == n
    for wid in ids:
        worker = reg.get(wid)
        assert worker is not None
        assert worker.status is S.COMPLETED
        assert [e.seq for e in worker.events] == [1, 2, 3]
    assert reg.list_active() == []
    assert len(reg.get_by_project(0)) + len(reg.get_by_project(1)) == n


def test_registry_concurrent_transitions_on_one_worker_serialised() -> None:
    # Many threads race to move one RUNNING worker; exactly one terminal move wins.
    reg = AgentRegistry()
    w = reg.create("r", "p")
    _walk_to(reg, w, S.INITIALIZING, S.RUNNING)
    n = 12
    barrier = threading.Barrier(n)
    outcomes: list[Any] = []

    def race(target: AgentStatus) -> None:
        barrier.wait()
        try:
            reg.transition(w.worker_id, target)
            outcomes.append("ok")
        except InvalidTransitionError:
            outcomes.append("invalid")

    targets = [S.COMPLETED, S.FAILED, S.CANCELLED] * (n // 3)
    threads = [threading.Thread(target=race, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1
    assert outcomes.count("invalid") == n - 1
    assert len(w.events) == 3


# -- bounded registry (issue 13, point 6) -----------------------------------------


def _finish(reg: AgentRegistry, worker: AgentWorker, end: AgentStatus = S.COMPLETED) -> None:
    path = (S.INITIALIZING, S.RUNNING, end) if end is S.COMPLETED else (end,)
    _walk_to(reg, worker, *path)


def _held(reg: AgentRegistry) -> list[AgentWorker]:
    return reg.get_by_project(None)


def test_default_finished_window_is_documented_value() -> None:
    from techrevati.runtime.agent_lifecycle import DEFAULT_FINISHED_WINDOW

    assert DEFAULT_FINISHED_WINDOW == 1024
    assert AgentRegistry().finished_window == 1024
    assert AgentRegistry(finished_window=3).finished_window == 3


def test_finished_workers_are_bounded_and_the_newest_are_kept() -> None:
    window = 4
    reg = AgentRegistry(finished_window=window)
    finished: list[str] = []
    for _ in range(200):
        w = reg.create("r", "p")
        _finish(reg, w)
        finished.append(w.worker_id)
        held = {x.worker_id for x in _held(reg)}
        # never more than twice (active + window) plus the one just created
        assert len(held) <= 2 * window + 1
        # the `window` most recently finished are always still there
        assert set(finished[-window:]) <= held
    assert reg.get(finished[0]) is None
    assert reg.list_active() == []


def test_active_workers_are_never_dropped() -> None:
    reg = AgentRegistry(finished_window=2)
    active = [reg.create("live", "p", project_id=1) for _ in range(50)]
    for _ in range(300):
        _finish(reg, reg.create("short", "p", project_id=2), S.CANCELLED)
    assert reg.list_active() == active
    assert all(reg.get(w.worker_id) is w for w in active)
    assert reg.get_by_role_phase("live", "p") is active[0]
    assert reg.get_by_project(1) == active
    assert len(reg.get_by_project(2)) <= 2 * (50 + 2) + 1


def test_window_keeps_the_latest_finished_not_the_latest_created() -> None:
    reg = AgentRegistry(finished_window=2)
    early = [reg.create("r", "p") for _ in range(3)]
    for w in early:
        _finish(reg, w)
    # The earliest-created worker finished last (finish order is updated_at).
    early[0].updated_at = "2100-01-01T00:00:00+00:00"
    early[1].updated_at = "2000-01-01T00:00:00+00:00"
    early[2].updated_at = "2050-01-01T00:00:00+00:00"
    reg.create("r", "p")  # the 4th create sweeps (window 2: first sweep at 3 held)
    assert reg.get(early[0].worker_id) is early[0]
    assert reg.get(early[2].worker_id) is early[2]
    assert reg.get(early[1].worker_id) is None


def test_window_zero_keeps_only_active() -> None:
    reg = AgentRegistry(finished_window=0)
    for _ in range(20):
        _finish(reg, reg.create("r", "p"), S.FAILED)
    last = reg.create("r", "p")
    assert [w.worker_id for w in _held(reg)] == [last.worker_id]


def test_workers_finished_directly_on_the_worker_are_swept_too() -> None:
    # Sessions move their own worker (worker.transition), not through the registry.
    reg = AgentRegistry(finished_window=3)
    for _ in range(100):
        w = reg.create("r", "p")
        for s in (S.INITIALIZING, S.RUNNING, S.COMPLETED):
            w.transition(s)
    assert len(_held(reg)) <= 2 * 3 + 1


def test_windowed_records_are_held_in_the_window_while_unstarted() -> None:
    reg = AgentRegistry(finished_window=3)
    targets = []
    for _ in range(100):
        t = reg.create("editor", "p", windowed=True)
        reg.transition(t.worker_id, S.INITIALIZING, "handoff")
        targets.append(t)
    held = _held(reg)
    assert len(held) <= 2 * 3 + 1
    assert targets[-1] in held and targets[0] not in held
    # still active while held: list_active is unchanged for them
    assert targets[-1] in reg.list_active()
    # a plain worker in the same state is never dropped
    plain = reg.create("editor", "p")
    reg.transition(plain.worker_id, S.INITIALIZING)
    for _ in range(50):
        reg.create("editor", "p", windowed=True)
    assert reg.get(plain.worker_id) is plain


def test_clear_resets_window_bookkeeping() -> None:
    reg = AgentRegistry(finished_window=1)
    w = reg.create("r", "p", windowed=True)
    reg.clear()
    assert reg.get(w.worker_id) is None and _held(reg) == []
    again = reg.create("r", "p")
    assert _held(reg) == [again]


@pytest.mark.parametrize("bad", [-1, 1.5, "8", True, None])
def test_finished_window_rejects_bad_values(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match=re.escape(repr(bad))):
        AgentRegistry(finished_window=bad)  # type: ignore[arg-type]


# -- unique worker ids (issue 13, point 7) -----------------------------------------


def test_colliding_suffix_is_drawn_again() -> None:
    draws = iter([0xABC, 0xABC, 0xABC, 0xDEF, 0xABC, 0x1])
    reg = AgentRegistry(id_source=lambda: next(draws))
    first = reg.create("r", "p")
    second = reg.create("r", "p")  # draws 0xABC twice more, then 0xDEF
    third = reg.create("q", "p")  # other role: 0xABC is free for it
    assert first.worker_id == "r-p-00000abc"
    assert second.worker_id == "r-p-00000def"
    assert third.worker_id == "q-p-00000abc"
    assert reg.get(first.worker_id) is first and reg.get(second.worker_id) is second


def test_a_suffix_that_reads_as_http_429_is_drawn_again() -> None:
    # Our limit errors name the worker id; smolagents retries any error whose text holds
    # "429" as a rate limit, sleeping a minute and more: a capped run hung for minutes.
    draws = iter([0x00429000, 0x1429ABC, 0x2])
    reg = AgentRegistry(id_source=lambda: next(draws))
    assert reg.create("r", "p").worker_id == "r-p-00000002"


def test_seeded_tiny_id_space_gives_unique_ids_while_held() -> None:
    import random

    rng = random.Random(1234)
    # 5 bits of suffix: 32 possible ids, so collisions are certain.
    reg = AgentRegistry(id_source=lambda: rng.getrandbits(5))
    workers = [reg.create("r", "p") for _ in range(32)]
    ids = [w.worker_id for w in workers]
    assert len(set(ids)) == 32
    assert all(re.fullmatch(r"r-p-000000[01][0-9a-f]", i) for i in ids)
    assert all(reg.get(w.worker_id) is w for w in workers)
    assert reg.list_active() == workers  # nothing overwritten


def test_exhausted_id_source_raises_clearly_and_stores_nothing() -> None:
    reg = AgentRegistry(id_source=lambda: 7)
    reg.create("r", "p")
    with pytest.raises(RuntimeError, match="no free worker id for role 'r' phase 'p'"):
        reg.create("r", "p")
    assert len(reg.list_active()) == 1


def test_id_source_must_return_an_int() -> None:
    reg = AgentRegistry(id_source=lambda: "abc")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="'abc'"):
        reg.create("r", "p")
    with pytest.raises(TypeError, match="id_source must be callable"):
        AgentRegistry(id_source=5)  # type: ignore[arg-type]


def test_default_ids_are_uuid4_hex_and_unique_in_bulk() -> None:
    reg = AgentRegistry()
    ids = {reg.create("r", "p").worker_id for _ in range(5000)}
    assert len(ids) == 5000
    assert all(re.fullmatch(r"r-p-[0-9a-f]{8}", i) for i in ids)


def test_reused_orchestrator_registry_stays_bounded() -> None:
    from techrevati.runtime.orchestrator import Orchestrator

    reg = AgentRegistry(finished_window=5)
    orch = Orchestrator(role="writer", phase="draft", registry=reg)
    for _ in range(100):
        with orch.session() as session:
            # the open session's worker is always held and active
            assert reg.list_active() == [session.worker]
    assert reg.list_active() == []
    assert len(_held(reg)) <= 2 * 5 + 1
    assert reg.get(session.worker.worker_id) is session.worker
