"""Tests for techrevati.runtime.sinks (contract §12)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from techrevati.runtime.agent_events import AgentEvent
from techrevati.runtime.sinks import (
    DEFAULT_RING_CAPACITY,
    EventSink,
    NoopEventSink,
    NoopUsageSink,
    RingBufferEventSink,
    RingBufferUsageSink,
    UsageSink,
)
from techrevati.runtime.usage_tracking import UsageSnapshot


class AdHocEventSink:
    """Not declared as a subclass; structural typing only."""

    def __init__(self) -> None:
        self.seen: list[AgentEvent] = []

    def emit(self, event: AgentEvent) -> None:
        self.seen.append(event)


class AdHocUsageSink:
    def record(self, model: str, usage: UsageSnapshot, cost_usd: float) -> None:
        pass


def test_default_capacity() -> None:
    assert DEFAULT_RING_CAPACITY == 1000
    assert RingBufferEventSink().capacity == 1000
    assert RingBufferUsageSink().capacity == 1000


def test_protocols_are_runtime_checkable() -> None:
    assert isinstance(NoopEventSink(), EventSink)
    assert isinstance(RingBufferEventSink(), EventSink)
    assert isinstance(AdHocEventSink(), EventSink)
    assert not isinstance(AdHocUsageSink(), EventSink)
    assert isinstance(NoopUsageSink(), UsageSink)
    assert isinstance(RingBufferUsageSink(), UsageSink)
    assert isinstance(AdHocUsageSink(), UsageSink)
    assert not isinstance(AdHocEventSink(), UsageSink)
    assert not isinstance(object(), EventSink)


def test_noop_sinks_are_fieldless_dataclasses_returning_none() -> None:
    assert dataclasses.fields(NoopEventSink) == ()
    assert dataclasses.fields(NoopUsageSink) == ()
    assert NoopEventSink().emit(AgentEvent.started("r", "p")) is None
    assert NoopUsageSink().record("m", UsageSnapshot(1, 2), 0.5) is None
    assert NoopEventSink() == NoopEventSink()


def test_ring_event_sink_capacity_two_keeps_last_two_by_identity() -> None:
    sink = RingBufferEventSink(capacity=2)
    e1 = AgentEvent.started("r", "p")
    e2 = AgentEvent.completed("r", "p")
    e3 = AgentEvent.phase_started("p")
    for e in (e1, e2, e3):
        sink.emit(e)
    events = sink.events
    assert events == [e2, e3]
    assert events[0] is e2 and events[1] is e3


def test_ring_event_sink_events_returns_new_list() -> None:
    sink = RingBufferEventSink()
    e = AgentEvent.started("r", "p")
    sink.emit(e)
    first = sink.events
    first.clear()
    assert sink.events == [e]
    assert sink.events is not sink.events


def test_ring_event_sink_order_below_capacity_and_clear() -> None:
    sink = RingBufferEventSink(capacity=5)
    evs = [AgentEvent.phase_started(str(i)) for i in range(3)]
    for e in evs:
        sink.emit(e)
    assert [e.phase for e in sink.events] == ["0", "1", "2"]
    sink.clear()
    assert sink.events == []
    sink.emit(evs[0])
    assert sink.events == [evs[0]]


def test_ring_event_sink_repr_shows_only_capacity() -> None:
    sink = RingBufferEventSink(capacity=3)
    sink.emit(AgentEvent.started("r", "p"))
    assert repr(sink) == "RingBufferEventSink(capacity=3)"
    assert repr(RingBufferUsageSink(7)) == "RingBufferUsageSink(capacity=7)"


def test_ring_usage_sink_records_tuples() -> None:
    sink = RingBufferUsageSink(capacity=2)
    u1, u2, u3 = UsageSnapshot(1, 1), UsageSnapshot(2, 2), UsageSnapshot(3, 3)
    sink.record("a", u1, 0.1)
    assert sink.records == [("a", UsageSnapshot(1, 1), 0.1)]
    sink.record("b", u2, 0.2)
    sink.record("c", u3, 0.3)
    records = sink.records
    assert records == [("b", UsageSnapshot(2, 2), 0.2), ("c", UsageSnapshot(3, 3), 0.3)]
    assert records[0][1] is u2
    records.clear()
    assert len(sink.records) == 2
    sink.clear()
    assert sink.records == []


def test_sinks_are_independent_instances() -> None:
    a, b = RingBufferEventSink(), RingBufferEventSink()
    a.emit(AgentEvent.started("r", "p"))
    assert b.events == []


@pytest.mark.parametrize("cls", [RingBufferEventSink, RingBufferUsageSink])
@pytest.mark.parametrize("bad", [0, -1])
def test_ring_capacity_below_one_rejected(cls: type[Any], bad: int) -> None:
    with pytest.raises(ValueError, match=f"capacity must be >= 1, got {bad}"):
        cls(capacity=bad)


@pytest.mark.parametrize("cls", [RingBufferEventSink, RingBufferUsageSink])
@pytest.mark.parametrize("bad", [1.5, "10", None, True])
def test_ring_capacity_wrong_type_rejected(cls: type[Any], bad: Any) -> None:
    with pytest.raises(TypeError, match="capacity must be an int"):
        cls(capacity=bad)


def test_ring_event_sink_concurrent_emits_bounded() -> None:
    sink = RingBufferEventSink(capacity=50)
    barrier = threading.Barrier(4)
    ev = AgentEvent.started("r", "p")

    def spam() -> None:
        barrier.wait()
        for _ in range(1000):
            sink.emit(ev)

    threads = [threading.Thread(target=spam) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(sink.events) == 50
    assert all(e is ev for e in sink.events)
