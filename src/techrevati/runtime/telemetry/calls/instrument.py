"""The instrumentation core's front: what the Orchestrator and the decorators call.

One call path: sessions (``session``), model calls (``turn``), tool calls
(``tool``), all placed by ``membership`` and counted by ``ledger``. The
Orchestrator's sessions and the decorators are thin adapters over these; this
module only gathers the names they use.
"""

from __future__ import annotations

from ..limits.membership import current_session
from .breakers import watch_breaker
from .loops import watch_loops
from .session import (
    Activation,
    SessionScope,
    activate,
    close_session,
    deactivate,
    hold_in_generator,
    note_recovery,
    open_session,
    session_event,
)
from .threads import task_scoped
from .tool import DOOR_TOOL, NOT_WATCHED, ToolCall, tool_session
from .turn import TurnCall, arguments_refused, check_usage
from .wrapup import check as wrapping_up
from .wrapup import watch_wrap_up


def close_all_open_sessions(reason: str = "terminated") -> int:
    """End every session still open in this process (SIGTERM handling); returns how many.

    Their spans end with outcome ``cancelled`` and the given reason as the
    error type, so an exporter flushed right after has them.
    """
    from . import session as _session

    return _session.close_all(reason)


__all__ = [
    "DOOR_TOOL",
    "NOT_WATCHED",
    "Activation",
    "SessionScope",
    "ToolCall",
    "TurnCall",
    "activate",
    "arguments_refused",
    "check_usage",
    "close_all_open_sessions",
    "close_session",
    "current_session",
    "deactivate",
    "hold_in_generator",
    "note_recovery",
    "open_session",
    "session_event",
    "task_scoped",
    "tool_session",
    "watch_breaker",
    "watch_loops",
    "watch_wrap_up",
    "wrapping_up",
]
