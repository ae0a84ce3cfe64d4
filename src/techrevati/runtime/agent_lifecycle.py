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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

__all__ = [
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


class AgentRegistry:
    """Thread-safe map of workers; one lock serialises every access.

    Example::

        >>> reg = AgentRegistry()
        >>> w = reg.create("critic", "review")
        >>> reg.get(w.worker_id) is w, w.worker_id.startswith("critic-review-")
        (True, True)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, AgentWorker] = {}

    def create(self, role: str, phase: str, project_id: int | None = None) -> AgentWorker:
        """Create, store and return a new IDLE worker with id ``role-phase-<8 hex>``."""
        worker = AgentWorker(
            worker_id=f"{role}-{phase}-{uuid.uuid4().hex[:8]}",
            role=role,
            phase=phase,
            project_id=project_id,
        )
        with self._lock:
            self._workers[worker.worker_id] = worker
        return worker

    def get(self, worker_id: str) -> AgentWorker | None:
        """Return the worker with that id, or ``None``."""
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

    def get_by_project(self, project_id: int) -> list[AgentWorker]:
        """Return every worker (terminal ones too) with this project id."""
        with self._lock:
            return [w for w in self._workers.values() if w.project_id == project_id]

    def clear(self) -> None:
        """Forget every worker."""
        with self._lock:
            self._workers.clear()
