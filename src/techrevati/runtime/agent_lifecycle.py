"""Agent worker state machine and a thread-safe registry of workers.

Example::

    >>> from techrevati.runtime.agent_lifecycle import AgentRegistry, AgentStatus
    >>> reg = AgentRegistry()
    >>> w = reg.create("writer", "draft", project_id=1)
    >>> for s in (AgentStatus.INITIALIZING, AgentStatus.RUNNING, AgentStatus.COMPLETED):
    ...     _ = reg.transition(w.worker_id, s)
    >>> w.is_terminal, len(w.events)
    (True, 3)
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

__all__ = [
    "DEFAULT_FINISHED_WINDOW",
    "AgentRegistry",
    "AgentStatus",
    "AgentWorker",
    "AgentWorkerEvent",
    "InvalidTransitionError",
]

logger = logging.getLogger("techrevati.runtime.lifecycle")
logger.addHandler(logging.NullHandler())


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


# (str, Enum) rather than StrEnum: the contract pins str(member) == "AgentStatus.MEMBER".
class AgentStatus(str, Enum):  # noqa: UP042
    """Lifecycle states of one agent worker.

    Example::

        >>> AgentStatus("waiting_for_input") is AgentStatus.WAITING_FOR_INPUT
        True
    """

    IDLE = "idle"
    INITIALIZING = "initializing"
    WAITING_FOR_INPUT = "waiting_for_input"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_S = AgentStatus
# The authoritative transition table (contract §3.2). Terminal states map to nothing.
_ALLOWED: dict[AgentStatus, frozenset[AgentStatus]] = {
    _S.IDLE: frozenset({_S.INITIALIZING, _S.FAILED, _S.CANCELLED}),
    _S.INITIALIZING: frozenset({_S.WAITING_FOR_INPUT, _S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.WAITING_FOR_INPUT: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.WAITING_FOR_INPUT, _S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
_TERMINAL = frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED})


def _coerce_status(value: object) -> AgentStatus:
    # A plain "running" string compares equal to the member, so without this it
    # would pass the table check and then break on ``.value``; fail loudly instead.
    if isinstance(value, AgentStatus):
        return value
    if isinstance(value, str):
        try:
            return AgentStatus(value)
        except ValueError:
            valid = ", ".join(s.value for s in AgentStatus)
            raise ValueError(f"unknown agent status {value!r}; expected one of: {valid}") from None
    raise TypeError(f"agent status must be an AgentStatus, got {type(value).__name__}")


class InvalidTransitionError(Exception):
    """Raised when a worker is asked to move along an edge the table forbids.

    Example::

        >>> str(InvalidTransitionError(AgentStatus.IDLE, AgentStatus.COMPLETED))
        'Invalid transition: idle → completed'
    """

    def __init__(self, current: AgentStatus, target: AgentStatus) -> None:
        self.current = current
        self.target = target
        super().__init__(f"Invalid transition: {current.value} → {target.value}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.current, self.target), self.__dict__)


@dataclass(frozen=True)
class AgentWorkerEvent:
    """One recorded transition of a worker.

    Example::

        >>> AgentWorkerEvent(1, "running", "running", "", "T").to_dict()
        {'seq': 1, 'kind': 'running', 'status': 'running', 'timestamp': 'T'}
    """

    seq: int
    kind: str
    status: str
    detail: str | None
    timestamp: str

    def to_dict(self) -> dict[str, Any]:
        """Return a dict; ``detail`` is included only when truthy."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind,
            "status": self.status,
            "timestamp": self.timestamp,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class AgentWorker:
    """A single agent's state plus its transition history. Not locked on its own.

    Example::

        >>> w = AgentWorker("w1", "writer", "draft")
        >>> w.transition(AgentStatus.INITIALIZING).seq
        1
        >>> w.transition(AgentStatus.FAILED, "boom").status, w.last_error["message"]
        ('failed', 'boom')
    """

    worker_id: str
    role: str
    phase: str
    project_id: int | None = None
    status: AgentStatus = AgentStatus.IDLE
    events: list[AgentWorkerEvent] = field(default_factory=list)
    retry_count: int = 0
    last_error: dict[str, Any] | None = None
    provider_used: str | None = None
    created_at: str = field(default_factory=_utc_now_iso)
    updated_at: str = field(default_factory=_utc_now_iso)

    def __post_init__(self) -> None:
        self.status = _coerce_status(self.status)

    @property
    def is_terminal(self) -> bool:
        """True once the worker is COMPLETED, FAILED or CANCELLED."""
        return self.status in _TERMINAL

    def transition(self, new_status: AgentStatus, detail: str | None = None) -> AgentWorkerEvent:
        """Move to ``new_status`` and record it; raise ``InvalidTransitionError`` if forbidden.

        Nothing is mutated when the transition is rejected.
        """
        target = _coerce_status(new_status)
        if target not in _ALLOWED[self.status]:
            raise InvalidTransitionError(self.status, target)
        now = _utc_now_iso()
        event = AgentWorkerEvent(
            seq=len(self.events) + 1,
            kind=target.value,
            status=target.value,
            detail=detail,
            timestamp=now,
        )
        self.events.append(event)
        self.status = target
        self.updated_at = now
        if target is AgentStatus.FAILED and detail:
            self.last_error = {"message": detail, "timestamp": now}
        return event

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly snapshot, events included."""
        return {
            "worker_id": self.worker_id,
            "role": self.role,
            "phase": self.phase,
            "project_id": self.project_id,
            "status": self.status.value,
            "retry_count": self.retry_count,
            "last_error": self.last_error,
            "provider_used": self.provider_used,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "events": [e.to_dict() for e in self.events],
        }


#: How many finished workers an ``AgentRegistry`` keeps by default (see its docstring).
DEFAULT_FINISHED_WINDOW = 1024

# Attempts at a free id before giving up: with 32 random bits and a registry of
# n workers, k consecutive collisions happen with probability (n / 2**32) ** k,
# so only a broken (or deliberately tiny) id source ever gets near this.
_ID_ATTEMPTS = 64


def _uuid4_suffix() -> int:
    return uuid.uuid4().int & 0xFFFF_FFFF


class AgentRegistry:
    """Thread-safe map of workers; one lock serialises every access.

    It holds every active (non-terminal) worker and a bounded window of the
    most recently finished ones, ``finished_window`` (default
    :data:`DEFAULT_FINISHED_WINDOW`, 1024), so a process that opens sessions
    for ever stays flat. Workers finish through ``transition`` on the registry
    or on the worker itself, so the registry notices terminal ones lazily: a
    sweep runs when the map has doubled since the last one (amortised O(1) per
    ``create``) and keeps the ``finished_window`` terminal workers with the
    latest ``updated_at``. Between sweeps it may hold up to about twice
    ``active + finished_window`` records; ``get``/``get_by_project`` return
    what it still holds. ``create(..., windowed=True)`` makes a record that
    counts towards the window even while not terminal (a handoff target that
    nobody may ever start).

    Worker ids are ``role-phase-<8 hex>`` and unique among the workers held: a
    suffix already in use is drawn again. ``id_source`` (a callable returning
    an int; its low 32 bits become the hex) replaces the uuid4-based default,
    e.g. to force collisions in a test.

    Example::

        >>> reg = AgentRegistry()
        >>> w = reg.create("critic", "review")
        >>> reg.get(w.worker_id) is w, w.worker_id.startswith("critic-review-")
        (True, True)
        >>> small = AgentRegistry(finished_window=2)
        >>> ids = []
        >>> for _ in range(10):  # ten short-lived workers, one after the other
        ...     ids.append(small.create("r", "p").worker_id)
        ...     _ = small.transition(ids[-1], AgentStatus.CANCELLED)
        >>> small.get(ids[0]) is None, small.get(ids[-1]) is not None
        (True, True)
    """

    def __init__(
        self,
        *,
        finished_window: int = DEFAULT_FINISHED_WINDOW,
        id_source: Callable[[], int] | None = None,
    ) -> None:
        if isinstance(finished_window, bool) or not isinstance(finished_window, int):
            raise TypeError(f"finished_window must be an int, got {finished_window!r}")
        if finished_window < 0:
            raise ValueError(f"finished_window must be >= 0, got {finished_window!r}")
        if id_source is not None and not callable(id_source):
            raise TypeError(f"id_source must be callable, got {id_source!r}")
        self._lock = threading.Lock()
        self._workers: dict[str, AgentWorker] = {}
        # Ids of records that count towards the finished window while still active.
        self._windowed: set[str] = set()
        self._finished_window = finished_window
        self._id_source: Callable[[], int] = id_source or _uuid4_suffix
        self._sweep_at = self._next_sweep(0)

    @property
    def finished_window(self) -> int:
        """How many finished workers the registry keeps after a sweep."""
        return self._finished_window

    def _next_sweep(self, held: int) -> int:
        # Doubling keeps sweeps amortised O(1) per create; the window term keeps
        # a registry of a few workers from sweeping on every create.
        return max(2 * held, held + self._finished_window) + 1

    def _new_id_locked(self, role: str, phase: str) -> str:
        for _ in range(_ID_ATTEMPTS):
            suffix = self._id_source()
            if isinstance(suffix, bool) or not isinstance(suffix, int):
                raise TypeError(f"id_source must return an int, got {suffix!r}")
            hex_suffix = f"{suffix & 0xFFFF_FFFF:08x}"
            worker_id = f"{role}-{phase}-{hex_suffix}"
            # Limit errors name the worker id, and some frameworks retry any error whose
            # text holds "429" as a rate limit (smolagents: sleeping 60 s, then minutes):
            # a suffix that reads as one is drawn again.
            if "429" not in hex_suffix and worker_id not in self._workers:
                return worker_id
        raise RuntimeError(
            f"no free worker id for role {role!r} phase {phase!r} after {_ID_ATTEMPTS} draws; "
            "the id source repeats itself"
        )

    def _sweep_locked(self) -> None:
        """Drop all but the newest ``finished_window`` finished (or windowed) records."""
        workers = self._workers
        windowed = self._windowed
        done = [w for w in workers.values() if w.is_terminal or w.worker_id in windowed]
        excess = len(done) - self._finished_window
        if excess > 0:
            # Oldest first by finish time (``updated_at`` is UTC ISO text, which
            # sorts chronologically); sorted() is stable, so ties drop the
            # earlier-created worker first.
            for worker in sorted(done, key=lambda w: w.updated_at)[:excess]:
                del workers[worker.worker_id]
                windowed.discard(worker.worker_id)
        if windowed:
            # A windowed record that finished is an ordinary finished one now.
            windowed.intersection_update(workers)
        self._sweep_at = self._next_sweep(len(workers))

    def create(
        self,
        role: str,
        phase: str,
        project_id: int | None = None,
        *,
        windowed: bool = False,
    ) -> AgentWorker:
        """Create, store and return a new IDLE worker with id ``role-phase-<8 hex>``.

        ``windowed=True`` stores a record that may be dropped with the finished
        window even if nobody ever finishes it (e.g. a handoff target).
        """
        with self._lock:
            if len(self._workers) >= self._sweep_at:
                self._sweep_locked()
            worker = AgentWorker(
                worker_id=self._new_id_locked(role, phase),
                role=role,
                phase=phase,
                project_id=project_id,
            )
            self._workers[worker.worker_id] = worker
            if windowed:
                self._windowed.add(worker.worker_id)
        return worker

    def get(self, worker_id: str) -> AgentWorker | None:
        """Return the worker with that id, or ``None`` (also once it left the window)."""
        with self._lock:
            return self._workers.get(worker_id)

    def transition(
        self, worker_id: str, status: AgentStatus, detail: str | None = None
    ) -> AgentWorker:
        """Transition a stored worker under the lock and return the worker.

        Raises ``KeyError`` for an unknown id; ``InvalidTransitionError`` propagates.
        """
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None:
                raise KeyError(f"Worker not found: {worker_id}")
            worker.transition(status, detail)
            return worker

    def list_active(self) -> list[AgentWorker]:
        """Return all non-terminal workers, in creation order."""
        with self._lock:
            return [w for w in self._workers.values() if not w.is_terminal]

    def get_by_role_phase(self, role: str, phase: str) -> AgentWorker | None:
        """Return the first non-terminal worker with this role and phase, or ``None``."""
        with self._lock:
            for w in self._workers.values():
                if w.role == role and w.phase == phase and not w.is_terminal:
                    return w
        return None

    def get_by_project(self, project_id: int | None) -> list[AgentWorker]:
        """Return every held worker (finished ones in the window too) with this project id."""
        with self._lock:
            return [w for w in self._workers.values() if w.project_id == project_id]

    def clear(self) -> None:
        """Forget every worker."""
        with self._lock:
            self._workers.clear()
            self._windowed.clear()
            self._sweep_at = self._next_sweep(0)
