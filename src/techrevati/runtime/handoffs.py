"""Records of one agent delegating work to another.

A :class:`Handoff` only records the delegation; nothing here runs the target agent.
Sessions create them through ``handoff_to``.

Example::

    >>> from techrevati.runtime.handoffs import Handoff
    >>> h = Handoff("researcher", "writer", "draft", "facts gathered", {"doc": "notes.md"})
    >>> h.to_dict()["target_role"], h.to_dict()["context"]
    ('writer', {'doc': 'notes.md'})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Handoff"]


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Handoff:
    """An immutable delegation from ``source_role`` to ``target_role`` within a phase.

    Example::

        >>> Handoff("a", "b", "p", "why", project_id=3).project_id
        3
    """

    source_role: str
    target_role: str
    phase: str
    reason: str
    context: dict[str, Any] = field(default_factory=dict)
    project_id: int | None = None
    target_worker_id: str = ""
    created_at: str = field(default_factory=_utc_now_iso)

    def to_dict(self) -> dict[str, Any]:
        """Return all eight fields; ``context`` is a shallow copy the caller may mutate."""
        return {
            "source_role": self.source_role,
            "target_role": self.target_role,
            "phase": self.phase,
            "reason": self.reason,
            "context": dict(self.context),
            "project_id": self.project_id,
            "target_worker_id": self.target_worker_id,
            "created_at": self.created_at,
        }
