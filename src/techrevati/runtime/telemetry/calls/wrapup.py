"""Wrap-up: tell an agent it is near its limits, once, so it can finish instead of dying.

With ``wrap_up_at=0.8`` a session watches its ledger chain; after the model
call that leaves 20% or less of its tightest stopping limit (a cap or an
enforced budget, ``limits/wrapup.py``), ``wrapping_up`` turns True, a span event
``techrevati.session.wrap_up`` is added and ``on_wrap_up(session)`` is called,
each exactly once. The check runs when a call is admitted and when a cost is
booked (every door books through the ledger); reading ``wrapping_up`` checks too,
so spending by sibling sessions under a common parent is seen on the next read.
Under a shared session, the checks at admission and booking use the tree's
totals this process last saw (no round trip of their own); reading
``wrapping_up`` reads them from the session store, so what other processes
spent is seen on the next read too.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .. import semconv as sc
from ..limits.ledger import Ledger
from ..limits.wrapup import remaining
from .session import SessionScope, session_event

_log = logging.getLogger("techrevati.runtime.orchestrator")
# Firing is rare (once per session): one lock for all sessions is enough.
_fire = threading.Lock()
#: Slack for float shares (8 of 10 calls is exactly 80% used).
_EPSILON = 1e-9


def watch_wrap_up(
    scope: SessionScope, at: float | None, callback: Callable[[Any], None] | None = None
) -> None:
    """Check ``scope`` for wrap-up at every admission and booking (None: never).

    Example::

        watch_wrap_up(scope, 0.8, lambda session: print("finish now"))
    """
    scope.wrap_up_at = at
    scope.on_wrap_up = callback
    if at is None:
        return
    ref = weakref.ref(scope)

    def used(level: Ledger) -> None:
        found = ref()
        if found is not None and not found.wrapped and not found.closed:
            check(found)

    scope.ledger.watch_use(used)


def check(scope: SessionScope, fresh: bool = False) -> bool:
    """Whether ``scope`` is wrapping up; fires the event and callback the first time.

    ``fresh``: a shared session's totals are read from the store (see the module
    docstring), not taken as this process last saw them.
    """
    if scope.wrapped:
        return True
    at = scope.wrap_up_at
    if at is None:
        return False
    left = remaining(scope.ledger, fresh)
    if left.fraction is None or left.fraction > 1.0 - at + _EPSILON:
        return False
    with _fire:
        if scope.wrapped:
            return True
        scope.wrapped = True
    session_event(
        scope,
        sc.EVENT_WRAP_UP,
        {
            sc.WRAP_UP_AT: at,
            sc.WRAP_UP_LIMIT: left.limit or "",
            sc.WRAP_UP_FRACTION_LEFT: left.fraction,
        },
    )
    callback = scope.on_wrap_up
    if callback is not None:
        try:
            callback(scope.owner if scope.owner is not None else scope)
        except Exception:
            # The user's callback runs inside a model call's admission: a bug in
            # it must not fail that call.
            _log.exception("on_wrap_up raised; suppressing")
    return True
