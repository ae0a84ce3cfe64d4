"""Where sessions send their events and usage records.

Any object with a matching ``emit``/``record`` method is a sink; the protocols are
synchronous. The Noop sinks are the defaults; the ring-buffer sinks keep the most recent
entries in memory, which is handy for tests and debugging.

Example::

    >>> from techrevati.runtime.agent_events import AgentEvent
    >>> from techrevati.runtime.sinks import RingBufferEventSink
    >>> sink = RingBufferEventSink(capacity=2)
    >>> for phase in ("a", "b", "c"):
    ...     sink.emit(AgentEvent.phase_started(phase))
    >>> [e.phase for e in sink.events]
    ['b', 'c']
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from techrevati.runtime.agent_events import AgentEvent
    from techrevati.runtime.usage_tracking import UsageSnapshot

__all__ = [
    "DEFAULT_RING_CAPACITY",
    "EventSink",
    "NoopEventSink",
    "NoopUsageSink",
    "RingBufferEventSink",
    "RingBufferUsageSink",
    "UsageSink",
]

DEFAULT_RING_CAPACITY = 1000
"""How many entries a ring-buffer sink keeps when no capacity is given."""


@runtime_checkable
class EventSink(Protocol):
    """Receives every :class:`~techrevati.runtime.agent_events.AgentEvent` a session emits.

    Example::

        >>> class PrintSink:
        ...     def emit(self, event) -> None:
        ...         print(event.event.value)
        >>> isinstance(PrintSink(), EventSink)
        True
    """

    def emit(self, event: AgentEvent) -> None:
        """Handle one event. Exceptions are logged and suppressed by sessions."""
        ...


@runtime_checkable
class UsageSink(Protocol):
    """Receives one record per priced model turn.

    Example::

        >>> isinstance(NoopUsageSink(), UsageSink)
        True
    """

    def record(self, model: str, usage: UsageSnapshot, cost_usd: float) -> None:
        """Handle one turn's usage and its (unrounded) USD cost."""
        ...


@dataclass
class NoopEventSink:
    """Discards events; the Orchestrator's default.

    Example::

        >>> from techrevati.runtime.agent_events import AgentEvent
        >>> NoopEventSink().emit(AgentEvent.phase_started("p")) is None
        True
    """

    def emit(self, event: AgentEvent) -> None:
        """Do nothing."""


@dataclass
class NoopUsageSink:
    """Discards usage records.

    Example::

        >>> from techrevati.runtime.usage_tracking import UsageSnapshot
        >>> NoopUsageSink().record("gpt-x", UsageSnapshot(10, 5), 0.001) is None
        True
    """

    def record(self, model: str, usage: UsageSnapshot, cost_usd: float) -> None:
        """Do nothing."""


def _check_capacity(capacity: object) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity!r}")
    return capacity


@dataclass
class RingBufferEventSink:
    """Keeps the last ``capacity`` events, oldest first; older ones drop silently.

    Relies on ``deque.append`` being atomic rather than on an explicit lock.

    Example::

        >>> sink = RingBufferEventSink()
        >>> sink.capacity
        1000
    """

    capacity: int = DEFAULT_RING_CAPACITY
    _buffer: deque[AgentEvent] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._buffer = deque(maxlen=_check_capacity(self.capacity))

    def emit(self, event: AgentEvent) -> None:
        """Append ``event``, evicting the oldest one when full."""
        self._buffer.append(event)

    @property
    def events(self) -> list[AgentEvent]:
        """A new list of the buffered events (the same objects that were emitted)."""
        return list(self._buffer)

    def clear(self) -> None:
        """Drop every buffered event."""
        self._buffer.clear()


@dataclass
class RingBufferUsageSink:
    """Keeps the last ``capacity`` ``(model, usage, cost_usd)`` tuples, oldest first.

    Example::

        >>> from techrevati.runtime.usage_tracking import UsageSnapshot
        >>> sink = RingBufferUsageSink(capacity=1)
        >>> sink.record("a", UsageSnapshot(1, 1), 1.0)
        >>> sink.record("b", UsageSnapshot(2, 2), 2.0)
        >>> [(model, cost) for model, _, cost in sink.records]
        [('b', 2.0)]
    """

    capacity: int = DEFAULT_RING_CAPACITY
    _buffer: deque[tuple[str, UsageSnapshot, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._buffer = deque(maxlen=_check_capacity(self.capacity))

    def record(self, model: str, usage: UsageSnapshot, cost_usd: float) -> None:
        """Append one record, evicting the oldest one when full."""
        self._buffer.append((model, usage, cost_usd))

    @property
    def records(self) -> list[tuple[str, UsageSnapshot, float]]:
        """A new list of the buffered ``(model, usage, cost_usd)`` tuples."""
        return list(self._buffer)

    def clear(self) -> None:
        """Drop every buffered record."""
        self._buffer.clear()
