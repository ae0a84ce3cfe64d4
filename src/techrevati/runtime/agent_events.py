"""Structured events that an agent session reports to its event sinks.

Example::

    >>> from techrevati.runtime.agent_events import AgentEvent, AgentFailureClass
    >>> ev = AgentEvent.failed("writer", "draft", AgentFailureClass.LLM_ERROR, "boom")
    >>> ev.to_dict()["type"], ev.to_dict()["failure_class"]
    ('failed', 'llm_error')
    >>> AgentEvent.from_json(ev.to_json()) == ev
    True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Self, TypeVar

__all__ = ["AgentEvent", "AgentEventName", "AgentEventStatus", "AgentFailureClass"]


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


# (str, Enum) rather than StrEnum: the contract pins str(member) == "ClassName.MEMBER".
class AgentEventName(str, Enum):  # noqa: UP042
    """Dotted event names; the value is what goes on the wire.

    Example::

        >>> AgentEventName.AGENT_STARTED.value
        'agent.started'
    """

    AGENT_STARTED = "agent.started"
    AGENT_READY = "agent.ready"
    AGENT_BLOCKED = "agent.blocked"
    AGENT_TOOL_CALLED = "agent.tool_called"
    AGENT_TOOL_COMPLETED = "agent.tool_completed"
    AGENT_COMPLETED = "agent.completed"
    AGENT_FAILED = "agent.failed"
    PHASE_STARTED = "phase.started"
    PHASE_COMPLETED = "phase.completed"
    PHASE_GATE_EVALUATED = "phase.gate_evaluated"
    PHASE_GATE_PASSED = "phase.gate_passed"
    PHASE_GATE_FAILED = "phase.gate_failed"
    RECOVERY_ATTEMPTED = "agent.recovery.attempted"
    RECOVERY_SUCCEEDED = "agent.recovery.succeeded"
    RECOVERY_FAILED = "agent.recovery.failed"
    RECOVERY_ESCALATED = "agent.recovery.escalated"
    RECOVERY_PROVIDER_SWITCHED = "agent.recovery.provider_switched"
    HOOK_PRE_TOOL = "hook.pre_tool"
    HOOK_POST_TOOL = "hook.post_tool"


class AgentEventStatus(str, Enum):  # noqa: UP042
    """Coarse status carried by every event.

    Example::

        >>> AgentEventStatus.GREEN == "green"
        True
    """

    RUNNING = "running"
    READY = "ready"
    BLOCKED = "blocked"
    GREEN = "green"
    RED = "red"
    COMPLETED = "completed"
    FAILED = "failed"


class AgentFailureClass(str, Enum):  # noqa: UP042
    """Why an agent failed; attached to ``agent.failed`` events.

    Example::

        >>> AgentFailureClass("llm_timeout") is AgentFailureClass.LLM_TIMEOUT
        True
    """

    LLM_TIMEOUT = "llm_timeout"
    LLM_ERROR = "llm_error"
    TOOL_ERROR = "tool_error"
    CONTEXT_OVERFLOW = "context_overflow"
    RATE_LIMIT = "rate_limit"
    DEPENDENCY_FAILED = "dependency_failed"
    MEMORY_CORRUPTION = "memory_corruption"
    VALIDATION_ERROR = "validation_error"
    PROMPT_REJECTION = "prompt_rejection"
    UNKNOWN = "unknown"


_E = TypeVar("_E", bound=Enum)


def _require_enum(enum_cls: type[_E], raw: object, field_name: str) -> _E:
    # Members of these (str, Enum) classes are also str, so check the enum first.
    if isinstance(raw, enum_cls):
        return raw
    if isinstance(raw, str):
        try:
            return enum_cls(raw)
        except ValueError:
            raise ValueError(
                f"{field_name} field missing or invalid: {raw!r} is not a valid {enum_cls.__name__}"
            ) from None
    raise ValueError(f"{field_name} field missing or invalid: {raw!r}")


def _optional_enum(enum_cls: type[_E], raw: object, field_name: str) -> _E | None:
    # Compatibility rule: a value that is neither a member nor a string counts as absent.
    if isinstance(raw, str):
        return _require_enum(enum_cls, raw, field_name)
    return None


@dataclass(frozen=True)
class AgentEvent:
    """One immutable event; build it with a factory and refine it with ``with_*``.

    Example::

        >>> ev = AgentEvent.started("writer", "draft").with_project(7)
        >>> ev.event.value, ev.role, ev.project_id
        ('agent.started', 'writer', 7)
    """

    event: AgentEventName
    status: AgentEventStatus
    emitted_at: str = field(default_factory=_utc_now_iso)
    role: str | None = None
    phase: str | None = None
    project_id: int | None = None
    failure_class: AgentFailureClass | None = None
    detail: str | None = None
    data: dict[str, Any] | None = None

    # -- copy-builders -------------------------------------------------------

    def with_failure_class(self, failure_class: AgentFailureClass) -> Self:
        """Return a copy with ``failure_class`` replaced."""
        return dataclasses.replace(self, failure_class=failure_class)

    def with_detail(self, detail: str) -> Self:
        """Return a copy with ``detail`` replaced."""
        return dataclasses.replace(self, detail=detail)

    def with_data(self, data: dict[str, Any]) -> Self:
        """Return a copy with ``data`` replaced."""
        return dataclasses.replace(self, data=data)

    def with_project(self, project_id: int) -> Self:
        """Return a copy with ``project_id`` replaced."""
        return dataclasses.replace(self, project_id=project_id)

    # -- factories -----------------------------------------------------------

    @classmethod
    def started(cls, role: str, phase: str) -> Self:
        """An ``agent.started`` / running event."""
        return cls(AgentEventName.AGENT_STARTED, AgentEventStatus.RUNNING, role=role, phase=phase)

    @classmethod
    def completed(cls, role: str, phase: str, detail: str | None = None) -> Self:
        """An ``agent.completed`` / completed event."""
        return cls(
            AgentEventName.AGENT_COMPLETED,
            AgentEventStatus.COMPLETED,
            role=role,
            phase=phase,
            detail=detail,
        )

    @classmethod
    def failed(
        cls,
        role: str,
        phase: str,
        failure_class: AgentFailureClass,
        detail: str | None = None,
    ) -> Self:
        """An ``agent.failed`` / failed event carrying a failure class."""
        return cls(
            AgentEventName.AGENT_FAILED,
            AgentEventStatus.FAILED,
            role=role,
            phase=phase,
            failure_class=failure_class,
            detail=detail,
        )

    @classmethod
    def phase_started(cls, phase: str) -> Self:
        """A ``phase.started`` / running event (no role)."""
        return cls(AgentEventName.PHASE_STARTED, AgentEventStatus.RUNNING, phase=phase)

    @classmethod
    def gate_passed(cls, phase: str, detail: str | None = None) -> Self:
        """A ``phase.gate_passed`` / green event (no role)."""
        return cls(
            AgentEventName.PHASE_GATE_PASSED, AgentEventStatus.GREEN, phase=phase, detail=detail
        )

    @classmethod
    def gate_failed(cls, phase: str, detail: str | None = None) -> Self:
        """A ``phase.gate_failed`` / red event (no role)."""
        return cls(
            AgentEventName.PHASE_GATE_FAILED, AgentEventStatus.RED, phase=phase, detail=detail
        )

    @classmethod
    def recovery_attempted(cls, role: str, phase: str, detail: str | None = None) -> Self:
        """An ``agent.recovery.attempted`` / running event."""
        return cls(
            AgentEventName.RECOVERY_ATTEMPTED,
            AgentEventStatus.RUNNING,
            role=role,
            phase=phase,
            detail=detail,
        )

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict; ``None`` fields are left out.

        ``type`` is the last dotted segment of ``event``, kept for older consumers.

        Example::

            >>> AgentEvent.phase_started("draft").to_dict()["type"]
            'started'
        """
        value = self.event.value
        out: dict[str, Any] = {
            "event": value,
            "type": value.rpartition(".")[2],
            "status": self.status.value,
            "emitted_at": self.emitted_at,
        }
        if self.role is not None:
            out["role"] = self.role
        if self.phase is not None:
            out["phase"] = self.phase
        if self.project_id is not None:
            out["project_id"] = self.project_id
        if self.failure_class is not None:
            out["failure_class"] = self.failure_class.value
        if self.detail is not None:
            out["detail"] = self.detail
        if self.data is not None:
            out["data"] = self.data
        return out

    def to_json(self) -> str:
        """Return ``to_dict()`` as JSON, leaving non-ASCII text unescaped."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Rebuild an event from ``to_dict()`` output; the ``type`` key is ignored.

        Raises ``ValueError`` naming the field when ``event``/``status`` is missing,
        of the wrong type, or an unknown value.

        Example::

            >>> AgentEvent.from_dict({"event": "phase.started", "status": "running"}).phase is None
            True
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"AgentEvent.from_dict expects a mapping, got {type(d).__name__}")
        event = _require_enum(AgentEventName, d.get("event"), "event")
        status = _require_enum(AgentEventStatus, d.get("status"), "status")
        failure_class = _optional_enum(AgentFailureClass, d.get("failure_class"), "failure_class")
        emitted_at = d.get("emitted_at")
        return cls(
            event=event,
            status=status,
            emitted_at=_utc_now_iso() if emitted_at is None else emitted_at,
            role=d.get("role"),
            phase=d.get("phase"),
            project_id=d.get("project_id"),
            failure_class=failure_class,
            detail=d.get("detail"),
            data=d.get("data"),
        )

    @classmethod
    def from_json(cls, s: str | bytes) -> Self:
        """Parse JSON text and apply ``from_dict``."""
        return cls.from_dict(json.loads(s))

    def to_otel_attributes(self) -> dict[str, str | int | float]:
        """Return flat span attributes; ``data`` is never included.

        Example::

            >>> sorted(AgentEvent.phase_started("p").to_otel_attributes())
            ['agent.event', 'agent.event.status', 'agent.event.timestamp', 'agent.phase']
        """
        attrs: dict[str, str | int | float] = {
            "agent.event": self.event.value,
            "agent.event.status": self.status.value,
            "agent.event.timestamp": self.emitted_at,
        }
        if self.role is not None:
            attrs["agent.role"] = self.role
        if self.phase is not None:
            attrs["agent.phase"] = self.phase
        if self.project_id is not None:
            attrs["agent.project_id"] = self.project_id
        if self.failure_class is not None:
            attrs["agent.failure_class"] = self.failure_class.value
        if self.detail is not None:
            attrs["agent.detail"] = self.detail
        return attrs
