"""A session's loop guard on the call path: fingerprint, refuse, report.

The rule itself is in ``limits/loops.py``; this module gives each session its
``LoopWatch`` and reports what the watch detects: a span event
``techrevati.loop.detected`` on the session span, the
``techrevati.loop.detections`` counter (by pattern, tool and agent), and one
log warning per session. Fingerprints never leave the process: the event
names the pattern and the tools, never arguments or results.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from .. import semconv as sc
from ..limits.errors import describe_loop, refused_next
from ..limits.ledger import Ledger
from ..limits.loops import Detection, LoopGuard, LoopWatch, Step
from .labels import bounded_name
from .session import SessionScope, session_event

_log = logging.getLogger("techrevati.runtime.loops")


def watch_loops(scope: SessionScope, guard: LoopGuard | None) -> None:
    """Give ``scope`` a loop watch under ``guard`` (None: no loop detection).

    Example::

        watch_loops(scope, LoopGuard(on_loop="raise"))
    """
    if guard is None:
        scope.loops = None
        return
    # Weak: the watch lives on the session; a strong reference back would keep
    # every finished session alive until the cycle collector ran.
    ref = weakref.ref(scope)

    def detected(detection: Detection) -> None:
        found = ref()
        if found is not None:
            report(found, detection)

    scope.loops = LoopWatch(guard, detected)


def fingerprint(watch: LoopWatch, tool: str, arguments: object) -> int | None:
    """The call's fingerprint, or None when it cannot be taken (never raises).

    An argument whose ``repr`` raises must not break the tool call it describes.
    """
    try:
        return watch.key(tool, arguments)
    except Exception:
        _log.debug("tool %r: arguments could not be fingerprinted", tool, exc_info=True)
        return None


def record(
    watch: LoopWatch, key: int, tool: str, result: object, ledger: Ledger, step: Step | None
) -> None:
    """Book a returned call of ``step`` with the watch (never raises).

    A call of ours that does not extend a loop lifts a refusal that a loop seen
    in another instrumentation's spans left on the session (``limits/loops.py``).
    """
    try:
        watch.record(key, tool, result, step)
        if ledger.pending_refusal is not None and watch.refusal(key, tool) is None:
            ledger.pending_refusal = None
    except Exception:
        _log.debug("tool %r: result could not be fingerprinted", tool, exc_info=True)


def failed(watch: LoopWatch, key: int, tool: str, error: BaseException, step: Step | None) -> None:
    """Book a call of ``step`` that raised ``error`` with the watch (never raises)."""
    try:
        watch.failed(key, step, error, tool)
    except Exception:
        _log.debug("tool %r: its error could not be booked", tool, exc_info=True)


def report(scope: SessionScope, detection: Detection) -> None:
    """A loop was detected in ``scope``: metric, span event, and the session's one warning."""
    instruments = scope.instruments
    if instruments.live:
        instruments.loop_detections.add(
            1,
            {
                sc.LOOP_PATTERN: detection.pattern,
                sc.GEN_AI_TOOL_NAME: bounded_name(detection.tool),
                **scope.agent_attrs,
            },
        )
    attributes: dict[str, Any] = {
        sc.LOOP_PATTERN: detection.pattern,
        sc.GEN_AI_TOOL_NAME: detection.tool,
        sc.LOOP_TOOLS: list(detection.tools),
        sc.LOOP_REPEATS: detection.repeats,
        sc.LOOP_ACTION: detection.action,
    }
    session_event(scope, sc.EVENT_LOOP_DETECTED, attributes)
    if detection.first:
        then = (
            refused_next(detection.pattern, detection.tools, detection.facts)
            + " will raise LoopDetectedError"
            if detection.action == "raise"
            else "warning only (LoopGuard(on_loop='raise') refuses the next identical call)"
        )
        if detection.facts.raised is not None:
            then += (
                "; asking again fails the same way: fix the tool (or what it depends on), "
                "change the arguments, or stop retrying it"
            )
        _log.warning(
            "session %r: tool call loop detected %s; %s. Reported once per session.",
            scope.role,
            describe_loop(
                detection.pattern,
                detection.tools,
                detection.repeats,
                named=True,
                facts=detection.facts,
            ),
            then,
        )
